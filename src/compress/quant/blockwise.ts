/**
 * Block-wise quantisation kernels, following bitsandbytes' reference (PyTorch) backend
 * (`bitsandbytes/backends/default/ops.py`):
 *
 * - The flat tensor is cut into blocks of `blockSize`; a last partial block (length not a
 *   multiple of the block size) gets its own absmax over the remaining elements, exactly as
 *   bitsandbytes does. There are ceil(n / blockSize) blocks.
 * - Full blocks store their raw absmax and scale by the float32 reciprocal
 *   1 / max(absmax, 1e-38); the partial block stores max(absmax, 1e-38) and divides by it.
 *   The normalised value is clamped to [−1, 1].
 * - Nearest code: with float32 boundaries (c[i] + c[i+1]) / 2, a value equal to a boundary
 *   goes to the lower code (`torch.bucketize`, right=False).
 * - Dequantisation is code[q] · absmax[block] in float32.
 *
 * All loops are plain float32 arithmetic (`Math.fround` at each step) so the codes are the
 * ones bitsandbytes' CPU path produces for the same float32 input.
 */
import { codebookBounds } from "./codebooks.js";
import { roundHalfEven } from "./float32.js";

/** float32(1e-38), bitsandbytes' clamp for the absmax divisor. */
export const ABSMAX_FLOOR = Math.fround(1e-38);

export function numBlocks(n: number, blockSize: number): number {
  return Math.ceil(n / blockSize);
}

/**
 * Calls `emit(i, scaled)` for every element with its block-normalised value (bitsandbytes'
 * rules above) and returns the per-block absmax that bitsandbytes stores.
 */
export function normaliseBlocks(x: Float32Array, blockSize: number, emit: (i: number, scaled: number) => void): Float32Array {
  const n = x.length;
  const nb = numBlocks(n, blockSize);
  const absmax = new Float32Array(nb);
  for (let b = 0; b < nb; b++) {
    const start = b * blockSize;
    const end = Math.min(n, start + blockSize);
    let am = 0;
    for (let i = start; i < end; i++) {
      const a = Math.abs(x[i]!);
      if (a > am) am = a;
    }
    if (end - start === blockSize) {
      absmax[b] = am;
      const inv = Math.fround(1 / Math.max(am, ABSMAX_FLOOR));
      for (let i = start; i < end; i++) emit(i, clamp1(Math.fround(x[i]! * inv)));
    } else {
      const d = Math.max(am, ABSMAX_FLOOR);
      absmax[b] = d;
      for (let i = start; i < end; i++) emit(i, clamp1(Math.fround(x[i]! / d)));
    }
  }
  return absmax;
}

function clamp1(v: number): number {
  return v > 1 ? 1 : v < -1 ? -1 : v;
}

