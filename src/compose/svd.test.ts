import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { lowRankSvd, matmul, truncatedSvd } from "./svd.js";

/** Orthonormal columns (Gram–Schmidt) of a deterministic [rows, cols] matrix. */
function orthonormal(rows: number, cols: number, seed: number): Float64Array {
  const q = new Float64Array(rows * cols);
  let s = seed;
  const next = (): number => {
    s = (s * 16807) % 2147483647;
    return s / 2147483647 - 0.5;
  };
  for (let c = 0; c < cols; c++) {
    const v = Array.from({ length: rows }, next);
    for (let p = 0; p < c; p++) {
      let dot = 0;
      for (let r = 0; r < rows; r++) dot += v[r]! * q[r * cols + p]!;
      for (let r = 0; r < rows; r++) v[r]! -= dot * q[r * cols + p]!;
    }
    const norm = Math.hypot(...v);
    for (let r = 0; r < rows; r++) q[r * cols + c] = v[r]! / norm;
  }
  return q;
}

/** M = U·diag(σ)·Vᵀ with known singular values. */
function withSpectrum(rows: number, cols: number, sigma: readonly number[]): Float64Array {
  const k = sigma.length;
  const u = orthonormal(rows, k, 11);
  const v = orthonormal(cols, k, 29);
  const us = u.map((x, i) => x * sigma[i % k]!);
  const vt = new Float64Array(k * cols);
  for (let r = 0; r < cols; r++) for (let c = 0; c < k; c++) vt[c * cols + r] = v[r * k + c]!;
  return matmul(us, vt, rows, k, cols);
}

function reconstruct(f: { us: Float64Array; vh: Float64Array; rows: number; cols: number; rank: number }): Float64Array {
  return matmul(f.us, f.vh, f.rows, f.rank, f.cols);
}

function frob2(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += (a[i]! - b[i]!) ** 2;
  return s;
}

describe("truncated SVD", () => {
  const sigma = [5, 4, 3, 2, 1, 0.5];

  test("recovers the singular values and the rank-k error is the tail", () => {
    for (const [rows, cols] of [
      [9, 6],
      [6, 10],
    ] as const) {
      const m = withSpectrum(rows, cols, sigma);
      const f = truncatedSvd(m, rows, cols, 3);
      for (let i = 0; i < sigma.length; i++) assert.ok(Math.abs(f.singularValues[i]! - sigma[i]!) < 1e-10);
      // Eckart–Young: ‖M − M_3‖²_F = 2² + 1² + 0.5² = 5.25
      assert.ok(Math.abs(frob2(m, reconstruct(f)) - 5.25) < 1e-9, `${rows}x${cols}`);
    }
  });

  test("a rank beyond min(rows, cols) is zero-padded and reconstructs exactly", () => {
    const m = withSpectrum(4, 5, [3, 2, 1]);
    const f = truncatedSvd(m, 4, 5, 6);
    assert.equal(f.us.length, 4 * 6);
    assert.equal(f.vh.length, 6 * 5);
    assert.ok(frob2(m, reconstruct(f)) < 1e-20);
  });

  test("lowRankSvd of B·A matches the dense SVD of the product", () => {
    const rows = 12;
    const inner = 3;
    const cols = 9;
    const b = Float64Array.from({ length: rows * inner }, (_, i) => Math.sin(i * 1.3 + 0.2) * (1 + (i % 3)));
    const a = Float64Array.from({ length: inner * cols }, (_, i) => Math.cos(i * 0.7 - 1) + 0.01 * i);
    const dense = matmul(b, a, rows, inner, cols);
    for (const rank of [2, 3, 5]) {
      const fast = lowRankSvd(b, a, rows, inner, cols, rank);
      const ref = truncatedSvd(dense, rows, cols, rank);
      for (let i = 0; i < 3; i++) assert.ok(Math.abs(fast.singularValues[i]! - ref.singularValues[i]!) < 1e-10);
      assert.ok(frob2(reconstruct(fast), reconstruct(ref)) < 1e-20, `rank ${rank}`);
    }
  });
});
