/**
 * A seeded, serialisable pseudo-random number generator for training (data order, splits,
 * initialisation, dropout masks).
 *
 * Algorithm: xoshiro128** (Blackman & Vigna) on four 32-bit words, seeded from an integer by
 * splitmix32. Its whole state is four uint32 numbers plus the cached second Box–Muller value,
 * so `state()` / `Rng.fromState()` restore a stream exactly (a checkpoint stores it as JSON).
 */
import { ConfigError } from "../errors.js";

/** The plain-number state of an `Rng`; JSON-serialisable. */
export interface RngState {
  readonly algorithm: "xoshiro128**";
  /** The four 32-bit state words (each an integer in [0, 2^32)). */
  readonly s: readonly [number, number, number, number];
  /** The second value of the last Box–Muller pair, not yet returned by `normal()`, or null. */
  readonly spareNormal: number | null;
}

const TWO_POW_32 = 4294967296;
const TWO_POW_53 = 9007199254740992;

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}

/** splitmix32 step: returns [next state, output]. */
function splitmix32(state: number): [number, number] {
  const next = (state + 0x9e3779b9) >>> 0;
  let z = next;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
  return [next, (z ^ (z >>> 16)) >>> 0];
}

/** FNV-1a over the UTF-16 code units of a label. */
function fnv1a(label: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < label.length; i++) {
    h ^= label.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h >>> 0;
}

function fill(words: number[]): [number, number, number, number] {
  let st = 0;
  const out: number[] = [];
  for (let i = 0; i < 4; i++) {
    let v: number;
    [st, v] = splitmix32((st ^ (words[i % words.length] ?? 0)) >>> 0);
    // Mix every input word into every state word.
    for (const w of words) [st, v] = splitmix32((st ^ w ^ v) >>> 0);
    out.push(v);
  }
  if (!out.some((w) => w !== 0)) out[0] = 1; // the all-zero state is a fixed point
  return out as [number, number, number, number];
}

export class Rng {
  private s0: number;
  private s1: number;
  private s2: number;
  private s3: number;
  private spare: number | null = null;

  /**
   * Seeds the generator from a non-negative safe integer (both 32-bit halves are used), so
   * `new Rng(42)` gives the same stream on every machine and Node version.
   */
  constructor(seed: number) {
    if (!Number.isSafeInteger(seed) || seed < 0) {
      throw new ConfigError("<rng>", "seed", `seed must be a non-negative safe integer, got ${seed}`);
    }
    const lo = seed >>> 0;
    const hi = Math.floor(seed / TWO_POW_32) >>> 0;
    [this.s0, this.s1, this.s2, this.s3] = fill([lo, hi]);
  }

  /** Rebuilds a generator from `state()` output; the new one continues the same stream. */
  static fromState(state: RngState): Rng {
    if (state.algorithm !== "xoshiro128**") {
      throw new ConfigError("<rng state>", "algorithm", `unknown RNG algorithm '${String(state.algorithm)}', expected 'xoshiro128**'`);
    }
    const s = state.s;
    if (!Array.isArray(s) || s.length !== 4 || !s.every((w) => Number.isInteger(w) && w >= 0 && w < TWO_POW_32)) {
      throw new ConfigError("<rng state>", "s", "state must be four integers in [0, 2^32)");
    }
    if (!s.some((w) => w !== 0)) throw new ConfigError("<rng state>", "s", "the all-zero state is invalid for xoshiro128**");
    if (state.spareNormal !== null && typeof state.spareNormal !== "number") {
      throw new ConfigError("<rng state>", "spareNormal", "must be a number or null");
    }
    const r = Object.create(Rng.prototype) as Rng;
    [r.s0, r.s1, r.s2, r.s3] = s;
    r.spare = state.spareNormal;
    return r;
  }

  /** A copy of the current state as plain numbers. */
  state(): RngState {
    return { algorithm: "xoshiro128**", s: [this.s0, this.s1, this.s2, this.s3], spareNormal: this.spare };
  }

  /** The next raw 32-bit output, an integer in [0, 2^32). */
  nextUint32(): number {
    const result = Math.imul(rotl(Math.imul(this.s1, 5) >>> 0, 7), 9) >>> 0;
    const t = (this.s1 << 9) >>> 0;
    this.s2 = (this.s2 ^ this.s0) >>> 0;
    this.s3 = (this.s3 ^ this.s1) >>> 0;
    this.s1 = (this.s1 ^ this.s2) >>> 0;
    this.s0 = (this.s0 ^ this.s3) >>> 0;
    this.s2 = (this.s2 ^ t) >>> 0;
    this.s3 = rotl(this.s3, 11);
    return result;
  }

  /** A uniform double in [0, 1) with 53 random bits (two 32-bit outputs). */
  uniform(): number {
    const a = this.nextUint32() >>> 5; // 27 bits
    const b = this.nextUint32() >>> 6; // 26 bits
    return (a * 67108864 + b) / TWO_POW_53;
  }

  /**
   * A standard normal sample (Box–Muller). Each pair of uniforms gives two samples; the second
   * is cached (and kept in `state()`), so the stream does not depend on how calls interleave
   * with a restore.
   */
  normal(mean = 0, std = 1): number {
    if (this.spare !== null) {
      const z = this.spare;
      this.spare = null;
      return mean + std * z;
    }
    const u1 = 1 - this.uniform(); // (0, 1], so log() is finite
    const u2 = this.uniform();
    const r = Math.sqrt(-2 * Math.log(u1));
    const theta = 2 * Math.PI * u2;
    this.spare = r * Math.sin(theta);
    return mean + std * r * Math.cos(theta);
  }

  /** A uniform integer in [0, n), unbiased (rejection sampling); n is an integer in [1, 2^32]. */
  int(n: number): number {
    if (!Number.isInteger(n) || n < 1 || n > TWO_POW_32) {
      throw new RangeError(`Rng.int(n): n must be an integer in [1, 2^32], got ${n}`);
    }
    const limit = TWO_POW_32 - (TWO_POW_32 % n);
    for (;;) {
      const x = this.nextUint32();
      if (x < limit) return x % n;
    }
  }

  /** Shuffles `array` in place (Fisher–Yates, from the end) and returns it. */
  shuffle<A extends { length: number; [i: number]: unknown }>(array: A): A {
    for (let i = array.length - 1; i > 0; i--) {
      const j = this.int(i + 1);
      const tmp = array[i];
      array[i] = array[j];
      array[j] = tmp;
    }
    return array;
  }

  /** A random permutation of 0..n-1. */
  permutation(n: number): Int32Array {
    const p = new Int32Array(n);
    for (let i = 0; i < n; i++) p[i] = i;
    return this.shuffle(p);
  }

  /**
   * An independent generator derived from this one's current state and `label`, without
   * advancing this one. The same state and label always give the same child stream; different
   * labels give unrelated streams (e.g. `rng.fork("data")`, `rng.fork("dropout")`).
   */
  fork(label: string): Rng {
    const child = Object.create(Rng.prototype) as Rng;
    [child.s0, child.s1, child.s2, child.s3] = fill([this.s0, this.s1, this.s2, this.s3, fnv1a(label), label.length]);
    child.spare = null;
    return child;
  }
}
