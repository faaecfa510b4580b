/**
 * `AdamW8bit`: AdamW whose two moments are stored block-wise quantised with bitsandbytes' 8-bit
 * dynamic maps (`bnb.optim.AdamW8bit`, Dettmers et al. 2022, "8-bit Optimizers via Block-wise
 * Quantization"): the first moment through the signed map, the second through the unsigned map,
 * in blocks of 256 with one float32 absmax per block. Parameters with fewer than 4,096 elements
 * keep 32-bit moments (`min_8bit_size`), as bitsandbytes does.
 *
 * One step of an 8-bit parameter, as bitsandbytes' block-wise kernel does it:
 *
 *     m, v   ← dequantise(state1), dequantise(state2)
 *     m      ← β1·m + (1 − β1)·g ;  v ← β2·v + (1 − β2)·g²      (float32 values)
 *     p      ← p·(1 − lr·wd) − (lr / (1 − β1^t)) · m / (sqrt(v) / sqrt(1 − β2^t) + eps)
 *     state1, state2 ← quantise(m), quantise(v)                   (new absmax per block)
 *
 * The update uses the float32 moments before they are re-quantised; only the stored state is
 * 8-bit. Everything else (defaults lr 1e-3, betas (0.9, 0.999), eps 1e-8, weight decay 1e-2,
 * per-parameter step counts, lazy state) is as in `AdamW`; amsgrad is not available (bitsandbytes
 * has no 8-bit amsgrad).
 *
 * State dict: `kind` "adamw" (so checkpoints store it like AdamW's) with hyperparameters
 * `optimBits: 8`, `blockSize`, `minSize8bit`. An 8-bit parameter has buffers `<name>.state1` and
 * `<name>.state2` (the codes, packed three bytes per float32 as the exact integer
 * b0 + 256·b1 + 65536·b2, because optimizer state tensors are float32) and `<name>.absmax1`,
 * `<name>.absmax2`; a small parameter has AdamW's `exp_avg` / `exp_avg_sq`. `loadStateDict` also
 * accepts a 32-bit AdamW state and quantises its moments.
 */
import { ConfigError, NonFiniteValueError } from "../../errors.js";
import { ABSMAX_FLOOR, nearestIndex } from "../../compress/quant/blockwise.js";
import { codebookBounds } from "../../compress/quant/codebooks.js";
import { codebookFor, quantize } from "../../compress/quant/quantize.js";
import { ADAMW_DEFAULTS, type AdamWOptions } from "./adamw.js";
import { assignHyperparams, buildState, checkAdamHyperparams, checkNumber, checkParams, checkState, resolveGradients, savedNumber, takeBuffer } from "./common.js";
import type { Gradients, NamedParam, Optimizer, OptimizerState } from "./types.js";

export interface AdamW8bitOptions extends Omit<AdamWOptions, "amsgrad"> {
  /** Elements per quantisation block (power of two, 64…4096; default 256). */
  readonly blockSize?: number;
  /** Parameters with fewer elements keep 32-bit moments (default 4096, bitsandbytes' `min_8bit_size`). */
  readonly minSize8bit?: number;
}

export const ADAMW8BIT_DEFAULTS = { ...ADAMW_DEFAULTS, blockSize: 256, minSize8bit: 4096 } as const;

/** One moment stored block-wise quantised: a code per element and an absmax per block. */
interface Quantized {
  readonly codes: Uint8Array;
  readonly absmax: Float32Array;
}

/** The moments of one parameter: quantised (8-bit) or float32. */
type Moments =
  | { readonly bits: 8; readonly m: Quantized; readonly v: Quantized }
  | { readonly bits: 32; readonly m: Float32Array; readonly v: Float32Array };

const SIGNED = codebookFor("dynamic")!;
const UNSIGNED = codebookFor("dynamic-unsigned")!;

/**
 * Nearest-code search for a sorted 256-entry map, exact and fast: for each value of the top 16
 * bits of a float32 the codes any such value can round to form a range [lo, hi] (the search is
 * monotonic), usually one or two codes wide; a short scan of the boundaries finishes it.
 */
