/** Pieces shared by the transformer models: masks, multi-head attention, positions. */
import * as G from "../graph/api.js";
import type { Value } from "../graph/types.js";
import type { DType } from "../tensor.js";

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
