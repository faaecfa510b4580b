/**
 * PyTorch's CPU random generator (`torch.Generator("cpu")`, also the global one behind
 * `torch.manual_seed`), reproduced so that peft-ts can draw the same numbers PEFT draws: VeRA's
 * shared projections from `projection_prng_key` and FourierFT's `randperm` (`kaimingUniformBound`
 * gives nn.init's Kaiming-uniform bound; the tests reproduce nn.Linear's default init with it).
 *
 * The generator is a standard 32-bit Mersenne Twister (mt19937): `manual_seed(s)` is the
 * reference `init_genrand(s mod 2^32)` and `random()` is the next tempered 32-bit output.
 * `uniform_(from, to)` on a float32 CPU tensor is a serial loop in memory order: each element
 * takes one output, keeps its low 24 bits, x = bits·2^-24, and returns x·(to − from) + from in
 * float32 with one rounding (from and to rounded to float32 first; see `fmaFloat32`). Only float32 draws are reproduced here
 * (float64 tensors use two outputs and 53 bits).
 */

const N = 624;
const M = 397;
const MATRIX_A = 0x9908b0df;
const UPPER = 0x80000000;
const LOWER = 0x7fffffff;
const TWO_POW_M24 = 2 ** -24;

const f32 = Math.fround;

/**
 * fma(a, b, c) rounded once to float32, for float32 a, b, c: torch's CPU build evaluates
 * x·(to − from) + from with a single rounding (the compiler contracts it into a fused
 * multiply-add; the PEFT fixtures' LoRA factors, made with torch 2.11 on CPU, match only this way,
 * not with two float32 roundings). a·b is exact in float64 (24 + 24 bits); the float64 sum s = a·b + c
 * rounds to the same float32 as the exact sum except when s lands exactly on a midpoint
 * between two float32 values, where the sum's rounding error decides the side.
 */
export function fmaFloat32(a: number, b: number, c: number): number {
  const p = a * b;
  const s = p + c;
  const r = f32(s);
  if (r === s || !Number.isFinite(s)) return r;
  // the float32 neighbour on the other side of s, and whether s is their midpoint
  const other = nextFloat32Toward(r, s);
  if ((r + other) / 2 !== s) return r;
  // two-sum: the exact sum is s + err
  const bb = s - p;
  const err = p - (s - bb) + (c - bb);
  if (err === 0) return r; // a true tie: f32() already rounded it to even
  const up = err > 0;
  return up === (other > r) ? other : r;
}

const scratch = new Float32Array(1);
const scratchBits = new Uint32Array(scratch.buffer);

/** The float32 next to `r` (a float32) in the direction of `toward`. */
function nextFloat32Toward(r: number, toward: number): number {
  if (r === 0) return toward > 0 ? 2 ** -149 : -(2 ** -149);
  scratch[0] = r;
  // away from zero when |toward| > |r|, else towards zero
  scratchBits[0] = scratchBits[0]! + (Math.abs(toward) > Math.abs(r) ? 1 : -1);
  return scratch[0]!;
}

export class TorchGenerator {
  private readonly mt = new Uint32Array(N);
  private index = N;

  /**
   * `torch.Generator("cpu").manual_seed(seed)`: the low 32 bits of the seed (a negative seed is
   * taken as its 64-bit two's complement, as torch does).
   */
  constructor(seed: number) {
    if (!Number.isSafeInteger(seed)) throw new RangeError(`TorchGenerator: seed must be a safe integer, got ${seed}`);
    const mt = this.mt;
    mt[0] = ((seed % 2 ** 32) + 2 ** 32) % 2 ** 32;
    for (let i = 1; i < N; i++) {
      const prev = mt[i - 1]! ^ (mt[i - 1]! >>> 30);
      mt[i] = (Math.imul(1812433253, prev) + i) >>> 0;
    }
  }

  private twist(): void {
    const mt = this.mt;
    for (let i = 0; i < N; i++) {
      const y = (mt[i]! & UPPER) | (mt[(i + 1) % N]! & LOWER);
      mt[i] = mt[(i + M) % N]! ^ (y >>> 1) ^ (y & 1 ? MATRIX_A : 0);
    }
    this.index = 0;
  }

  /** The next 32-bit output (`generator.random()`), an integer in [0, 2^32). */
  random(): number {
    if (this.index >= N) this.twist();
    let y = this.mt[this.index++]!;
    y ^= y >>> 11;
    y ^= (y << 7) & 0x9d2c5680;
    y ^= (y << 15) & 0xefc60000;
    y ^= y >>> 18;
    return y >>> 0;
  }

  /** One float32 draw of `uniform_(from, to)`. */
  uniformFloat32(from: number, to: number): number {
    const lo = f32(from);
    const span = f32(f32(to) - lo);
    return fmaFloat32((this.random() & 0xffffff) * TWO_POW_M24, span, lo);
  }

  /** `torch.empty(n).uniform_(from, to, generator=g)` for float32: `n` draws in order. */
  uniform(n: number, from: number, to: number): Float32Array {
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) out[i] = this.uniformFloat32(from, to);
    return out;
  }

  /** `torch.rand(n, generator=g)` (float32). */
  rand(n: number): Float32Array {
    return this.uniform(n, 0, 1);
  }
}

/**
 * torch.nn.init's `calculate_gain("leaky_relu", a)` · √3 / √fan_in: the bound of
 * `kaiming_uniform_(w, a, mode="fan_in")`, computed in float64 in torch's order.
 */
export function kaimingUniformBound(fanIn: number, a: number): number {
  const gain = Math.sqrt(2.0 / (1 + a ** 2));
  const std = gain / Math.sqrt(fanIn);
  return Math.sqrt(3.0) * std;
}
