/** Pieces shared by the transformer models: masks, multi-head attention, positions. */
import * as G from "../graph/api.js";
import type { Graph } from "../graph/graph.js";
import type { Value } from "../graph/types.js";
import type { DType } from "../tensor.js";
import type { PrefixHook } from "./context.js";

/** The most negative finite value of the dtype, which transformers uses for masked scores. */
export function maskValue(dtype: string): number {
  if (dtype === "float16") return -65504;
  return dtype === "float64" ? -Number.MAX_VALUE : -3.4028234663852886e38;
}

/** Positions 0…seq−1 as int64 [seq], seq read from dim 1 of `ids`. */
export function positions(ids: Value): Value {
  const g = ids.graph;
  const seq = G.gather(G.shapeOf(ids), g.constant({ dtype: "int64", shape: [], data: BigInt64Array.of(1n) }));
  return G.range(g.constant({ dtype: "int64", shape: [], data: BigInt64Array.of(0n) }), seq, g.constant({ dtype: "int64", shape: [], data: BigInt64Array.of(1n) }));
}

/**
 * Which keys each query may attend to, as bool [batch, 1, q, k] (or [batch, 1, 1, k] when not
 * causal): key j is visible when its attention_mask is 1 and, for causal models, j ≤ i; with a
 * sliding window w also i − j < w (transformers' `kv_idx > q_idx - sliding_window`: the query and
 * the w − 1 keys before it).
 */
export function attentionAllowed(mask: Value, causal: boolean, slidingWindow: number | null = null): Value {
  const keys = G.unsqueeze(G.cast(mask, "bool"), [1, 2]);
  if (!causal) return keys;
  const pos = positions(mask);
  const qi = G.unsqueeze(pos, [1]);
  const kj = G.unsqueeze(pos, [0]);
  const later = G.greater(kj, qi); // [q, k]: k > q
  const visible = G.and(keys, G.not(later));
  if (slidingWindow === null) return visible;
  const tooOld = G.greater(G.sub(qi, kj), slidingWindow - 1); // [q, k]: q − k ≥ w
  return G.and(visible, G.not(tooOld));
}

/**
 * Prefix tuning: layer `layer`'s prefix keys and values (`ctx.prefix`) in front of `k`, `v`
 * [batch, kvHeads, seq, headDim], and `allowed` with the prefix keys visible to every query; as
 * given when there is no prefix.
 */
export function prefixed(prefix: PrefixHook | null, layer: number, k: Value, v: Value, allowed: Value): { k: Value; v: Value; allowed: Value } {
  if (!prefix) return { k, v, allowed };
  const g = k.graph;
  const kv = prefix.kv(layer);
  const rows = (x: Value, like: Value) => G.expand(G.unsqueeze(x, [0]), G.concat([G.gather(G.shapeOf(like), g.ints([0])), g.ints(x.shape.map(Number))], 0));
  const visible = G.expand(g.scalar(1, "bool"), G.concat([G.gather(G.shapeOf(allowed), g.ints([0, 1, 2])), g.ints([prefix.tokens])], 0));
  return {
    k: G.concat([rows(G.cast(kv.key, k.dtype), k), k], 2),
    v: G.concat([rows(G.cast(kv.value, v.dtype), v), v], 2),
    allowed: G.concat([visible, allowed], 3),
  };
}

/** Positions of the sequence's tokens: after a prefix of `prefix` tokens (prefix tuning). */
export function positionsAfter(mask: Value, prefix: PrefixHook | null): Value {
  const p = positions(mask);
  return prefix ? G.add(p, mask.graph.scalar(prefix.tokens, "int64")) : p;
}

/** Split the last dim into heads: [B, S, H·D] → [B, H, S, D]. */
export function splitHeads(x: Value, heads: number, headDim: number): Value {
  return G.transpose(G.reshape(x, [0, 0, heads, headDim]), [0, 2, 1, 3]);
}

/** Merge heads: [B, H, S, D] → [B, S, H·D]. */
export function mergeHeads(x: Value): Value {
  return G.reshape(G.transpose(x, [0, 2, 1, 3]), [0, 0, -1]);
}

