import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { ConfigError } from "../errors.js";
import { electSign, keptCount, magnitudePrune, randomPrune, topMagnitudeMask } from "./sparsify.js";

/** mulberry32: a tiny seeded generator for tests. */
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

describe("magnitude pruning", () => {
  test("keeps the int(density·n) largest magnitudes", () => {
    const x = [0.5, -3, 2, -0.1, 1, 4, -2.5, 0];
    // density 0.5 of 8 → 4 kept: 4, -3, -2.5, 2
    assert.deepEqual([...magnitudePrune(x, 0.5)], [0, -3, 2, 0, 0, 4, -2.5, 0]);
    // int(0.3·8) = 2 kept: 4, -3
    assert.deepEqual([...magnitudePrune(x, 0.3)], [0, -3, 0, 0, 0, 4, 0, 0]);
    assert.equal(keptCount(0.3, 8), 2);
  });

  test("rescale divides kept entries by density; density ≥ 1 keeps all; tiny density keeps none", () => {
    assert.deepEqual([...magnitudePrune([1, -4, 2, 3], 0.5, true)], [0, -8, 0, 6]);
    assert.deepEqual([...magnitudePrune([1, -4, 2], 1.5)], [1, -4, 2]);
    assert.deepEqual([...magnitudePrune([1, -4, 2], 0.2)], [0, 0, 0]);
  });

  test("ties at the threshold go to the lower index; the input is not modified", () => {
    const x = new Float64Array([1, -2, 2, 2, 0.5]);
    assert.deepEqual([...topMagnitudeMask(x, 2)], [0, 1, 1, 0, 0]);
    assert.deepEqual([...topMagnitudeMask(x, 3)], [0, 1, 1, 1, 0]);
    assert.deepEqual([...x], [1, -2, 2, 2, 0.5]);
  });

  test("agrees with a sort-based selection on a larger random vector", () => {
    const rng = mulberry32(7);
    const x = Float64Array.from({ length: 1001 }, () => rng.uniform() * 2 - 1);
    const k = 137;
    const order = [...x.keys()].sort((a, b) => Math.abs(x[b]!) - Math.abs(x[a]!));
    const expected = new Uint8Array(x.length);
    for (const i of order.slice(0, k)) expected[i] = 1;
    assert.deepEqual(topMagnitudeMask(x, k), expected);
  });

  test("negative density is a ConfigError", () => {
    assert.throws(() => magnitudePrune([1, 2], -0.1), ConfigError);
  });
});

describe("random pruning (DARE)", () => {
  test("kept entries are τ/density, dropped ones 0, about a density fraction kept", () => {
    const x = new Float64Array(4000).fill(1.5);
    const y = randomPrune(x, 0.25, mulberry32(1), true);
    let kept = 0;
    for (const v of y) {
      assert.ok(v === 0 || v === 6, `unexpected value ${v}`);
      if (v !== 0) kept++;
    }
    // Binomial(4000, 0.25): sd ≈ 27
    assert.ok(Math.abs(kept - 1000) < 150, `kept ${kept}`);
  });

  test("the same seed gives the same mask, and the mean is preserved over many seeds", () => {
    const x = [2, -1, 0.5];
    assert.deepEqual(randomPrune(x, 0.4, mulberry32(3)), randomPrune(x, 0.4, mulberry32(3)));
    const sum = [0, 0, 0];
    const runs = 4000;
    for (let s = 0; s < runs; s++) {
      const y = randomPrune(x, 0.4, mulberry32(1000 + s));
      for (let i = 0; i < 3; i++) sum[i]! += y[i]!;
    }
    // Var of one draw: τ²(1/p − 1) = 1.5τ²; sd of the mean of 4000 ≈ 0.019·|τ|
    for (let i = 0; i < 3; i++) assert.ok(Math.abs(sum[i]! / runs - x[i]!) < 0.1 * Math.abs(x[i]!) + 0.02, `entry ${i}: ${sum[i]! / runs}`);
  });
});

describe("sign election", () => {
  test("sum and count can disagree", () => {
    const stack = [[5], [-1], [-1]];
    assert.equal(electSign(stack, 0, "sum"), 1);
    assert.equal(electSign(stack, 0, "count"), -1);
    assert.equal(electSign([[0], [0]], 0, "sum"), 1);
  });
});