interface CodeSearch {
  readonly bounds: Float32Array;
  readonly lo: Uint8Array;
  readonly hi: Uint8Array;
}

const F32 = new Float32Array(1);
const U32 = new Uint32Array(F32.buffer);

function codeSearch(map: Float32Array): CodeSearch {
  const bounds = codebookBounds(map);
  const lo = new Uint8Array(65536);
  const hi = new Uint8Array(65536);
  for (let key = 0; key < 65536; key++) {
    U32[0] = key << 16;
    const a = F32[0]!;
    U32[0] = ((key << 16) | 0xffff) >>> 0;
    const b = F32[0]!;
    if (Number.isNaN(a) || Number.isNaN(b)) continue; // never looked up: values are clamped to [−1, 1]
    const [x, y] = a <= b ? [a, b] : [b, a];
    lo[key] = nearestIndex(bounds, x);
    hi[key] = nearestIndex(bounds, y);
  }
  return { bounds, lo, hi };
}

let searches: { signed: CodeSearch; unsigned: CodeSearch } | undefined;

/** `nearestIndex(bounds, v)` for a finite float32 v (same result, table-accelerated). */
function nearestCode(s: CodeSearch, v: number): number {
  F32[0] = v;
  const key = U32[0]! >>> 16;
  let i = s.lo[key]!;
  const h = s.hi[key]!;
  while (i < h && s.bounds[i]! < v) i++;
  return i;
}

/**
 * Quantises `x[0..len)` (one block) into `codes[at..]` exactly as `quantize()` does (bitsandbytes'
 * rules: a full block scales by float32(1 / absmax), a partial one divides, values clamped to
 * [−1, 1], nearest code with ties down); returns the absmax to store.
 */
function quantizeBlock(x: Float32Array, len: number, full: boolean, am: number, search: CodeSearch, codes: Uint8Array, at: number): number {
  const d = Math.max(am, ABSMAX_FLOOR);
  const inv = Math.fround(1 / d);
  for (let j = 0; j < len; j++) {
    let v = full ? Math.fround(x[j]! * inv) : Math.fround(x[j]! / d);
    v = v > 1 ? 1 : v < -1 ? -1 : v;
    codes[at + j] = nearestCode(search, v);
  }
  return full ? am : d;
}

interface ParamState {
  step: number;
  moments: Moments | null;
}

/** Bytes held by an optimizer's state buffers, and what 32-bit AdamW would hold. */
export interface OptimizerStateBytes {
  /** 8-bit codes and their block absmax. */
  readonly quantized: number;
  /** 32-bit moments of the small parameters. */
  readonly float32: number;
  readonly total: number;
  /** Two float32 moments for every parameter with state (32-bit AdamW). */
  readonly adamW32: number;
}

/** Packs bytes three per float32 (exact integers below 2^24). */
export function packCodes(codes: Uint8Array): Float32Array {
  const out = new Float32Array(Math.ceil(codes.length / 3));
  for (let i = 0; i < codes.length; i++) out[(i / 3) | 0]! += codes[i]! * 256 ** (i % 3);
  return out;
}

/** Inverse of {@link packCodes}; `key` names the buffer in errors. */
export function unpackCodes(packed: Float32Array, n: number, key: string): Uint8Array {
  if (packed.length !== Math.ceil(n / 3)) {
    throw new ConfigError("optimizer state", key, `holds ${packed.length} packed values but ${n} codes need ${Math.ceil(n / 3)}`);
  }
  const out = new Uint8Array(n);
  for (let j = 0; j < packed.length; j++) {
    const v = packed[j]!;
    if (!(Number.isInteger(v) && v >= 0 && v < 2 ** 24)) {
      throw new ConfigError("optimizer state", key, `entry ${j} = ${v} is not a packed 3-byte code (an integer in [0, 2^24)); the state is corrupt`);
    }
    for (let b = 0; b < 3 && 3 * j + b < n; b++) out[3 * j + b] = Math.floor(v / 256 ** b) % 256;
    if (3 * j + 3 > n && v >= 256 ** (n - 3 * j)) {
      throw new ConfigError("optimizer state", key, `entry ${j} has bits beyond the last code; the state is corrupt`);
    }
  }
  return out;
}

