import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { ConfigError, ShapeMismatchError, UnknownMergeMethodError } from "../errors.js";
import { type Tensor, f32 } from "../tensor.js";
import { MERGE_METHODS, getMergeMethod, mergeTaskTensors, resolveMergeParams, taskArithmetic } from "./methods.js";
import { pcbMerge } from "./pcb.js";

function mulberry32(seed: number): { uniform(): number } {
  let a = seed >>> 0;
  return {
    uniform() {
      a = (a + 0x6d2b79f5) >>> 0;
      let t = a;
      t = Math.imul(t ^ (t >>> 15), t | 1);
      t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    },
  };
}

function close(actual: Tensor, expected: readonly number[], tol = 1e-6): void {
  assert.equal(actual.data.length, expected.length);
  for (let i = 0; i < expected.length; i++) {
    const a = Number(actual.data[i]);
    assert.ok(Math.abs(a - expected[i]!) <= tol, `entry ${i}: ${a} vs ${expected[i]}`);
  }
}

const v = (...x: number[]): Tensor => f32([x.length], x);

describe("registry", () => {
  test("lists the methods with titles, papers and parameter definitions", () => {
    for (const name of ["linear", "task_arithmetic", "ties", "dare_ties", "dare_linear", "magnitude_prune", "svd", "concat", "pcb"]) {
      const m = getMergeMethod(name);
      assert.equal(m.name, name);
      assert.ok(m.title.length > 0);
      assert.match(m.paper, /^https:\/\//);
    }
    assert.equal(MERGE_METHODS.ties.params.normalize?.default, true);
    assert.equal(MERGE_METHODS.dare_ties.params.rescale?.default, true);
    assert.equal(MERGE_METHODS.dare_linear.random, true);
    assert.equal(MERGE_METHODS.ties.random, false);
    assert.deepEqual(Object.keys(MERGE_METHODS.ties.perModelParams).sort(), ["density", "weight"]);
  });

  test("an unknown name throws UnknownMergeMethodError listing the known ones", () => {
    assert.throws(
      () => getMergeMethod("slerpy"),
      (e: unknown) => e instanceof UnknownMergeMethodError && e.known.includes("ties") && /slerpy/.test(e.message) && e.code === "PEFT_ERR_UNKNOWN_MERGE_METHOD",
    );
    assert.throws(() => getMergeMethod("toString"), UnknownMergeMethodError);
  });

  test("parameters are validated and defaults filled in", () => {
    const r = resolveMergeParams(MERGE_METHODS.ties, { lambda: 2 }, [{ weight: 0.5 }, undefined]);
    assert.deepEqual(r.params, { normalize: true, lambda: 2, rescale: false, consensus: "sum" });
    assert.deepEqual(r.perModel, [{ weight: 0.5, density: 1 }, { weight: 1, density: 1 }]);
    assert.throws(() => resolveMergeParams(MERGE_METHODS.ties, { lamda: 2 }, []), (e: unknown) => e instanceof ConfigError && /lamda/.test(e.message));
    assert.throws(() => resolveMergeParams(MERGE_METHODS.ties, { consensus: "median" }, []), ConfigError);
    assert.throws(() => resolveMergeParams(MERGE_METHODS.ties, { normalize: "yes" }, []), ConfigError);
    assert.throws(() => resolveMergeParams(MERGE_METHODS.svd, {}, []), (e: unknown) => e instanceof ConfigError && /rank/.test(e.message));
    assert.throws(() => resolveMergeParams(MERGE_METHODS.svd, { rank: 1.5 }, []), ConfigError);
  });

  test("mismatched shapes and a missing rng are typed errors", () => {
    assert.throws(() => mergeTaskTensors("linear", [v(1, 2), v(1, 2, 3)]), ShapeMismatchError);
    assert.throws(() => mergeTaskTensors("dare_linear", [v(1, 2)], { perModel: [{ density: 0.5 }] }), ConfigError);
  });
});

describe("task arithmetic family", () => {
  test("linear normalises by the weight sum, task_arithmetic scales by λ, negation is weight −1", () => {
    const perModel = [{ weight: 1 }, { weight: 3 }];
    // Σ w·τ = [1 + 9, 2 − 6] = [10, −4]
    close(mergeTaskTensors("linear", [v(1, 2), v(3, -2)], { perModel }), [2.5, -1]);
    close(mergeTaskTensors("task_arithmetic", [v(1, 2), v(3, -2)], { perModel, params: { lambda: 0.5 } }), [5, -2]);
    close(mergeTaskTensors("task_arithmetic", [v(1, -2)], { perModel: [{ weight: -1 }] }), [-1, 2]);
  });

  test("TIES: trim, elect by total mass, weighted disjoint mean", () => {
    const t1 = v(1, -2, 3, 0.5);
    const t2 = v(-3, 1.2, 1, -0.1);
    // density 0.5 keeps two entries each: t1 → [0, −2, 3, 0], t2 → [−3, 1.2, 0, 0].
    // weights 2, 1: δ1 = [0, −4, 6, 0], δ2 = [−3, 1.2, 0, 0].
    // Signs of Σδ: [−, −, +, +(0)]. Agreeing: e0 δ2 only → −3/1; e1 δ1 only → −4/2; e2 δ1 → 6/2; e3 nobody → 0.
    const perModel = [
      { weight: 2, density: 0.5 },
      { weight: 1, density: 0.5 },
    ];
    close(mergeTaskTensors("ties", [t1, t2], { perModel }), [-3, -2, 3, 0]);
    close(mergeTaskTensors("ties", [t1, t2], { perModel, params: { normalize: false } }), [-3, -4, 6, 0]);
  });

  test("TIES sign election by sum vs by count", () => {
    const ts = [v(5, 1), v(-1, 1), v(-1, -4)];
    // e0: sum 3 → + keeps 5; count (+,−,−) → − keeps −1, −1 (mean −1).
    // e1: sum −2 → − keeps −4; count (+,+,−) → + keeps 1, 1 (mean 1).
    close(mergeTaskTensors("ties", ts), [5, -4]);
    close(mergeTaskTensors("ties", ts, { params: { consensus: "count" } }), [-1, 1]);
  });

  test("magnitude_prune: prune each, weighted sum", () => {
    const perModel = [
      { weight: 1, density: 0.5 },
      { weight: 0.5, density: 0.5 },
    ];
    // [1, −4, 2, 3] → [0, −4, 0, 3]; [2, 1, −3, 0.5] → [2, 0, −3, 0]; sum with weights 1, 0.5
    close(mergeTaskTensors("magnitude_prune", [v(1, -4, 2, 3), v(2, 1, -3, 0.5)], { perModel }), [1, -4, -1.5, 3]);
  });

  test("DARE linear: entries are 0 or w·τ/density, the mean over seeds is w·τ", () => {
    const tau = [0.8, -0.4, 1.6];
    const perModel = [{ weight: 0.5, density: 0.2 }];
    const runs = 3000;
    const sum = [0, 0, 0];
    for (let s = 0; s < runs; s++) {
      const out = mergeTaskTensors("dare_linear", [v(...tau)], { perModel, rng: mulberry32(s + 1) });
      for (let i = 0; i < 3; i++) {
        const x = out.data[i] as number;
        assert.ok(x === 0 || Math.abs(x - (0.5 * tau[i]!) / 0.2) < 1e-6, `entry ${x}`);
        sum[i]! += x;
      }
    }
    // sd of one draw: 0.5·|τ|·√(1/0.2 − 1) = |τ|; of the mean of 3000: 0.018·|τ|
    for (let i = 0; i < 3; i++) assert.ok(Math.abs(sum[i]! / runs - 0.5 * tau[i]!) < 0.08 * Math.abs(tau[i]!), `entry ${i}`);
  });

  test("DARE TIES is reproducible with the same seed and differs across seeds", () => {
    const ts = [f32([64], Array.from({ length: 64 }, (_, i) => Math.sin(i))), f32([64], Array.from({ length: 64 }, (_, i) => Math.cos(i)))];
    const perModel = [{ density: 0.5 }, { density: 0.5 }];
    const a = mergeTaskTensors("dare_ties", ts, { perModel, rng: mulberry32(5) });
    const b = mergeTaskTensors("dare_ties", ts, { perModel, rng: mulberry32(5) });
    const c = mergeTaskTensors("dare_ties", ts, { perModel, rng: mulberry32(6) });
    assert.deepEqual(a.data, b.data);
    assert.notDeepEqual(a.data, c.data);
  });

  test("the factory builds custom variants", () => {
    const m = taskArithmetic({ name: "mag_ties", title: "t", paper: "https://x", consensus: "count", sparsify: "magnitude", defaultNormalize: false, defaultRescale: true });
    // density 0.5 with rescale: [4, 1] → [8, 0]; [−1, 3] → [0, 6]; count elects + at e0 (+,0) and e1 (0,+)
    close(mergeTaskTensors(m, [v(4, 1), v(-1, 3)], { perModel: [{ density: 0.5 }, { density: 0.5 }] }), [8, 6]);
  });
});

describe("svd, concat and pcb", () => {
  test("svd keeps the top singular directions of the weighted sum; 1-D tensors pass through", () => {
    const a = f32([3, 3], [3, 0, 0, 0, 0, 0, 0, 0, 0]);
    const b = f32([3, 3], [0, 0, 0, 0, 1, 0, 0, 0, 0]);
    close(mergeTaskTensors("svd", [a, b], { params: { rank: 1 } }), [3, 0, 0, 0, 0, 0, 0, 0, 0]);
    close(mergeTaskTensors("svd", [a, b], { params: { rank: 1 }, perModel: [{ weight: 0.2 }, { weight: 1 }] }), [0, 0, 0, 0, 1, 0, 0, 0, 0]);
    close(mergeTaskTensors("svd", [v(1, 2), v(3, 4)], { params: { rank: 1 } }), [4, 6]);
  });

  test("concat stacks weighted tensors along the axis", () => {
    const a = f32([2, 2], [1, 2, 3, 4]);
    const out0 = mergeTaskTensors("concat", [a, f32([1, 2], [5, 6])], { perModel: [{ weight: 1 }, { weight: 2 }] });
    assert.deepEqual(out0.shape, [3, 2]);
    close(out0, [1, 2, 3, 4, 10, 12]);
    const out1 = mergeTaskTensors("concat", [a, f32([2, 1], [7, 8])], { params: { axis: 1 } });
    assert.deepEqual(out1.shape, [2, 3]);
    close(out1, [1, 2, 7, 3, 4, 8]);
    assert.throws(() => mergeTaskTensors("concat", [a, f32([2, 1], [7, 8])]), ShapeMismatchError);
  });

  test("pcb through the registry equals pcbMerge with the same options", () => {
    const t1 = Array.from({ length: 40 }, (_, i) => Math.sin(i * 0.9) * 0.01);
    const t2 = Array.from({ length: 40 }, (_, i) => Math.cos(i * 0.4) * 0.02);
    const out = mergeTaskTensors("pcb", [f32([5, 8], t1), f32([5, 8], t2)], { params: { ratio: 0.3 }, perModel: [{ weight: 1.2 }, { weight: 0.8 }] });
    const ref = pcbMerge([t1, t2], { ratio: 0.3, clampRatio: 1e-4, weights: [1.2, 0.8] });
    assert.deepEqual(out.shape, [5, 8]);
    close(out, [...ref.merged], 1e-9);
    assert.ok(ref.merged.some((x) => x !== 0));
  });
});