/** Index of the nearest code: the number of boundaries strictly below `v`. */
export function nearestIndex(bounds: Float32Array, v: number): number {
  let lo = 0;
  let hi = bounds.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (bounds[mid]! < v) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** Block-wise quantisation to a sorted 8-bit code book (the dynamic maps): one code per element. */
export function quantizeToSortedCodebook(
  x: Float32Array,
  blockSize: number,
  sortedCode: Float32Array,
): { codes: Uint8Array; absmax: Float32Array } {
  const bounds = codebookBounds(sortedCode);
  const codes = new Uint8Array(x.length);
  const absmax = normaliseBlocks(x, blockSize, (i, v) => {
    codes[i] = nearestIndex(bounds, v);
  });
  return { codes, absmax };
}

/** Code of 0.0 for NF4 (index 7 of the sorted table). */
export const NF4_ZERO_CODE = 7;

/**
 * The FP4 magnitudes (bits 0–2) in increasing order: 0, 0.0625, 2, 3, 4, 6, 8, 12 (÷12) have
 * codes 0b000, 0b001, 0b110, 0b111, 0b100, 0b101, 0b010, 0b011.
 */
const FP4_MAGNITUDE_CODES = [0b000, 0b001, 0b110, 0b111, 0b100, 0b101, 0b010, 0b011] as const;

function fp4Encoder(fp4: Float32Array): (v: number) => number {
  const mags = Float32Array.from(FP4_MAGNITUDE_CODES, (c) => fp4[c]!);
  const bounds = codebookBounds(mags);
  // The sign bit is set for negative values (as the CUDA kernel does), so −0 is only produced
  // for small negative inputs; the magnitude goes to the nearest FP4 magnitude, ties down.
  return (v) => (v < 0 ? 0b1000 : 0) | FP4_MAGNITUDE_CODES[nearestIndex(bounds, Math.abs(v))]!;
}

/**
 * Block-wise 4-bit quantisation (NF4 or FP4), packed two codes per byte: element 2j in the
 * high nibble, element 2j+1 in the low nibble (bitsandbytes' order). An odd element count pads
 * the last low nibble with the code of 0.0.
 */
export function quantize4bit(
  x: Float32Array,
  blockSize: number,
  kind: "nf4" | "fp4",
  table: Float32Array,
): { packed: Uint8Array; absmax: Float32Array } {
  const packed = new Uint8Array(Math.ceil(x.length / 2));
  let encode: (v: number) => number;
  if (kind === "nf4") {
    const bounds = codebookBounds(table);
    encode = (v) => nearestIndex(bounds, v);
  } else {
    encode = fp4Encoder(table);
  }
  const absmax = normaliseBlocks(x, blockSize, (i, v) => {
    const c = encode(v);
    packed[i >> 1] |= i & 1 ? c : c << 4;
  });
  if (x.length % 2 === 1) packed[packed.length - 1] |= encode(0);
  return { packed, absmax };
}

/** The 4-bit code of element i of a packed array (high nibble first). */
export function unpackNibble(packed: Uint8Array, i: number): number {
  const byte = packed[i >> 1]!;
  return i & 1 ? byte & 0x0f : byte >> 4;
}

/** One 4-bit code per element (unpacked), for `n` elements. */
export function unpack4bit(packed: Uint8Array, n: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = unpackNibble(packed, i);
  return out;
}

/**
 * Block-wise symmetric int8 (absmax) quantisation: q = round(x · (127 / absmax)) (round half to
 * even, float32 arithmetic, like bitsandbytes' `int8_vectorwise_quant` but per block). The
 * stored absmax is the block's raw absmax (0 for an all-zero block, whose codes are all 0).
 */
export function quantizeInt8Absmax(x: Float32Array, blockSize: number): { codes: Int8Array; absmax: Float32Array } {
  const n = x.length;
  const nb = numBlocks(n, blockSize);
  const codes = new Int8Array(n);
  const absmax = new Float32Array(nb);
  for (let b = 0; b < nb; b++) {
    const start = b * blockSize;
    const end = Math.min(n, start + blockSize);
    let am = 0;
    for (let i = start; i < end; i++) {
      const a = Math.abs(x[i]!);
      if (a > am) am = a;
    }
    absmax[b] = am;
    if (am === 0) continue;
    const mul = Math.fround(127 / am);
    for (let i = start; i < end; i++) {
      const q = roundHalfEven(Math.fround(x[i]! * mul));
      codes[i] = q > 127 ? 127 : q < -127 ? -127 : q;
    }
  }
  return { codes, absmax };
}

/** The int8 dequantisation scale of a block: absmax / 127 in float32 (DequantizeLinear's `x_scale`). */
export function int8Scale(absmax: number): number {
  return Math.fround(absmax / 127);
}

/** out[i] = code(i) · absmax[block(i)] in float32, for `n` elements. */
export function dequantizeBlocks(
  n: number,
  blockSize: number,
  absmax: Float32Array,
  valueOf: (i: number) => number,
): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = valueOf(i) * absmax[Math.floor(i / blockSize)]!;
  return out;
}
