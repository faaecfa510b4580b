/**
 * Random projections P: R^d → R^D for subspace training (Li et al., "Measuring the Intrinsic
 * Dimension of Objective Landscapes", 2018): θ = θ₀ + P·d. Each is built as graph nodes on the
 * input `d`, so the model, its loss and ∂loss/∂d stay one graph (reverse-mode autodiff runs back
 * through the projection).
 *
 * - `identity` (d = D): P = I, ordinary training of the same parameters.
 * - `dense`: P [D, d] with N(0, 1) entries, each column scaled to unit norm (seeded). Memory D·d,
 *   so for small D·d (at most `DENSE_MAX_ENTRIES`).
 * - `fastfood`: the paper's Fastfood transform, memory O(D): the input (zero-padded to L = 2^k ≥ d)
 *   goes through ⌈D/L⌉ independent blocks V_b = H·G_b·Π_b·H·B_b (B_b random ±1, Π_b a random
 *   permutation, G_b N(0, 1), H the L×L Walsh–Hadamard matrix), each scaled by
 *   1/(√L·‖G_b‖·√blocks); the blocks are stacked and cut to D rows. Every column of the stacked
 *   matrix has norm exactly 1 before the cut (H·G·Π·H·B maps a unit vector to norm √L·‖G‖). H is
 *   applied as a Kronecker product of small Hadamard matrices (one MatMul per factor, cost
 *   O(D·Σ factors)).
 *
 * `projectHost` computes the same P·d on the host (float64) for tests and for checking a graph.
 */
import { ConfigError } from "../../errors.js";
import * as G from "../../graph/api.js";
import type { Graph } from "../../graph/graph.js";
import type { Value } from "../../graph/types.js";
import { tensor } from "../../tensor.js";
import { Rng } from "../../util/rng.js";

import type { ProjectionKind } from "./defaults.js";
export { PROJECTION_KINDS, type ProjectionKind } from "./defaults.js";

/** Dense projections up to this many entries of P (64 MiB of float32); `auto` picks Fastfood above. */
export const DENSE_MAX_ENTRIES = 1 << 24;

/** Largest Hadamard factor applied as one MatMul. */
const MAX_FACTOR_BITS = 6;

export interface ProjectionSpec {
  readonly kind: ProjectionKind;
  /** Subspace dimension d. */
  readonly dim: number;
  /** Parameter count D. */
  readonly size: number;
  readonly seed: number;
}

/** `auto`: dense while D·d ≤ DENSE_MAX_ENTRIES, else Fastfood. */
export function chooseProjection(kind: ProjectionKind | "auto", dim: number, size: number): ProjectionKind {
  if (kind !== "auto") return kind;
  return dim * size <= DENSE_MAX_ENTRIES ? "dense" : "fastfood";
}

export function checkProjection(spec: ProjectionSpec, where = "subspace"): void {
  if (!(Number.isInteger(spec.dim) && spec.dim >= 1)) throw new ConfigError(where, "dim", `must be a positive integer, got ${spec.dim}`);
  if (!(Number.isInteger(spec.size) && spec.size >= 1)) throw new ConfigError(where, "size", `must be a positive integer, got ${spec.size}`);
  if (spec.kind === "identity" && spec.dim !== spec.size) throw new ConfigError(where, "dim", `the identity projection needs d = D (${spec.size}), got ${spec.dim}`);
  if (spec.kind === "dense" && spec.dim * spec.size > DENSE_MAX_ENTRIES) {
    throw new ConfigError(where, "projection", `a dense ${spec.size}×${spec.dim} projection has ${spec.dim * spec.size} entries (at most ${DENSE_MAX_ENTRIES}); use 'fastfood'`);
  }
  if (spec.dim > spec.size) throw new ConfigError(where, "dim", `d = ${spec.dim} is larger than the ${spec.size} parameters`);
}

