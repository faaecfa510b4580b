/**
 * ComPEFT (Yadav et al. 2023, "ComPEFT: Compression for Communicating Parameter Efficient
 * Updates via Sparsification and Quantization"): the update τ = v − baseline of every tensor is
 * flattened into one vector (tensors in sorted name order, as the reference code's
 * `state_dict_to_vector`), the global top-k entries by magnitude are kept, each kept entry becomes
 * α·std(τ)·sign(τ) (std over the whole dense update, unbiased as `torch.std`), the rest become 0.
 * The baseline is 0 for LoRA factors and task vectors, 1 for (IA)³ scaling vectors.
 *
 * Choices, compared with the reference code (`topk_values_mask` in prateeky2806/ComPEFT):
 * - k = ⌊density · n⌋ like its `int(d * K)`, but a product that misses an integer only by
 *   floating-point error snaps to it (0.29 · 100 keeps 29 entries, where Python's int() gives 28);
 *   and at least one entry, as the reference keeps the maximum when ⌊density · n⌋ = 0.
 * - Exactly k entries: the reference keeps every entry tied with the k-th magnitude; here ties at
 *   the threshold are broken by flat position (earlier tensor names, then lower index, first), so
 *   the kept count is exact. With no ties at the threshold both select the same entries.
 * - Entries with τ = 0 are never kept (sign 0 makes them 0 in the reference too), so fewer than k
 *   entries are stored when the update has fewer than k non-zeros.
 * - Arithmetic follows the reference's float32 tensors: τ = float32(v − baseline), std computed in
 *   float64 and rounded to float32, scale = float32(float32(α) · std), values float32(baseline ± scale).
 */
import { ConfigError, NonFiniteValueError, ShapeMismatchError } from "../../errors.js";
import { floatToBf16, floatToHalf, numel, tensor, toFloat32, type DType, type Tensor } from "../../tensor.js";

export interface CompeftOptions {
  /** Fraction of the update's entries to keep, in (0, 1]. */
  readonly density: number;
  /** Multiplier of std(τ) for the kept magnitudes (the paper's α), finite and > 0. */
  readonly alpha: number;
  /** Baseline subtracted per tensor before compression (default 0; 1 for (IA)³ vectors). */
  readonly baseline?: (name: string) => number;
}

/** One tensor of a compressed update. */
export interface CompeftTensor {
  readonly name: string;
  readonly shape: readonly number[];
  /** dtype of the tensor that was compressed. */
  readonly dtype: CompeftDType;
  /** The baseline as float32 (0 for LoRA / task vectors, 1 for (IA)³). */
  readonly baseline: number;
  /** Flat (row-major) positions of the kept entries, strictly increasing. */
  readonly positions: Uint32Array;
  /** 1 where the kept entry is negative, 0 where positive; same length as `positions`. */
  readonly negative: Uint8Array;
}

/** A tensor stored as it is next to the compressed ones (e.g. a classifier head saved with an adapter). */
export interface CompeftDenseTensor {
  readonly name: string;
  /** float32, float16, bfloat16 or float64. */
  readonly tensor: Tensor;
}

/** A ComPEFT-compressed update: everything needed to rebuild the tensors exactly. */
export interface CompeftCompressed {
  readonly density: number;
  readonly alpha: number;
  /** float32 std of the dense update τ (unbiased). */
  readonly std: number;
  /** float32(float32(α) · std): the magnitude of every kept entry. */
  readonly scale: number;
  /** Tensors in sorted name order. */
  readonly tensors: readonly CompeftTensor[];
  /** Tensors kept uncompressed (format version 2). */
  readonly dense?: readonly CompeftDenseTensor[];
  /** JSON metadata (format version 2), such as an adapter's config. */
  readonly metadata?: Readonly<Record<string, unknown>>;
}

export type CompeftDType = "float32" | "float16" | "bfloat16" | "float64";

export const COMPEFT_DTYPES: readonly CompeftDType[] = ["float32", "float16", "bfloat16", "float64"];

const WHERE = "compeft()";

function checkOptions(o: CompeftOptions): void {
  if (!(typeof o.density === "number" && o.density > 0 && o.density <= 1)) {
    throw new ConfigError(WHERE, "density", `must be a number in (0, 1] (the fraction of entries kept), got ${o.density}`);
  }
  if (!(typeof o.alpha === "number" && Number.isFinite(o.alpha) && o.alpha > 0)) {
    throw new ConfigError(WHERE, "alpha", `must be a finite number > 0, got ${o.alpha}`);
  }
}

