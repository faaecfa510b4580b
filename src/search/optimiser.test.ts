/**
 * The optimiser's parts against known answers: the GP posterior of a small case computed by hand,
 * Sobol' stratification, hypervolumes of known fronts, and the whole loop on ZDT1/ZDT2 — the
 * hypervolume it reaches in a fixed budget vs the true front's and vs random search.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { GaussianProcess, fitGp } from "./gp.js";
import { type Observation, proposeNext } from "./mobo.js";
import { dominates, hypervolume, hypervolume2d, paretoIndices } from "./pareto.js";
import { SOBOL_MAX_DIM, sobolPoints } from "./sobol.js";

describe("search: Gaussian process", () => {
  test("posterior mean and variance match the hand-computed two-point case", () => {
    // x = 0, 1; y = 1, 2; ℓ = 1, σ² = 1, noise 0.01: K = [[a, b], [b, a]], a = 1.01, b = e^{-1/2};
    // K⁻¹ = [[a, -b], [-b, a]] / (a² - b²); at x* = 0.25: k* = [e^{-1/32}, e^{-9/32}]
    const gp = new GaussianProcess([[0], [1]], [1, 2], { lengthScale: 1, signalVariance: 1, noiseVariance: 0.01 }, false);
    const a = 1.01;
    const b = Math.exp(-0.5);
    const det = a * a - b * b;
    const k = [Math.exp(-1 / 32), Math.exp(-9 / 32)];
    const alpha = [(a * 1 - b * 2) / det, (-b * 1 + a * 2) / det];
    const mean = k[0]! * alpha[0]! + k[1]! * alpha[1]!;
    const variance = 1 - (k[0]! * (a * k[0]! - b * k[1]!) + k[1]! * (-b * k[0]! + a * k[1]!)) / det;
    const p = gp.predict([[0.25]]);
    assert.ok(Math.abs(p.mean[0]! - mean) < 1e-12, `mean ${p.mean[0]} vs ${mean}`);
    assert.ok(Math.abs(p.variance[0]! - variance) < 1e-12, `variance ${p.variance[0]} vs ${variance}`);
    assert.ok(Math.abs(mean - 1.3341021576894465) < 1e-12 && Math.abs(variance - 0.023653551489672853) < 1e-12);
    // one point: mean = k y / (σ² + noise), variance = σ² - k² / (σ² + noise)
    const one = new GaussianProcess([[0, 0]], [3], { lengthScale: 0.5, signalVariance: 2, noiseVariance: 0.5 }, false).predict([[0.3, 0.4]]);
    const k1 = 2 * Math.exp(-0.25 / (2 * 0.25));
    assert.ok(Math.abs(one.mean[0]! - (k1 * 3) / 2.5) < 1e-12);
    assert.ok(Math.abs(one.variance[0]! - (2 - (k1 * k1) / 2.5)) < 1e-12);
  });

  test("fitted by marginal likelihood, it interpolates a smooth function and is unsure far from the data", () => {
    const xs = [0, 0.2, 0.4, 0.6, 0.8, 1].map((v) => [v]);
    const f = (x: number) => Math.sin(3 * x) + 10;
    const gp = fitGp(xs, xs.map((x) => f(x[0]!)));
    const p = gp.predict([[0.5], [3]]);
    assert.ok(Math.abs(p.mean[0]! - f(0.5)) < 0.02, `${p.mean[0]} vs ${f(0.5)}`);
    assert.ok(p.variance[1]! > 100 * p.variance[0]!);
  });
});

describe("search: Sobol', Pareto sets, hypervolume", () => {
  test("every Sobol' coordinate is stratified: the first 2^k points fill each of 2^k intervals once", () => {
    const pts = sobolPoints(64, SOBOL_MAX_DIM);
    for (let j = 0; j < SOBOL_MAX_DIM; j++) {
      for (const n of [2, 4, 8, 16, 32, 64]) {
        const cells = new Set(pts.slice(0, n).map((p) => Math.floor(p[j]! * n)));
        assert.equal(cells.size, n, `dimension ${j}, ${n} points`);
      }
    }
    // the first two dimensions form a (0, m, 2)-net: 16 points, one per cell of a 4 × 4 grid
    assert.equal(new Set(pts.slice(0, 16).map((p) => `${Math.floor(p[0]! * 4)},${Math.floor(p[1]! * 4)}`)).size, 16);
    assert.deepEqual(sobolPoints(3, 2, 1), [[0.5, 0.5], [0.75, 0.25], [0.25, 0.75]]);
    assert.equal(sobolPoints(2, SOBOL_MAX_DIM + 2)[1]!.length, SOBOL_MAX_DIM + 2);
  });

  test("Pareto indices and hypervolumes of known sets", () => {
    const pts = [[1, 5], [2, 3], [3, 3], [4, 1], [2, 3], [5, 5]];
    assert.deepEqual(paretoIndices(pts), [0, 1, 3]);
    assert.ok(dominates([2, 3], [3, 3]) && !dominates([2, 3], [2, 3]));
    // staircase under ref (6, 6): (6-1)(6-5) + (6-2)(5-3) + (6-4)(3-1) = 5 + 8 + 4
    assert.equal(hypervolume2d(pts, [6, 6]), 17);
    assert.equal(hypervolume(pts, [6, 6]), 17);
    // 3-D: a single point (1,1,1) under (2,2,2) is a unit cube; two boxes overlapping
    assert.equal(hypervolume([[1, 1, 1]], [2, 2, 2]), 1);
    assert.equal(hypervolume([[0, 1, 1], [1, 0, 1]], [2, 2, 2]), 3);
  });
});

function zdt(which: 1 | 2, x: readonly number[]): number[] {
  const f1 = x[0]!;
  const g = 1 + (9 / (x.length - 1)) * x.slice(1).reduce((s, v) => s + v, 0);
  return [f1, which === 1 ? g * (1 - Math.sqrt(f1 / g)) : g * (1 - (f1 / g) ** 2)];
}

describe("search: multi-objective BO on ZDT", () => {
  for (const which of [1, 2] as const) {
    test(`ZDT${which} (3 variables): 30 evaluations reach ≥ 85 % of the true front's hypervolume; random search does not`, () => {
      const truth = which === 1 ? 2 / 3 : 1 / 3; // ∫ sqrt(f1) and ∫ f1² over [0, 1] under ref (1, 1)
      const h: Observation[] = [];
      for (let i = 0; i < 30; i++) {
        const x = proposeNext(h, [], { dims: 3, objectives: 2, seed: 1, initial: 8 }, i);
        h.push({ x, y: zdt(which, x) });
      }
      const hv = hypervolume(h.map((o) => o.y), [1, 1]);
      assert.ok(hv >= 0.85 * truth, `hypervolume ${hv.toFixed(4)} = ${(hv / truth).toFixed(3)} of the true ${truth.toFixed(4)}`);
      assert.ok(hv <= truth + 1e-9);
      const random = sobolPoints(30, 3, 1, 1).map((x) => zdt(which, x));
      assert.ok(hypervolume(random, [1, 1]) < 0.5 * hv, "the Sobol' design alone is far behind");
    });
  }

  test("pending points count at their posterior mean: a batch of proposals is not the same point twice", () => {
    const h: Observation[] = [];
    for (let i = 0; i < 10; i++) {
      const x = proposeNext(h, [], { dims: 2, objectives: 2, seed: 3, initial: 6 }, i);
      h.push({ x, y: zdt(1, x) });
    }
    const a = proposeNext(h, [], { dims: 2, objectives: 2, seed: 3, initial: 6 }, 10);
    const b = proposeNext(h, [a], { dims: 2, objectives: 2, seed: 3, initial: 6 }, 11);
    assert.notDeepEqual(a, b);
    assert.deepEqual(proposeNext(h, [], { dims: 2, objectives: 2, seed: 3, initial: 6 }, 10), a, "deterministic");
  });
});