/** Dense P, row-major [D, d], unit-norm columns. */
export function denseMatrix(spec: ProjectionSpec): Float64Array {
  const { dim, size } = spec;
  const rng = new Rng(spec.seed).fork("dense-projection");
  const p = new Float64Array(size * dim);
  for (let i = 0; i < p.length; i++) p[i] = rng.normal();
  for (let j = 0; j < dim; j++) {
    let s = 0;
    for (let i = 0; i < size; i++) s += p[i * dim + j]! ** 2;
    const inv = 1 / Math.sqrt(s);
    for (let i = 0; i < size; i++) p[i * dim + j]! *= inv;
  }
  return p;
}

/** The random parts of a Fastfood projection. */
export interface FastfoodParts {
  /** L = 2^k ≥ d. */
  readonly blockSize: number;
  readonly blocks: number;
  /** [blocks, L] ±1. */
  readonly signs: Float64Array;
  /** [blocks, L]: position i of the permuted vector takes entry perm[i]. */
  readonly perm: Int32Array;
  /** [blocks, L] N(0, 1). */
  readonly gauss: Float64Array;
  /** [blocks]: 1/(√L·‖G_b‖·√blocks). */
  readonly scale: Float64Array;
}

export function fastfoodParts(spec: ProjectionSpec): FastfoodParts {
  const L = 2 ** Math.max(1, Math.ceil(Math.log2(spec.dim)));
  const blocks = Math.ceil(spec.size / L);
  const rng = new Rng(spec.seed).fork("fastfood-projection");
  const signs = new Float64Array(blocks * L);
  const perm = new Int32Array(blocks * L);
  const gauss = new Float64Array(blocks * L);
  const scale = new Float64Array(blocks);
  for (let b = 0; b < blocks; b++) {
    for (let i = 0; i < L; i++) signs[b * L + i] = rng.uniform() < 0.5 ? -1 : 1;
    perm.set(rng.permutation(L), b * L);
    let s = 0;
    for (let i = 0; i < L; i++) {
      const v = rng.normal();
      gauss[b * L + i] = v;
      s += v * v;
    }
    scale[b] = 1 / (Math.sqrt(L * s) * Math.sqrt(blocks));
  }
  return { blockSize: L, blocks, signs, perm, gauss, scale };
}

/** Sizes (powers of two, product L) of the Hadamard factors, as even as possible. */
export function hadamardFactors(L: number): number[] {
  const bits = Math.round(Math.log2(L));
  const k = Math.max(1, Math.ceil(bits / MAX_FACTOR_BITS));
  const out: number[] = [];
  let left = bits;
  for (let i = 0; i < k; i++) {
    const b = Math.ceil(left / (k - i));
    out.push(2 ** b);
    left -= b;
  }
  return out;
}

/** The n×n Sylvester Hadamard matrix (n a power of two), row-major: H[i][j] = (−1)^popcount(i & j). */
export function hadamardMatrix(n: number): Float64Array {
  const h = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) {
      let x = i & j;
      let parity = 0;
      while (x) {
        parity ^= x & 1;
        x >>= 1;
      }
      h[i * n + j] = parity ? -1 : 1;
    }
  }
  return h;
}

/** In-place fast Walsh–Hadamard transform of `x[off, off+n)` (unnormalised, Sylvester order). */
function fwht(x: Float64Array, off: number, n: number): void {
  for (let h = 1; h < n; h *= 2) {
    for (let i = 0; i < n; i += 2 * h) {
      for (let j = i; j < i + h; j++) {
        const a = x[off + j]!;
        const b = x[off + j + h]!;
        x[off + j] = a + b;
        x[off + j + h] = a - b;
      }
    }
  }
}