const maskBiases = new WeakMap<Value, Value>();

/**
 * `allowed` (bool) as an additive bias: 0 where attention is allowed, the dtype's most negative
 * value elsewhere; built once per mask and shared by every layer. Adding it gives the same
 * softmax as selecting with `Where` (a finite score plus that value rounds to the value), and its
 * backward is the identity instead of another `Where` over every score.
 */
export function attentionBias(allowed: Value, dtype: DType): Value {
  let b = maskBiases.get(allowed);
  if (!b || b.dtype !== dtype) {
    const g = allowed.graph;
    b = G.where(allowed, g.scalar(0, dtype), g.scalar(maskValue(dtype), dtype));
    maskBiases.set(allowed, b);
  }
  return b;
}

/**
 * softmax(q·kᵀ·scale, masked)·v for q [B, H, S, D] and k, v [B, Hkv, S, D]. Grouped-query
 * attention (Hkv < H) is computed by viewing q as [B, Hkv, H/Hkv, S, D], so k and v broadcast
 * instead of being repeated.
 *
 * float16 (mixed precision): the products run in float16, but the scores are cast to float32
 * before the scale, the mask and the softmax (as PyTorch autocast and transformers' eager
 * attention do), and the probabilities are cast back to float16 for the product with v. The mask
 * bias is then float32's most negative value, so a masked score cannot overflow to −∞ and a fully
 * masked row (a padding query) gives a uniform row, not NaN.
 */
export function attention(
  q: Value,
  k: Value,
  v: Value,
  allowed: Value,
  scale: number,
  opts: { kvHeads?: number; heads?: number; dropout?: (p: Value) => Value } = {},
): Value {
  const heads = opts.heads ?? (q.shape[1] as number);
  const kvHeads = opts.kvHeads ?? heads;
  let qq = q;
  let kk = k;
  let vv = v;
  const mixed = q.dtype === "float16";
  let mask = attentionBias(allowed, mixed ? "float32" : q.dtype);
  const grouped = kvHeads !== heads;
  if (grouped) {
    const rep = heads / kvHeads;
    qq = G.reshape(q, [0, kvHeads, rep, -1, q.shape[3] as number]);
    kk = G.unsqueeze(k, [2]);
    vv = G.unsqueeze(v, [2]);
    mask = G.unsqueeze(mask, [1]);
  }
  const kt = G.transpose(kk, grouped ? [0, 1, 2, 4, 3] : [0, 1, 3, 2]);
  let scores = G.matmul(qq, kt);
  if (mixed) scores = G.cast(scores, "float32");
  if (scale !== 1) scores = G.mul(scores, scale);
  scores = G.add(scores, mask);
  let probs = G.softmax(scores, -1);
  if (mixed) probs = G.cast(probs, q.dtype);
  if (opts.dropout) probs = opts.dropout(probs);
  const out = G.matmul(probs, vv);
  return grouped ? G.reshape(out, [0, heads, -1, q.shape[3] as number]) : out;
}

/**
 * Incremental decoding (a KV cache): each layer attends from the new tokens to the keys and
 * values of earlier tokens, which the caller keeps between runs, and to the new ones.
 *
 * Graph inputs: `past_length` [batch] (cached tokens per row), `new_length` [batch] (real new
 * tokens per row; the rest of the `seq` columns are right padding), and per layer `past_key.<i>` /
 * `past_value.<i>` [batch, kvHeads, past, headDim], of which the first `past_length[b]` positions
 * of row b are valid (rows at different lengths share one batch). Graph outputs `key.<i>` /
 * `value.<i>` [batch, kvHeads, seq, headDim]: the new tokens' keys (after RoPE) and values, for the
 * caller to append to its cache. Scores against the cache and against the new tokens are
 * computed separately and joined before one softmax, so the cache is read in place, never copied.
 */
export class KvCache {
  readonly pastLength: Value;
  readonly newLength: Value;
  /** bool [batch, 1, 1, past]: valid cache positions. */
  readonly pastAllowed: Value;
  /** 0…past−1 as int64 [past]. */
  private readonly pastPositions: Value;
  /** bool [batch, 1, seq, seq]: new key j is visible to new query i when j ≤ i and j is a real token. */
  readonly newAllowed: Value;
  /** bool [batch, seq]: the real (not padding) new tokens. */
  readonly realTokens: Value;

