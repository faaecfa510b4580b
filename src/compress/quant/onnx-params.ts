/**
 * Host-side arrays an ONNX graph needs to dequantise a {@link QuantizedTensor} inside the graph.
 * This module builds no graph; it hands the graph builder initialisers whose in-graph result is
 * bit-identical to `dequantize(q)`.
 *
 * int8 (`kind: "dequantize-linear"`), opset 21 blocked quantisation:
 *
 *     x       = initializer int8  [numel]            (params.x)
 *     x_scale = initializer float [numBlocks]        (params.scale = absmax / 127)
 *     y       = DequantizeLinear(x, x_scale; axis=0, block_size=blockSize)   -- no zero point
 *     W       = Reshape(y, shape)
 *
 * Opset 21 allows a partial last block: x_scale has ceil(numel / blockSize) entries.
 *
 * Code books (`kind: "gather-codebook"`: dynamic maps, NF4, FP4):
 *
 *     idx   = initializer uint8 [numBlocks · blockSize]  (params.indices, padded with zeroIndex)
 *     book  = initializer float [codebook.length]        (params.codebook)
 *     s     = initializer float [numBlocks, 1]           (params.scales)
 *     v     = Gather(book, Cast(idx, to=INT32), axis=0)  -- Gather needs int32/int64 indices
 *     y     = Mul(Reshape(v, [numBlocks, blockSize]), s)
 *     W     = Reshape(Slice(Reshape(y, [-1]), starts=[0], ends=[numel]), shape)
 *
 * For NF4/FP4 `packed` holds the bitsandbytes bytes (two codes per byte, high nibble first) for a
 * graph that unpacks with BitShift/BitwiseAnd instead of storing one byte per code.
 *
 * With double quantisation `scales` are already the dequantised float32 absmax; `nested` carries
 * the raw nested state (codes into the signed dynamic map, nested absmax, offset) for a graph that
 * wants to dequantise the scales in-graph too: scales = Gather(map, codes) · nestedAbsmax[i / nestedBlock] + offset.
 */
import { numel } from "../../tensor.js";
import { int8Scale, NF4_ZERO_CODE, numBlocks, unpack4bit } from "./blockwise.js";
import { blockAbsmax, codebookFor, int8Codes, validateQuantized, type QuantizedTensor } from "./quantize.js";

export interface NestedScaleParams {
  /** The signed dynamic map (256 float32 values). */
  readonly codebook: Float32Array;
  readonly codes: Uint8Array;
  readonly absmax: Float32Array;
  readonly offset: number;
  readonly blockSize: number;
}

export interface DequantizeLinearParams {
  readonly kind: "dequantize-linear";
  /** Minimum ONNX opset for blocked DequantizeLinear. */
  readonly opset: 21;
  readonly x: Int8Array;
  /** Per-block scale absmax / 127 (float32), shape [numBlocks]. */
  readonly scale: Float32Array;
  readonly axis: 0;
  readonly blockSize: number;
  readonly numBlocks: number;
  readonly numel: number;
  readonly shape: readonly number[];
  readonly nested: NestedScaleParams | null;
}

export interface GatherCodebookParams {
  readonly kind: "gather-codebook";
  readonly codebook: Float32Array;
  /** One code per element, padded to numBlocks · blockSize with `zeroIndex`. */
  readonly indices: Uint8Array;
  /** The index of 0.0 in the code book (used for padding). */
  readonly zeroIndex: number;
  /** Per-block absmax (float32), shape [numBlocks]. */
  readonly scales: Float32Array;
  readonly blockSize: number;
  readonly numBlocks: number;
  readonly numel: number;
  readonly shape: readonly number[];
  /** NF4/FP4 only: the packed bytes (high nibble = even element); null for 8-bit maps. */
  readonly packed: Uint8Array | null;
  readonly nested: NestedScaleParams | null;
}

export type OnnxDequantParams = DequantizeLinearParams | GatherCodebookParams;

function nestedParams(q: QuantizedTensor): NestedScaleParams | null {
  const s = q.scales;
  if (s.kind === "float32") return null;
  return { codebook: codebookFor("dynamic")!, codes: s.codes, absmax: s.absmax, offset: s.offset, blockSize: s.blockSize };
}

/** The initialiser arrays and attributes an ONNX graph needs to dequantise `q` (see the module comment). */
export function onnxDequantParams(q: QuantizedTensor, name = "tensor"): OnnxDequantParams {
  validateQuantized(q, name);
  const n = numel(q.shape);
  const nb = numBlocks(n, q.blockSize);
  const absmax = blockAbsmax(q);
  const nested = nestedParams(q);
  if (q.kind === "int8") {
    return {
      kind: "dequantize-linear",
      opset: 21,
      x: int8Codes(q),
      scale: Float32Array.from(absmax, int8Scale),
      axis: 0,
      blockSize: q.blockSize,
      numBlocks: nb,
      numel: n,
      shape: [...q.shape],
      nested,
    };
  }
  const codebook = codebookFor(q.kind)!;
  const fourBit = q.kind === "nf4" || q.kind === "fp4";
  const zeroIndex = q.kind === "nf4" ? NF4_ZERO_CODE : fourBit ? 0 : codebook.indexOf(0);
  const indices = new Uint8Array(nb * q.blockSize).fill(zeroIndex);
  indices.set(fourBit ? unpack4bit(q.codes, n) : q.codes);
  return {
    kind: "gather-codebook",
    codebook,
    indices,
    zeroIndex,
    scales: absmax,
    blockSize: q.blockSize,
    numBlocks: nb,
    numel: n,
    shape: [...q.shape],
    packed: fourBit ? q.codes : null,
    nested,
  };
}

/**
 * Evaluates the in-graph recipe of {@link onnxDequantParams} on the host, step by step as the ONNX
 * ops would (Gather, Mul with broadcast, Slice; or DequantizeLinear). Tests use it to check the
 * arrays reproduce `dequantize(q)` exactly; a graph builder can use it as a reference.
 */
export function evaluateOnnxDequant(p: OnnxDequantParams): Float32Array {
  if (p.kind === "dequantize-linear") {
    const out = new Float32Array(p.numel);
    for (let i = 0; i < p.numel; i++) out[i] = p.x[i]! * p.scale[Math.floor(i / p.blockSize)]!;
    return out;
  }
  const full = new Float32Array(p.numBlocks * p.blockSize);
  for (let i = 0; i < full.length; i++) full[i] = p.codebook[p.indices[i]!]! * p.scales[Math.floor(i / p.blockSize)]!;
  return full.slice(0, p.numel);
}
