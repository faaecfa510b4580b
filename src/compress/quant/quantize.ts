/**
 * `quantize(t, scheme)` / `dequantize(q)`: block-wise quantisation as bitsandbytes does it,
 * with a packed `QuantizedTensor` and byte accounting.
 *
 * Schemes (`kind`):
 * - `"int8"`: symmetric absmax int8 per block, q = round(x·127/absmax) in [−127, 127];
 *   dequantised as q · (absmax/127), which is exactly ONNX `DequantizeLinear` with a blocked scale.
 * - `"dynamic"` / `"dynamic-unsigned"`: bitsandbytes' 8-bit dynamic map
 *   (`create_dynamic_map(signed)`), nearest code of x/absmax (`quantize_blockwise`). The unsigned
 *   map only holds values ≥ 0: a negative input raises `QuantRangeError` (bitsandbytes would
 *   silently store 0).
 * - `"nf4"` / `"fp4"`: 4-bit NormalFloat / FP4 (`quantize_4bit`), two codes per byte, high nibble first.
 *
 * Block sizes are powers of two: 64…4096 for the 8-bit schemes, 32…4096 for NF4/FP4 (the sizes
 * bitsandbytes' kernels accept); anything else raises `QuantSchemeError`. Defaults: 4096 for the
 * dynamic maps and 64 for int8/NF4/FP4 (bitsandbytes' defaults; int8 follows the 4-bit one).
 * A length that is not a multiple of the block size ends with a partial block that has its own
 * absmax, as in bitsandbytes.
 *
 * `doubleQuant` (bitsandbytes' `compress_statistics` / `nested`) quantises the per-block absmax
 * too: offset = mean(absmax), then (absmax − offset) goes through the signed dynamic map in blocks
 * of 256 (NF4/FP4/int8) or of the outer block size (dynamic maps, as `quantize_blockwise(nested=True)`).
 * The codes are always computed from the exact absmax; only the stored scales are approximate.
 */
import { QuantizedTensorError, QuantRangeError, QuantSchemeError, NonFiniteValueError, ShapeMismatchError } from "../../errors.js";
import { numel, tensor, toFloat32, type DType, type Tensor } from "../../tensor.js";
import {
  dequantizeBlocks,
  int8Scale,
  numBlocks,
  quantize4bit,
  quantizeInt8Absmax,
  quantizeToSortedCodebook,
  unpackNibble,
} from "./blockwise.js";
import { createDynamicMap, FP4_CODE, NF4_CODE } from "./codebooks.js";

export type QuantKind = "int8" | "dynamic" | "dynamic-unsigned" | "nf4" | "fp4";

export const QUANT_KINDS: readonly QuantKind[] = ["int8", "dynamic", "dynamic-unsigned", "nf4", "fp4"];

export interface QuantScheme {
  readonly kind: QuantKind;
  /** Elements per block (power of two); see the module comment for the allowed range and defaults. */
  readonly blockSize?: number;
  /** Quantise the per-block absmax as well (bitsandbytes' nested / `compress_statistics`). */
  readonly doubleQuant?: boolean;
}

/** Default block size per scheme (bitsandbytes' defaults). */
export const DEFAULT_BLOCK_SIZE: Readonly<Record<QuantKind, number>> = {
  int8: 64,
  dynamic: 4096,
  "dynamic-unsigned": 4096,
  nf4: 64,
  fp4: 64,
};

/** Block size of the absmax quantisation in double quantisation of NF4/FP4/int8 (bitsandbytes: 256). */
export const NESTED_BLOCK_SIZE_4BIT = 256;

/** The per-block absmax of a quantised tensor: stored as float32, or itself quantised (double quantisation). */
export type BlockScales =
  | { readonly kind: "float32"; readonly absmax: Float32Array }
  | {
      readonly kind: "nested";
      /** Signed-dynamic-map codes of absmax − offset, one per block. */
      readonly codes: Uint8Array;
      /** Absmax of each nested block of `blockSize` outer blocks. */
      readonly absmax: Float32Array;
      /** float32 mean of the outer absmax, added back after dequantisation. */
      readonly offset: number;
      readonly blockSize: number;
    };

export interface QuantizedTensor {
  readonly kind: QuantKind;
  readonly shape: readonly number[];
  /** The dtype of the tensor that was quantised (dequantize returns float32). */
  readonly sourceDtype: DType;
  readonly blockSize: number;
  /**
   * The codes: int8 → one two's-complement byte per element (see {@link int8Codes}); dynamic →
   * one map index per element; NF4/FP4 → two 4-bit codes per byte, element 2j in the high nibble.
   */
  readonly codes: Uint8Array;
  readonly scales: BlockScales;
}