export class AdamW8bit implements Optimizer {
  readonly kind = "adamw" as const;
  readonly params: readonly NamedParam[];
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  readonly blockSize: number;
  readonly minSize8bit: number;
  private steps = 0;
  private paramWeightDecay: number[];
  private state: ParamState[];

  constructor(params: readonly NamedParam[], options: AdamW8bitOptions = {}) {
    if ((options as { amsgrad?: unknown }).amsgrad) {
      throw new ConfigError("AdamW8bit", "amsgrad", "is not available with 8-bit state (bitsandbytes has none); use AdamW");
    }
    checkParams("AdamW8bit", params);
    this.params = [...params];
    this.lr = options.lr ?? ADAMW8BIT_DEFAULTS.lr;
    [this.beta1, this.beta2] = options.betas ?? ADAMW8BIT_DEFAULTS.betas;
    this.eps = options.eps ?? ADAMW8BIT_DEFAULTS.eps;
    this.weightDecay = options.weightDecay ?? ADAMW8BIT_DEFAULTS.weightDecay;
    this.blockSize = options.blockSize ?? ADAMW8BIT_DEFAULTS.blockSize;
    this.minSize8bit = options.minSize8bit ?? ADAMW8BIT_DEFAULTS.minSize8bit;
    if (!(Number.isInteger(Math.log2(this.blockSize)) && this.blockSize >= 64 && this.blockSize <= 4096)) {
      throw new ConfigError("AdamW8bit", "blockSize", `must be a power of two in [64, 4096], got ${this.blockSize}`);
    }
    if (!(Number.isSafeInteger(this.minSize8bit) && this.minSize8bit >= 0)) {
      throw new ConfigError("AdamW8bit", "minSize8bit", `must be a non-negative integer, got ${this.minSize8bit}`);
    }
    this.checkHyperparams();
    this.paramWeightDecay = this.params.map((p) => p.weightDecay ?? this.weightDecay);
    this.state = this.params.map(() => ({ step: 0, moments: null }));
  }

  private checkHyperparams(): void {
    checkAdamHyperparams("AdamW8bit", this);
  }

  get stepCount(): number {
    return this.steps;
  }

  /** Whether parameter `i` keeps 8-bit moments. */
  is8bit(i: number): boolean {
    return this.params[i]!.data.length >= this.minSize8bit;
  }

  private quantizeMoments(name: string, m: Float32Array, v: Float32Array): Moments {
    const part = (x: Float32Array, kind: "dynamic" | "dynamic-unsigned", key: string): Quantized => {
      const q = quantize(x, { kind, blockSize: this.blockSize }, `${name}.${key}`);
      return { codes: q.codes, absmax: (q.scales as { absmax: Float32Array }).absmax };
    };
    return { bits: 8, m: part(m, "dynamic", "exp_avg"), v: part(v, "dynamic-unsigned", "exp_avg_sq") };
  }

