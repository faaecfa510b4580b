/**
 * Single-precision arithmetic helpers. The bitsandbytes code books and kernels compute in
 * float32 (PyTorch CPU kernels), so reproducing their exact bits needs every intermediate
 * rounded to float32 the way the C++ compiler does it, including a fused multiply-add where
 * PyTorch's `linspace` kernel is contracted to one.
 */

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** The float32 next to `x` (a float32 value) in direction `dir` (+1 up, -1 down). */
function nextF32(x: number, dir: 1 | -1): number {
  if (x === 0) return dir * 2 ** -149;
  f32[0] = x;
  // For positive x moving up (or negative x moving down) the magnitude grows: bits + 1.
  u32[0] = x > 0 === dir > 0 ? u32[0]! + 1 : u32[0]! - 1;
  return f32[0]!;
}

/**
 * `fmaf(a, b, c)`: a·b + c for float32 inputs with a single rounding to float32. The product
 * of two float32 values is exact in float64; the float64 sum can round once more, which only
 * matters when it lands exactly on a float32 tie, and the TwoSum error term settles that case.
 */
export function fmaF32(a: number, b: number, c: number): number {
  const p = a * b;
  const s = p + c;
  const bv = s - p;
  const err = p - (s - bv) + (c - bv);
  const r = Math.fround(s);
  if (err === 0 || r === s) return r;
  const other = nextF32(r, s > r ? 1 : -1);
  if (Math.abs(s - r) !== Math.abs(other - s)) return r;
  // s is exactly halfway between r and other: the exact sum lies on the side err points to.
  return err > 0 ? Math.max(r, other) : Math.min(r, other);
}

/**
 * `torch.linspace(start, end, steps, dtype=torch.float32)` on the CPU: step = (end − start) /
 * (steps − 1) in float32, the first half counted up from `start`, the second half counted
 * down from `end`, each point one fused multiply-add (the kernel is built with FMA contraction;
 * bitsandbytes' published dynamic-map values match this and not separate rounding).
 */
export function linspaceF32(start: number, end: number, steps: number): Float32Array {
  const out = new Float32Array(steps);
  if (steps === 1) {
    out[0] = start;
    return out;
  }
  const s = Math.fround(start);
  const e = Math.fround(end);
  const step = Math.fround(Math.fround(e - s) / (steps - 1));
  const halfway = Math.floor(steps / 2);
  for (let i = 0; i < steps; i++) {
    out[i] = i < halfway ? fmaF32(step, i, s) : fmaF32(-step, steps - i - 1, e);
  }
  return out;
}

/** Round half to even (what `torch.round` does), for finite numbers. */
export function roundHalfEven(x: number): number {
  const r = Math.round(x);
  // Math.round rounds .5 up; step back when that landed on an odd integer from an exact tie.
  return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** Sum of float32 values accumulated in float64, returned as float64. */
export function sumF64(data: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < data.length; i++) s += data[i]!;
  return s;
}