/** Byte accounting of a quantised tensor (the code book itself is a fixed constant and not counted). */
export interface QuantizedByteSize {
  readonly codes: number;
  /** float32 absmax per block, or (nested) one byte per block + float32 nested absmax + float32 offset. */
  readonly scales: number;
  readonly total: number;
  /** total · 8 / numel (NaN for an empty tensor). */
  readonly bitsPerElement: number;
  /** The same tensor stored densely in float32, for comparison. */
  readonly float32Bytes: number;
}

const FLOAT_DTYPES: readonly DType[] = ["float32", "float16", "bfloat16", "float64"];

function allowedBlockSizes(kind: QuantKind): readonly number[] {
  const min = kind === "nf4" || kind === "fp4" ? 32 : 64;
  const out: number[] = [];
  for (let b = min; b <= 4096; b *= 2) out.push(b);
  return out;
}

function checkBlockSize(kind: QuantKind, blockSize: number): void {
  const allowed = allowedBlockSizes(kind);
  if (!allowed.includes(blockSize)) {
    throw new QuantSchemeError(kind, "blockSize", blockSize, `is not allowed; use one of ${allowed.join(", ")}`);
  }
}

let signedMap: Float32Array | undefined;
let unsignedMap: Float32Array | undefined;

/** The code book a scheme dequantises through (null for int8, whose codes are the integers −127…127). */
export function codebookFor(kind: QuantKind): Float32Array | null {
  switch (kind) {
    case "int8":
      return null;
    case "dynamic":
      return (signedMap ??= createDynamicMap(true));
    case "dynamic-unsigned":
      return (unsignedMap ??= createDynamicMap(false));
    case "nf4":
      return NF4_CODE;
    case "fp4":
      return FP4_CODE;
  }
}

function inputData(t: Tensor | Float32Array, name: string, kind: QuantKind): { data: Float32Array; shape: readonly number[]; dtype: DType } {
  if (t instanceof Float32Array) return { data: t, shape: [t.length], dtype: "float32" };
  if (!FLOAT_DTYPES.includes(t.dtype)) {
    throw new QuantSchemeError(kind, "dtype", t.dtype, `of tensor '${name}' cannot be quantised; pass a float32/float16/bfloat16/float64 tensor`);
  }
  if (t.data.length !== numel(t.shape)) {
    throw new ShapeMismatchError(name, t.shape, [t.data.length], "tensor data length does not match its shape");
  }
  return { data: toFloat32(t), shape: t.shape, dtype: t.dtype };
}

function checkFinite(data: Float32Array, name: string, kind: QuantKind): void {
  for (let i = 0; i < data.length; i++) {
    const v = data[i]!;
    if (!Number.isFinite(v)) throw new NonFiniteValueError(name, i, v, `quantisation (${kind})`);
    if (kind === "dynamic-unsigned" && v < 0) {
      throw new QuantRangeError(name, i, v, "is negative but the unsigned dynamic map only holds values in [0, 1]; use kind 'dynamic'");
    }
  }
}

/** Quantises a float tensor (or a flat Float32Array) with `scheme`; `name` labels errors. */
export function quantize(t: Tensor | Float32Array, scheme: QuantScheme, name = "tensor"): QuantizedTensor {
  const kind = scheme.kind;
  if (!QUANT_KINDS.includes(kind)) {
    throw new QuantSchemeError(String(kind), "kind", kind, `is unknown; use one of ${QUANT_KINDS.join(", ")}`);
  }
  const blockSize = scheme.blockSize ?? DEFAULT_BLOCK_SIZE[kind];
  checkBlockSize(kind, blockSize);
  const { data, shape, dtype } = inputData(t, name, kind);
  checkFinite(data, name, kind);

  let codes: Uint8Array;
  let absmax: Float32Array;
  if (kind === "int8") {
    const r = quantizeInt8Absmax(data, blockSize);
    codes = new Uint8Array(r.codes.buffer, r.codes.byteOffset, r.codes.length);
    absmax = r.absmax;
  } else if (kind === "nf4" || kind === "fp4") {
    const r = quantize4bit(data, blockSize, kind, codebookFor(kind)!);
    codes = r.packed;
    absmax = r.absmax;
  } else {
    const r = quantizeToSortedCodebook(data, blockSize, codebookFor(kind)!);
    codes = r.codes;
    absmax = r.absmax;
  }
  const nestedBlock = kind === "dynamic" || kind === "dynamic-unsigned" ? blockSize : NESTED_BLOCK_SIZE_4BIT;
  const scales: BlockScales = scheme.doubleQuant ? quantizeScales(absmax, nestedBlock) : { kind: "float32", absmax };
  return { kind, shape: [...shape], sourceDtype: dtype, blockSize, codes, scales };
}

/** Double quantisation of per-block absmax values (bitsandbytes: offset = mean, signed dynamic map). */
export function quantizeScales(absmax: Float32Array, blockSize: number): BlockScales {
  let sum = 0;
  for (let i = 0; i < absmax.length; i++) sum += absmax[i]!;
  const offset = absmax.length === 0 ? 0 : Math.fround(sum / absmax.length);
  const centred = Float32Array.from(absmax, (a) => a - offset);
  const r = quantizeToSortedCodebook(centred, blockSize, codebookFor("dynamic")!);
  return { kind: "nested", codes: r.codes, absmax: r.absmax, offset, blockSize };
}