  /**
   * One 8-bit update of parameter `p`, block by block: dequantise, update, re-quantise. New
   * codes go to fresh arrays, committed (with the parameter) only when every moment is finite.
   */
  private step8bit(name: string, p: Float32Array, g: Float32Array, old: Moments | null, k: { stepSize: number; bc2Sqrt: number; decay: number }): Moments {
    const { beta1, beta2, eps, blockSize: bs } = this;
    const n = p.length;
    const nb = Math.ceil(n / bs);
    const prev = old?.bits === 8 ? old : null;
    const m: Quantized = { codes: new Uint8Array(n), absmax: new Float32Array(nb) };
    const v: Quantized = { codes: new Uint8Array(n), absmax: new Float32Array(nb) };
    const next = new Float32Array(n);
    const search = (searches ??= { signed: codeSearch(SIGNED), unsigned: codeSearch(UNSIGNED) });
    const mb = new Float32Array(bs);
    const vb = new Float32Array(bs);
    for (let b = 0; b < nb; b++) {
      const start = b * bs;
      const len = Math.min(bs, n - start);
      const s1 = prev ? prev.m.absmax[b]! : 0;
      const s2 = prev ? prev.v.absmax[b]! : 0;
      let am1 = 0;
      let am2 = 0;
      for (let j = 0; j < len; j++) {
        const i = start + j;
        const gj = g[i]!;
        mb[j] = prev ? SIGNED[prev.m.codes[i]!]! * s1 : 0;
        vb[j] = prev ? UNSIGNED[prev.v.codes[i]!]! * s2 : 0;
        mb[j] = beta1 * mb[j]! + (1 - beta1) * gj;
        vb[j] = beta2 * vb[j]! + (1 - beta2) * gj * gj;
        next[i] = p[i]! * k.decay - (k.stepSize * mb[j]!) / (Math.sqrt(vb[j]!) / k.bc2Sqrt + eps);
        const a1 = Math.abs(mb[j]!);
        if (a1 > am1) am1 = a1;
        if (vb[j]! > am2) am2 = vb[j]!;
        if (!Number.isFinite(mb[j]!) || !Number.isFinite(vb[j]!)) {
          const which = Number.isFinite(mb[j]!) ? "exp_avg_sq" : "exp_avg";
          throw new NonFiniteValueError(`${name}.${which}`, i, which === "exp_avg" ? mb[j]! : vb[j]!, "8-bit optimizer state");
        }
      }
      m.absmax[b] = quantizeBlock(mb, len, len === bs, am1, search.signed, m.codes, start);
      v.absmax[b] = quantizeBlock(vb, len, len === bs, am2, search.unsigned, v.codes, start);
    }
    p.set(next);
    return { bits: 8, m, v };
  }

  step(grads: Gradients, lr?: number): void {
    const rate = lr ?? this.lr;
    checkNumber("AdamW8bit", "lr", rate, 0);
    const list = resolveGradients("AdamW8bit", this.params, grads);
    const { beta1, beta2, eps } = this;
    list.forEach((g, i) => {
      if (!g) return;
      const { name, data: p } = this.params[i]!;
      const st = this.state[i]!;
      const n = p.length;
      const t = st.step + 1;
      const lrI = rate * (this.params[i]!.lrScale ?? 1);
      const k = { stepSize: lrI / (1 - beta1 ** t), bc2Sqrt: Math.sqrt(1 - beta2 ** t), decay: 1 - lrI * this.paramWeightDecay[i]! };
      if (this.is8bit(i)) {
        st.moments = this.step8bit(name, p, g, st.moments, k);
        st.step = t;
        return;
      }
      const old = st.moments?.bits === 32 ? st.moments : null;
      const m = old ? old.m : new Float32Array(n);
      const v = old ? old.v : new Float32Array(n);
      for (let j = 0; j < n; j++) {
        const gj = g[j]!;
        m[j] = beta1 * m[j]! + (1 - beta1) * gj;
        v[j] = beta2 * v[j]! + (1 - beta2) * gj * gj;
        p[j] = p[j]! * k.decay - (k.stepSize * m[j]!) / (Math.sqrt(v[j]!) / k.bc2Sqrt + eps);
      }
      st.moments = { bits: 32, m, v };
      st.step = t;
    });
    this.steps++;
  }

  /** Bytes of the state buffers now, against two float32 moments per parameter with state. */
  stateBytes(): OptimizerStateBytes {
    let quantized = 0;
    let float32 = 0;
    let adamW32 = 0;
    this.state.forEach((s, i) => {
      if (!s.moments) return;
      adamW32 += 8 * this.params[i]!.data.length;
      if (s.moments.bits === 32) float32 += 4 * (s.moments.m.length + s.moments.v.length);
      else for (const q of [s.moments.m, s.moments.v]) quantized += q.codes.length + 4 * q.absmax.length;
    });
    return { quantized, float32, total: quantized + float32, adamW32 };
  }