  constructor(
    readonly g: Graph,
    readonly kvHeads: number,
    readonly headDim: number,
    readonly dtype: DType,
    inputIds: Value,
  ) {
    this.pastLength = g.input("past_length", "int64", ["batch"]);
    this.newLength = g.input("new_length", "int64", ["batch"]);
    const past0 = g.input("past_key.0", dtype, ["batch", kvHeads, "past", headDim]);
    this.pastInputs.set("past_key.0", past0);
    const pastPos = positionsAlong(past0, 2);
    this.pastPositions = pastPos;
    this.pastAllowed = G.unsqueeze(G.less(G.unsqueeze(pastPos, [0]), G.unsqueeze(this.pastLength, [1])), [1, 2]);
    const pos = positions(inputIds);
    this.realTokens = G.less(G.unsqueeze(pos, [0]), G.unsqueeze(this.newLength, [1])); // [batch, seq]
    const later = G.greater(G.unsqueeze(pos, [0]), G.unsqueeze(pos, [1])); // [q, k]: k > q
    this.newAllowed = G.and(G.unsqueeze(this.realTokens, [1, 2]), G.not(later));
  }

  private readonly pastInputs = new Map<string, Value>();

  private past(name: string): Value {
    let v = this.pastInputs.get(name);
    if (!v) {
      v = this.g.input(name, this.dtype, ["batch", this.kvHeads, "past", this.headDim]);
      this.pastInputs.set(name, v);
    }
    return v;
  }

  private readonly windowMasks = new Map<number, { past: Value; fresh: Value }>();

  /**
   * The masks of a sliding window w: a query at position p sees keys at positions p − w + 1 … p
   * (transformers' `kv_idx > q_idx - sliding_window`); positions are per row (`past_length` + i).
   */
  private windowed(w: number): { past: Value; fresh: Value } {
    let m = this.windowMasks.get(w);
    if (!m) {
      const i = positions(this.realTokens); // [seq]
      const qpos = G.add(G.unsqueeze(this.pastLength, [1]), G.unsqueeze(i, [0])); // [batch, seq]
      const pastPos = this.pastPositions; // [past]
      // cache key j is too old for query q when qpos − j ≥ w
      const tooOld = G.greater(G.sub(G.unsqueeze(qpos, [2]), G.unsqueeze(pastPos, [0, 1])), w - 1); // [batch, seq, past]
      const past = G.and(this.pastAllowed, G.not(G.unsqueeze(tooOld, [1])));
      const freshOld = G.greater(G.sub(G.unsqueeze(i, [1]), G.unsqueeze(i, [0])), w - 1); // [q, k]
      m = { past, fresh: G.and(this.newAllowed, G.not(freshOld)) };
      this.windowMasks.set(w, m);
    }
    return m;
  }

  private readonly fusedBiases = new Map<Value, Value>();

  /** The additive mask of `MultiHeadAttention` over [cache, new] keys: [batch, 1, seq, past + seq], one per mask pair. */
  private fusedBias(masks: { past: Value; fresh: Value }): Value {
    let b = this.fusedBiases.get(masks.past);
    if (!b) {
      const g = this.g;
      const fresh = attentionBias(masks.fresh, "float32"); // [batch, 1, seq, seq]
      const past0 = this.past("past_key.0");
      const shape = G.concat([G.gather(G.shapeOf(fresh), g.ints([0, 1, 2])), G.gather(G.shapeOf(past0), g.ints([2]))], 0);
      b = G.concat([G.expand(attentionBias(masks.past, "float32"), shape), fresh], -1);
      this.fusedBiases.set(masks.past, b);
    }
    return b;
  }

