/**
 * The host tensor type shared by io, graph, runtime and everything above: a dtype, a shape and
 * a flat row-major typed array. Dtype names are onnxruntime's (`float32`, `int64`, …) so a
 * `Tensor` converts to an `ort.Tensor` without a lookup table.
 */
import { NonFiniteValueError } from "./errors.js";

export type DType =
  | "float32"
  | "float64"
  | "float16"
  | "bfloat16"
  | "int64"
  | "int32"
  | "int16"
  | "int8"
  | "uint8"
  | "bool";

/** The typed array that holds each dtype. float16/bfloat16 hold raw 16-bit patterns; bool holds 0/1 bytes. */
export interface DataOf {
  float32: Float32Array;
  float64: Float64Array;
  float16: Uint16Array;
  bfloat16: Uint16Array;
  int64: BigInt64Array;
  int32: Int32Array;
  int16: Int16Array;
  int8: Int8Array;
  uint8: Uint8Array;
  bool: Uint8Array;
}

export type TensorData = DataOf[DType];

export interface Tensor<D extends DType = DType> {
  readonly dtype: D;
  readonly shape: readonly number[];
  readonly data: DataOf[D];
}

export const BYTES_PER_ELEMENT: Record<DType, number> = {
  float32: 4,
  float64: 8,
  float16: 2,
  bfloat16: 2,
  int64: 8,
  int32: 4,
  int16: 2,
  int8: 1,
  uint8: 1,
  bool: 1,
};

export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

export function tensor<D extends DType>(dtype: D, shape: readonly number[], data: DataOf[D]): Tensor<D> {
  if (data.length !== numel(shape)) {
    throw new RangeError(`tensor data has ${data.length} elements but shape [${shape.join(", ")}] needs ${numel(shape)}`);
  }
  return { dtype, shape: [...shape], data };
}

export function zeros<D extends DType>(dtype: D, shape: readonly number[]): Tensor<D> {
  return tensor(dtype, shape, allocate(dtype, numel(shape)));
}

export function allocate<D extends DType>(dtype: D, n: number): DataOf[D] {
  const make: { [K in DType]: (n: number) => DataOf[K] } = {
    float32: (k) => new Float32Array(k),
    float64: (k) => new Float64Array(k),
    float16: (k) => new Uint16Array(k),
    bfloat16: (k) => new Uint16Array(k),
    int64: (k) => new BigInt64Array(k),
    int32: (k) => new Int32Array(k),
    int16: (k) => new Int16Array(k),
    int8: (k) => new Int8Array(k),
    uint8: (k) => new Uint8Array(k),
    bool: (k) => new Uint8Array(k),
  };
  return make[dtype](n) as DataOf[D];
}

const f32buf = new Float32Array(1);
const u32buf = new Uint32Array(f32buf.buffer);

/** IEEE half (binary16) bits → number. */
export function halfToFloat(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const f = h & 0x3ff;
  if (e === 0) return s * f * 2 ** -24;
  if (e === 31) return f ? NaN : s * Infinity;
  return s * (1 + f / 1024) * 2 ** (e - 15);
}

/** number → IEEE half bits, round to nearest even. */
export function floatToHalf(v: number): number {
  f32buf[0] = v;
  const x = u32buf[0]!;
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    let half = mant >> shift;
    const rem = mant & ((1 << shift) - 1);
    const mid = 1 << (shift - 1);
    if (rem > mid || (rem === mid && half & 1)) half++;
    return sign | half;
  }
  let half = (e << 10) | (mant >> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && half & 1)) half++; // a carry into the exponent is correct rounding
  return sign | half;
}

/** bfloat16 bits → number. */
export function bf16ToFloat(h: number): number {
  u32buf[0] = h << 16;
  return f32buf[0]!;
}

/** number → bfloat16 bits, round to nearest even. */
export function floatToBf16(v: number): number {
  f32buf[0] = v;
  const x = u32buf[0]!;
  if ((x & 0x7f800000) === 0x7f800000 && x & 0x7fffff) return (x >>> 16) | 0x40;
  return ((x + 0x7fff + ((x >>> 16) & 1)) >>> 16) & 0xffff;
}

/** Any float tensor as float32 (a copy for other dtypes, the same array for float32). */
export function toFloat32(t: Tensor): Float32Array {
  switch (t.dtype) {
    case "float32":
      return t.data as Float32Array;
    case "float16":
      return Float32Array.from(t.data as Uint16Array, halfToFloat);
    case "bfloat16":
      return Float32Array.from(t.data as Uint16Array, bf16ToFloat);
    case "float64":
      return Float32Array.from(t.data as Float64Array);
    case "int64":
      return Float32Array.from(t.data as BigInt64Array, (v) => Number(v));
    default:
      return Float32Array.from(t.data as ArrayLike<number>);
  }
}

/** Any numeric tensor as float64. */
export function toFloat64(t: Tensor): Float64Array {
  if (t.dtype === "float64") return t.data as Float64Array;
  if (t.dtype === "int64") return Float64Array.from(t.data as BigInt64Array, (v) => Number(v));
  return Float64Array.from(toFloat32(t));
}

export function f32(shape: readonly number[], data: ArrayLike<number>): Tensor<"float32"> {
  return tensor("float32", shape, Float32Array.from(data));
}

export function i64(shape: readonly number[], data: ArrayLike<number | bigint>): Tensor<"int64"> {
  return tensor("int64", shape, BigInt64Array.from(Array.from(data, (v) => BigInt(v))));
}

/** Index of the first NaN or ±Infinity of a float tensor (raw float16/bfloat16 bits checked directly); -1 when all are finite or the dtype is an integer one. */
export function firstNonFinite(t: Tensor): number {
  const d = t.data;
  switch (t.dtype) {
    case "float32":
    case "float64": {
      const f = d as Float32Array | Float64Array;
      for (let i = 0; i < f.length; i++) if (!Number.isFinite(f[i]!)) return i;
      return -1;
    }
    case "float16":
    case "bfloat16": {
      const mask = t.dtype === "float16" ? 0x7c00 : 0x7f80;
      const h = d as Uint16Array;
      for (let i = 0; i < h.length; i++) if ((h[i]! & mask) === mask) return i;
      return -1;
    }
    default:
      return -1;
  }
}

/** The value of element `i` of a float tensor as a number. */
function elementValue(t: Tensor, i: number): number {
  if (t.dtype === "float16") return halfToFloat((t.data as Uint16Array)[i]!);
  if (t.dtype === "bfloat16") return bf16ToFloat((t.data as Uint16Array)[i]!);
  return Number(t.data[i]);
}

/**
 * Throws `NonFiniteValueError` naming the tensor when a float tensor of `tensors` holds NaN or
 * ±Infinity. `context` says what needs finite values (e.g. "the adapter in runs/a (pass
 * --allow-non-finite to accept it)").
 */
export function assertFinite(tensors: Iterable<readonly [string, Tensor]>, context: string): void {
  for (const [name, t] of tensors) {
    const i = firstNonFinite(t);
    if (i >= 0) throw new NonFiniteValueError(name, i, elementValue(t, i), context);
  }
}