  stateDict(): OptimizerState {
    return buildState(
      "adamw",
      this.steps,
      {
        lr: this.lr,
        beta1: this.beta1,
        beta2: this.beta2,
        eps: this.eps,
        weightDecay: this.weightDecay,
        amsgrad: false,
        optimBits: 8,
        blockSize: this.blockSize,
        minSize8bit: this.minSize8bit,
      },
      this.params,
      this.state.map((s) => s.step),
      this.paramWeightDecay,
      this.state.map((s): Record<string, Float32Array | null> => {
        const mo = s.moments;
        if (!mo) return {};
        if (mo.bits === 32) return { exp_avg: mo.m, exp_avg_sq: mo.v };
        return { state1: packCodes(mo.m.codes), absmax1: mo.m.absmax, state2: packCodes(mo.v.codes), absmax2: mo.v.absmax };
      }),
    );
  }

  /** Restores `stateDict()` output, or a 32-bit AdamW state (its moments are quantised). */
  loadStateDict(state: OptimizerState): void {
    const info = checkState("AdamW8bit", "adamw", this.params, state);
    const h = state.hyperparams;
    if (h.amsgrad === true) throw new ConfigError("optimizer state", "amsgrad", "the state is from an amsgrad AdamW, which has no 8-bit form");
    const from8bit = h.optimBits === 8;
    if (from8bit && (h.blockSize !== this.blockSize || h.minSize8bit !== this.minSize8bit)) {
      throw new ConfigError(
        "optimizer state",
        "blockSize",
        `the state has blockSize ${String(h.blockSize)} / minSize8bit ${String(h.minSize8bit)} but this optimizer ${this.blockSize} / ${this.minSize8bit}; create it with the same options`,
      );
    }
    const num = (k: "lr" | "beta1" | "beta2" | "eps" | "weightDecay"): number => savedNumber(h, k, this[k]);
    const next = { lr: num("lr"), beta1: num("beta1"), beta2: num("beta2"), eps: num("eps"), weightDecay: num("weightDecay") };
    const restored = this.params.map((p, i): ParamState => {
      const steps = info[i]!.step;
      if (steps === 0 && !state.tensors.has(`${p.name}.exp_avg`) && !state.tensors.has(`${p.name}.state1`)) return { step: 0, moments: null };
      if (!from8bit || !this.is8bit(i)) {
        const m = takeBuffer(state, p, steps, "exp_avg", true);
        const v = takeBuffer(state, p, steps, "exp_avg_sq", true);
        if (!m || !v) return { step: steps, moments: null };
        return { step: steps, moments: this.is8bit(i) ? this.quantizeMoments(p.name, m, v) : { bits: 32, m, v } };
      }
      const n = p.data.length;
      const nb = Math.ceil(n / this.blockSize);
      const part = (codesKey: string, absmaxKey: string): Quantized => {
        const packed = takeBuffer(state, { name: p.name, data: new Float32Array(Math.ceil(n / 3)) }, steps, codesKey, true);
        const absmax = takeBuffer(state, { name: p.name, data: new Float32Array(nb) }, steps, absmaxKey, true);
        if (!packed || !absmax) throw new ConfigError("optimizer state", `${p.name}.${codesKey}`, "is missing");
        if (!absmax.every((a) => Number.isFinite(a) && a >= 0)) throw new ConfigError("optimizer state", `${p.name}.${absmaxKey}`, "holds a negative or non-finite absmax");
        return { codes: unpackCodes(packed, n, `${p.name}.${codesKey}`), absmax };
      };
      return { step: steps, moments: { bits: 8, m: part("state1", "absmax1"), v: part("state2", "absmax2") } };
    });
    assignHyperparams(this, next, () => this.checkHyperparams());
    this.state = restored;
    this.paramWeightDecay = info.map((p) => p.weightDecay);
    this.steps = state.step;
  }
}