  /**
   * `attend` through onnxruntime's `MultiHeadAttention` contrib kernel (`ContextOptions.contribOps`):
   * q, k, v [batch, seq, heads·headDim] with the heads not split, output [batch, seq, heads·headDim]
   * (no merge needed). The new keys and values are still output per layer as [batch, kvHeads, seq,
   * headDim] for the cache. Needs as many key/value heads as query heads.
   */
  attendFused(layer: number, q: Value, k: Value, v: Value, scale: number, opts: { slidingWindow?: number | null } = {}): Value {
    const hd = this.headDim;
    this.g.output(splitHeads(k, this.kvHeads, hd), `key.${layer}`);
    this.g.output(splitHeads(v, this.kvHeads, hd), `value.${layer}`);
    const masks = opts.slidingWindow ? this.windowed(opts.slidingWindow) : { past: this.pastAllowed, fresh: this.newAllowed };
    const past = { key: this.past(`past_key.${layer}`), value: this.past(`past_value.${layer}`) };
    return G.multiHeadAttention(q, k, v, { heads: this.kvHeads, scale, bias: this.fusedBias(masks), past });
  }

  /** Attention of layer `layer` over the cache and the new keys `k`, values `v` [batch, kvHeads, seq, headDim]. */
  attend(layer: number, q: Value, k: Value, v: Value, scale: number, opts: { heads?: number; slidingWindow?: number | null } = {}): Value {
    this.g.output(k, `key.${layer}`);
    this.g.output(v, `value.${layer}`);
    const pk = this.past(`past_key.${layer}`);
    const pv = this.past(`past_value.${layer}`);
    const masks = opts.slidingWindow ? this.windowed(opts.slidingWindow) : { past: this.pastAllowed, fresh: this.newAllowed };
    const heads = opts.heads ?? (q.shape[1] as number);
    const grouped = this.kvHeads !== heads;
    const rep = heads / this.kvHeads;
    const hd = this.headDim;
    const group = (x: Value) => (grouped ? G.unsqueeze(x, [2]) : x);
    const qq = grouped ? G.reshape(q, [0, this.kvHeads, rep, -1, hd]) : q;
    const tr = grouped ? [0, 1, 2, 4, 3] : [0, 1, 3, 2];
    const bias = (allowed: Value) => group(attentionBias(allowed, "float32"));
    const mixed = q.dtype === "float16";
    const scores = (kk: Value, allowed: Value) => {
      let s = G.matmul(qq, G.transpose(group(kk), tr));
      if (mixed) s = G.cast(s, "float32");
      if (scale !== 1) s = G.mul(s, scale);
      return G.add(s, bias(allowed));
    };
    const probs = G.softmax(G.concat([scores(pk, masks.past), scores(k, masks.fresh)], -1), -1);
    const pastLen = G.gather(G.shapeOf(pk), this.g.ints([2]));
    const seqLen = G.gather(G.shapeOf(k), this.g.ints([2]));
    let [pp, pn] = this.g.op("Split", [probs, G.concat([pastLen, seqLen], 0)], { axis: -1 });
    if (mixed) {
      pp = G.cast(pp!, q.dtype);
      pn = G.cast(pn!, q.dtype);
    }
    const out = G.add(G.matmul(pp!, group(pv)), G.matmul(pn!, group(v)));
    return grouped ? G.reshape(out, [0, heads, -1, hd]) : out;
  }
}

/** 0…n−1 as int64 [n], n read from dim `axis` of `x`. */
function positionsAlong(x: Value, axis: number): Value {
  const g = x.graph;
  const n = G.gather(G.shapeOf(x), g.constant({ dtype: "int64", shape: [], data: BigInt64Array.of(BigInt(axis)) }));
  return G.range(g.scalar(0, "int64"), n, g.scalar(1, "int64"));
}

/**
 * Hidden states [batch, seq, hidden] at one position per row (`index` int64 [batch]) as
 * [batch, 1, hidden]: the logits of a decoding step are computed for the last real token only.
 */
export function atPositions(x: Value, index: Value): Value {
  const g = x.graph;
  const idx = G.unsqueeze(index, [1, 2]);
  const shape = G.concat([G.gather(G.shapeOf(x), g.ints([0])), g.ints([1, x.shape[2] as number])], 0);
  return G.gatherElements(x, G.expand(idx, shape), 1);
}