/** P·d on the host, float64 (the reference the graph is tested against). */
export function projectHost(spec: ProjectionSpec, d: ArrayLike<number>): Float64Array {
  checkProjection(spec);
  const { dim, size } = spec;
  if (d.length !== dim) throw new ConfigError("subspace", "d", `expected ${dim} values, got ${d.length}`);
  if (spec.kind === "identity") return Float64Array.from(d);
  if (spec.kind === "dense") {
    const p = denseMatrix(spec);
    const out = new Float64Array(size);
    for (let i = 0; i < size; i++) {
      let s = 0;
      for (let j = 0; j < dim; j++) s += p[i * dim + j]! * d[j]!;
      out[i] = s;
    }
    return out;
  }
  const f = fastfoodParts(spec);
  const L = f.blockSize;
  const out = new Float64Array(f.blocks * L);
  const tmp = new Float64Array(L);
  for (let b = 0; b < f.blocks; b++) {
    const o = b * L;
    for (let i = 0; i < L; i++) out[o + i] = i < dim ? f.signs[o + i]! * d[i]! : 0;
    fwht(out, o, L);
    for (let i = 0; i < L; i++) tmp[i] = out[o + f.perm[o + i]!]! * f.gauss[o + i]!;
    out.set(tmp, o);
    fwht(out, o, L);
    for (let i = 0; i < L; i++) out[o + i]! *= f.scale[b]!;
  }
  return out.subarray(0, size);
}

/** H (Walsh–Hadamard) along the last axis of `x` [rows, L], as Kronecker factors (see the module comment). */
function hadamardGraph(g: Graph, x: Value, rows: number, L: number, dtype: "float32" | "float64", mats: Map<number, Value>): Value {
  const factors = hadamardFactors(L);
  let y = x;
  // each round transforms the last digit of the index and rotates it to the front; after one round
  // per factor the digits are back in order (factors are taken last digit first)
  for (const f of [...factors].reverse()) {
    let h = mats.get(f);
    if (!h) {
      const m = hadamardMatrix(f);
      h = g.initializer(`subspace/hadamard_${f}`, dtype === "float64" ? tensor("float64", [f, f], m) : tensor("float32", [f, f], Float32Array.from(m)));
      mats.set(f, h);
    }
    y = G.reshape(y, [rows, L / f, f]);
    y = G.matmul(y, h);
    y = G.transpose(y, [0, 2, 1]);
    y = G.reshape(y, [rows, L]);
  }
  return y;
}

/**
 * P·d as graph nodes: `d` is a graph value of shape [dim]; returns a value of shape [size]
 * (the offsets of the parameters, flat). Random parts are initializers named `subspace/…`.
 */
export function projectGraph(g: Graph, d: Value, spec: ProjectionSpec, dtype: "float32" | "float64"): Value {
  checkProjection(spec);
  const { dim, size } = spec;
  const t = (shape: number[], data: Float64Array) => (dtype === "float64" ? tensor("float64", shape, data) : tensor("float32", shape, Float32Array.from(data)));
  if (spec.kind === "identity") return d;
  if (spec.kind === "dense") {
    const p = g.initializer("subspace/projection", t([size, dim], denseMatrix(spec)));
    return G.reshape(G.matmul(p, G.reshape(d, [dim, 1])), [size]);
  }
  const f = fastfoodParts(spec);
  const L = f.blockSize;
  const rows = f.blocks;
  const mats = new Map<number, Value>();
  let x = L > dim ? G.pad(d, [0, L - dim]) : d;
  x = G.mul(G.reshape(x, [1, L]), g.initializer("subspace/fastfood_signs", t([rows, L], f.signs)));
  x = hadamardGraph(g, x, rows, L, dtype, mats);
  const perm = g.initializer("subspace/fastfood_perm", tensor("int64", [rows, L], BigInt64Array.from(f.perm, (v) => BigInt(v))));
  x = G.gatherElements(x, perm, 1);
  x = G.mul(x, g.initializer("subspace/fastfood_gauss", t([rows, L], f.gauss)));
  x = hadamardGraph(g, x, rows, L, dtype, mats);
  x = G.mul(x, g.initializer("subspace/fastfood_scale", t([rows, 1], f.scale)));
  x = G.reshape(x, [rows * L]);
  return rows * L > size ? G.slice(x, [0], [size], [0]) : x;
}
