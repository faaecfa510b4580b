import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { ConfigError } from "../errors.js";
import { clampByQuantile, minMaxNormalize, pcbMerge } from "./pcb.js";

describe("PCB-merging", () => {
  test("the reference clamp clips at sorted positions int(d·lo) and int(d·(1−hi) − 1)", () => {
    const x = new Float64Array([5, 1, 4, 2, 3]);
    // d = 5, ratio 1e-4 at both ends: lo = s[0] = 1, hi = s[int(4.9995 − 1)] = s[3] = 4 → the max 5 becomes 4.
    assert.deepEqual([...clampByQuantile(x, 1e-4, 1e-4)], [4, 1, 4, 2, 3]);
    // drop step with ratio 0.4: lo = s[int(5·0.6)] = s[3] = 4, hi = s[4] = 5
    assert.deepEqual([...clampByQuantile(x, 1 - 0.4, 0)], [5, 4, 4, 4, 4]);
    assert.deepEqual([...minMaxNormalize(new Float64Array([2, 4, 3]))], [0, 1, 0.5]);
    assert.deepEqual([...minMaxNormalize(new Float64Array([2, 2]))], [0, 0]);
  });

  test("a tiny example matches the formulas step by step", () => {
    const t1 = [0.1, -0.2, 0.3, 0.05, 0.4];
    const t2 = [0.2, 0.1, -0.3, 0.05, -0.1];
    const n = 2;
    const w = [1.5, 0.5];
    const r = pcbMerge([t1, t2], { ratio: 0.4, clampRatio: 1e-4, weights: w, lambda: 2 });

    // Step 1: |τ| clipped at sorted positions 0 and 3 (d = 5).
    // |τ1| = [.1, .2, .3, .05, .4] sorted [.05, .1, .2, .3, .4] → clip to [.05, .3]: [.1, .2, .3, .05, .3]
    // |τ2| = [.2, .1, .3, .05, .1] sorted [.05, .1, .1, .2, .3] → clip to [.05, .2]: [.2, .1, .2, .05, .1]
    const a1 = [0.1, 0.2, 0.3, 0.05, 0.3];
    const a2 = [0.2, 0.1, 0.2, 0.05, 0.1];
    const tc1 = [0.1, -0.2, 0.3, 0.05, 0.3];
    const tc2 = [0.2, 0.1, -0.2, 0.05, -0.1];
    for (let k = 0; k < 5; k++) {
      assert.ok(Math.abs(r.clamped[0]![k]! - tc1[k]!) < 1e-15);
      assert.ok(Math.abs(r.clamped[1]![k]! - tc2[k]!) < 1e-15);
    }
    // Step 2: intra = exp(n · ((a − min)/(max − min))²); Step 3: inter = tanh(τ_i · (τ1 + τ2)).
    const sum = t1.map((x, k) => x + t2[k]!);
    const beta = [a1, a2].map((a, i) => {
      const lo = Math.min(...a);
      const hi = Math.max(...a);
      const t = i === 0 ? t1 : t2;
      return a.map((x, k) => Math.exp(n * ((x - lo) / (hi - lo)) ** 2) * Math.tanh(t[k]! * sum[k]!));
    });
    for (let i = 0; i < 2; i++) for (let k = 0; k < 5; k++) assert.ok(Math.abs(r.balancing[i]![k]! - beta[i]![k]!) < 1e-12);
    // Step 5: keep the top 40% (2 of 5, the lowest of which becomes 0 after min–max): clip at sorted index 3, normalise.
    const scale = beta.map((b) => {
      const s = [...b].sort((x, y) => x - y);
      const c = b.map((x) => Math.max(x, s[3]!));
      return c.map((x) => (x - s[3]!) / (s[4]! - s[3]!));
    });
    for (let i = 0; i < 2; i++) for (let k = 0; k < 5; k++) assert.ok(Math.abs(r.scale[i]![k]! - scale[i]![k]!) < 1e-12);
    // Exactly one entry per task keeps a positive score (the top one, scaled to 1).
    for (let i = 0; i < 2; i++) assert.deepEqual(r.scale[i]!.filter((x) => x > 0).length, 1);
    // Step 6: λ · Σ w_i τ̃_i ŝ_i / max(Σ ŝ_i, 1e-12)
    for (let k = 0; k < 5; k++) {
      const num = w[0]! * tc1[k]! * scale[0]![k]! + w[1]! * tc2[k]! * scale[1]![k]!;
      const den = Math.max(scale[0]![k]! + scale[1]![k]!, 1e-12);
      assert.ok(Math.abs(r.merged[k]! - (2 * num) / den) < 1e-12, `entry ${k}`);
    }
  });

  test("entries that fight the consensus get negative balancing scores and are dropped", () => {
    // Task 2 opposes task 1 on entry 0 and loses (the sum follows task 1).
    const r = pcbMerge([[1, 0.5, 0.2, 0.1], [-0.3, 0.5, 0.2, 0.1]], { ratio: 0.5, clampRatio: 0 });
    assert.ok(r.balancing[1]![0]! < 0);
    assert.equal(r.scale[1]![0], 0);
    assert.ok(r.merged[0]! > 0);
  });

  test("bad options are ConfigErrors", () => {
    assert.throws(() => pcbMerge([[1, 2]], { ratio: 0, clampRatio: 0 }), ConfigError);
    assert.throws(() => pcbMerge([[1, 2]], { ratio: 0.5, clampRatio: 0.6 }), ConfigError);
    assert.throws(() => pcbMerge([[1, 2], [1]], { ratio: 0.5, clampRatio: 0 }), ConfigError);
    assert.throws(() => pcbMerge([[1, 2]], { ratio: 0.5, clampRatio: 0, weights: [1, 2] }), ConfigError);
  });
});