/** The per-block absmax that dequantisation multiplies by (dequantising the nested scales if needed). */
export function blockAbsmax(q: QuantizedTensor): Float32Array {
  const s = q.scales;
  if (s.kind === "float32") return s.absmax;
  const code = codebookFor("dynamic")!;
  const out = dequantizeBlocks(s.codes.length, s.blockSize, s.absmax, (i) => code[s.codes[i]!]!);
  for (let i = 0; i < out.length; i++) out[i] = out[i]! + s.offset;
  return out;
}

/** The int8 codes of an `"int8"` quantised tensor as an Int8Array view (no copy). */
export function int8Codes(q: QuantizedTensor): Int8Array {
  if (q.kind !== "int8") throw new QuantizedTensorError("int8Codes", `scheme is '${q.kind}', not 'int8'`);
  return new Int8Array(q.codes.buffer, q.codes.byteOffset, q.codes.length);
}

/** Checks that a QuantizedTensor's parts agree with each other; throws QuantizedTensorError. */
export function validateQuantized(q: QuantizedTensor, name = "tensor"): void {
  if (!QUANT_KINDS.includes(q.kind)) throw new QuantizedTensorError(name, `unknown scheme '${String(q.kind)}'`);
  if (!q.shape.every((d) => Number.isInteger(d) && d >= 0)) {
    throw new QuantizedTensorError(name, `shape [${q.shape.join(", ")}] has a negative or fractional dimension`);
  }
  if (!allowedBlockSizes(q.kind).includes(q.blockSize)) {
    throw new QuantizedTensorError(name, `block size ${q.blockSize} is not allowed for '${q.kind}'`);
  }
  const n = numel(q.shape);
  const wantCodes = q.kind === "nf4" || q.kind === "fp4" ? Math.ceil(n / 2) : n;
  if (q.codes.length !== wantCodes) {
    throw new QuantizedTensorError(name, `has ${q.codes.length} code bytes but shape [${q.shape.join(", ")}] needs ${wantCodes}`);
  }
  const nb = numBlocks(n, q.blockSize);
  const s = q.scales;
  if (s.kind === "float32") {
    if (s.absmax.length !== nb) throw new QuantizedTensorError(name, `has ${s.absmax.length} block scales but ${nb} blocks`);
  } else {
    if (s.codes.length !== nb) throw new QuantizedTensorError(name, `has ${s.codes.length} nested scale codes but ${nb} blocks`);
    if (!(Number.isInteger(s.blockSize) && s.blockSize > 0)) {
      throw new QuantizedTensorError(name, `nested block size ${s.blockSize} is not a positive integer`);
    }
    const nn = numBlocks(nb, s.blockSize);
    if (s.absmax.length !== nn) throw new QuantizedTensorError(name, `has ${s.absmax.length} nested absmax values but ${nn} nested blocks`);
    if (!Number.isFinite(s.offset)) throw new QuantizedTensorError(name, `nested offset ${s.offset} is not finite`);
  }
}

/** Dequantises to a float32 tensor of the original shape (bitsandbytes' `dequantize_blockwise` / `dequantize_4bit`). */
export function dequantize(q: QuantizedTensor, name = "tensor"): Tensor<"float32"> {
  validateQuantized(q, name);
  const n = numel(q.shape);
  const absmax = blockAbsmax(q);
  let out: Float32Array;
  if (q.kind === "int8") {
    const codes = int8Codes(q);
    const scales = Float32Array.from(absmax, int8Scale);
    out = dequantizeBlocks(n, q.blockSize, scales, (i) => codes[i]!);
  } else if (q.kind === "nf4" || q.kind === "fp4") {
    const code = codebookFor(q.kind)!;
    out = dequantizeBlocks(n, q.blockSize, absmax, (i) => code[unpackNibble(q.codes, i)]!);
  } else {
    const code = codebookFor(q.kind)!;
    out = dequantizeBlocks(n, q.blockSize, absmax, (i) => code[q.codes[i]!]!);
  }
  return tensor("float32", q.shape, out);
}

/** Bytes a quantised tensor occupies (codes + scales), and its bits per element. */
export function quantizedByteSize(q: QuantizedTensor): QuantizedByteSize {
  const n = numel(q.shape);
  const s = q.scales;
  const scales = s.kind === "float32" ? 4 * s.absmax.length : s.codes.length + 4 * s.absmax.length + 4;
  const total = q.codes.length + scales;
  return { codes: q.codes.length, scales, total, bitsPerElement: n === 0 ? NaN : (total * 8) / n, float32Bytes: 4 * n };
}