/** ⌊density · n⌋ (snapping floating-point near-misses up), at least 1, at most n. */
export function keepCount(density: number, n: number): number {
  if (n === 0) return 0;
  const p = density * n;
  let k = Math.floor(p);
  if (k + 1 - p <= 4 * Number.EPSILON * p) k += 1;
  return Math.min(n, Math.max(1, k));
}

/** Float32 std with Bessel's correction (`torch.std`), computed in float64. */
export function unbiasedStd(x: Float32Array): number {
  const n = x.length;
  if (n < 2) return NaN;
  let s = 0;
  for (let i = 0; i < n; i++) s += x[i]!;
  const mean = s / n;
  let ss = 0;
  for (let i = 0; i < n; i++) {
    const d = x[i]! - mean;
    ss += d * d;
  }
  return Math.fround(Math.sqrt(ss / (n - 1)));
}

/**
 * Flat indices (increasing) of the k largest-magnitude non-zero entries, ties at the threshold
 * broken by lower index. Radix select on the float32 bit patterns of |x| (whose unsigned order
 * is their numeric order): two 16-bit histogram passes, then one collecting pass; O(n).
 */
export function topKIndices(x: Float32Array, k: number): Uint32Array {
  const n = x.length;
  if (k <= 0 || n === 0) return new Uint32Array(0);
  const bits = new Uint32Array(x.buffer, x.byteOffset, n);
  const hist = new Uint32Array(65536);
  for (let i = 0; i < n; i++) hist[(bits[i]! & 0x7fffffff) >>> 16]!++;
  let need = Math.min(k, n);
  let hi = 0x7fff;
  for (; hi > 0; hi--) {
    if (hist[hi]! >= need) break;
    need -= hist[hi]!;
  }
  hist.fill(0);
  for (let i = 0; i < n; i++) {
    const b = bits[i]! & 0x7fffffff;
    if (b >>> 16 === hi) hist[b & 0xffff]!++;
  }
  let lo = 0xffff;
  for (; lo > 0; lo--) {
    if (hist[lo]! >= need) break;
    need -= hist[lo]!;
  }
  const threshold = ((hi << 16) | lo) >>> 0;
  let ties = need;
  const out = new Uint32Array(Math.min(k, n));
  let m = 0;
  for (let i = 0; i < n; i++) {
    const b = bits[i]! & 0x7fffffff;
    if (b > threshold) out[m++] = i;
    else if (b === threshold && ties > 0) {
      ties--;
      if (b !== 0) out[m++] = i;
    }
  }
  return out.subarray(0, m);
}

interface Input {
  readonly name: string;
  readonly shape: readonly number[];
  readonly dtype: CompeftDType;
  readonly data: Float32Array;
  readonly baseline: number;
}

function readInput(name: string, t: Float32Array | Tensor, requested: number): Input {
  if (!(typeof requested === "number" && Number.isFinite(requested))) {
    throw new ConfigError(WHERE, `baseline(${JSON.stringify(name)})`, `must be a finite number, got ${requested}`);
  }
  // The baseline is a float32 tensor in the reference (e.g. torch.ones_like for (IA)³).
  const baseline = Math.fround(requested);
  if (t instanceof Float32Array) return { name, shape: [t.length], dtype: "float32", data: t, baseline };
  if (!(COMPEFT_DTYPES as readonly DType[]).includes(t.dtype)) {
    throw new ConfigError(WHERE, `tensors.${name}`, `dtype ${t.dtype} is not a floating-point dtype (use ${COMPEFT_DTYPES.join(", ")})`);
  }
  if (t.data.length !== numel(t.shape)) throw new ShapeMismatchError(name, t.shape, [t.data.length], "tensor data length does not match its shape");
  return { name, shape: [...t.shape], dtype: t.dtype as CompeftDType, data: toFloat32(t), baseline };
}

/** Compresses named update tensors (LoRA factors, task vectors, (IA)³ vectors with baseline 1). */
export function compeft(tensors: ReadonlyMap<string, Float32Array | Tensor>, options: CompeftOptions): CompeftCompressed {
  checkOptions(options);
  const names = [...tensors.keys()].sort();
  const inputs = names.map((name) => readInput(name, tensors.get(name)!, options.baseline ? options.baseline(name) : 0));
  const n = inputs.reduce((s, t) => s + t.data.length, 0);
  if (n < 2) throw new ConfigError(WHERE, "tensors", `ComPEFT needs at least 2 parameters to compute std(τ), got ${n}`);
  const tau = new Float32Array(n);
  let off = 0;
  for (const t of inputs) {
    for (let i = 0; i < t.data.length; i++) {
      const v = t.data[i]!;
      if (!Number.isFinite(v)) throw new NonFiniteValueError(t.name, i, v, "ComPEFT compression");
      tau[off + i] = v - t.baseline;
    }
    off += t.data.length;
  }
  const std = unbiasedStd(tau);
  const scale = compeftScale(options.alpha, std);
  const kept = topKIndices(tau, keepCount(options.density, n));

  const out: CompeftTensor[] = [];
  let cursor = 0;
  off = 0;
  for (const t of inputs) {
    const end = off + t.data.length;
    const start = cursor;
    while (cursor < kept.length && kept[cursor]! < end) cursor++;
    const positions = new Uint32Array(cursor - start);
    const negative = new Uint8Array(cursor - start);
    for (let j = start; j < cursor; j++) {
      positions[j - start] = kept[j]! - off;
      negative[j - start] = tau[kept[j]!]! < 0 ? 1 : 0;
    }
    out.push({ name: t.name, shape: t.shape, dtype: t.dtype, baseline: t.baseline, positions, negative });
    off = end;
  }
  return { density: options.density, alpha: options.alpha, std, scale, tensors: out };
}

/** The kept magnitude: float32(float32(α) · std), as the reference's `replace_factor * tv.std()`. */
export function compeftScale(alpha: number, std: number): number {
  return Math.fround(Math.fround(alpha) * std);
}

/** Output dtype of {@link reconstruct}: float32, or the dtype each tensor had when compressed. */
export type ReconstructDType = "float32" | "source";

function castTo(dtype: CompeftDType, shape: readonly number[], x: Float32Array): Tensor {
  switch (dtype) {
    case "float32":
      return tensor("float32", shape, x);
    case "float64":
      return tensor("float64", shape, Float64Array.from(x));
    case "float16":
      return tensor("float16", shape, Uint16Array.from(x, floatToHalf));
    case "bfloat16":
      return tensor("bfloat16", shape, Uint16Array.from(x, floatToBf16));
  }
}

/** Rebuilds one tensor: baseline everywhere, baseline ± scale at the kept positions (float32). */
export function reconstructTensor(c: CompeftCompressed, t: CompeftTensor): Float32Array {
  const out = new Float32Array(numel(t.shape)).fill(t.baseline);
  const up = Math.fround(t.baseline + c.scale);
  const down = Math.fround(t.baseline - c.scale);
  for (let j = 0; j < t.positions.length; j++) out[t.positions[j]!] = t.negative[j] ? down : up;
  return out;
}

/**
 * Rebuilds every compressed tensor, in sorted name order, as float32 (default) or in its source
 * dtype, followed by the dense tensors (as stored, or converted to float32).
 */
export function reconstruct(c: CompeftCompressed, dtype: ReconstructDType = "float32"): Map<string, Tensor> {
  const out = new Map<string, Tensor>();
  for (const t of c.tensors) {
    const x = reconstructTensor(c, t);
    out.set(t.name, dtype === "source" ? castTo(t.dtype, t.shape, x) : tensor("float32", t.shape, x));
  }
  for (const d of c.dense ?? []) {
    out.set(d.name, dtype === "source" || d.tensor.dtype === "float32" ? d.tensor : tensor("float32", d.tensor.shape, toFloat32(d.tensor)));
  }
  return out;
}

/** Counts of a compressed update: parameters, kept entries and the kept fraction. */
export function compeftStats(c: CompeftCompressed): { params: number; kept: number; keptFraction: number } {
  let params = 0;
  let kept = 0;
  for (const t of c.tensors) {
    params += numel(t.shape);
    kept += t.positions.length;
  }
  return { params, kept, keptFraction: params === 0 ? 0 : kept / params };
}
