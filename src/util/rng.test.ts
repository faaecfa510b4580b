import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { Rng } from "./rng.js";
import { ConfigError } from "../errors.js";

describe("Rng", () => {
  test("xoshiro128** matches the reference outputs for state {1, 2, 3, 4}", () => {
    const r = Rng.fromState({ algorithm: "xoshiro128**", s: [1, 2, 3, 4], spareNormal: null });
    // First outputs of the reference C implementation from this state.
    assert.deepEqual([r.nextUint32(), r.nextUint32(), r.nextUint32(), r.nextUint32()], [11520, 0, 5927040, 70819200]);
  });

  test("same seed gives the same stream, different seeds differ", () => {
    const a = new Rng(1234);
    const b = new Rng(1234);
    const c = new Rng(1235);
    const xa = Array.from({ length: 50 }, () => a.uniform());
    const xb = Array.from({ length: 50 }, () => b.uniform());
    const xc = Array.from({ length: 50 }, () => c.uniform());
    assert.deepEqual(xa, xb);
    assert.notDeepEqual(xa, xc);
    // Seeds that differ only in the high 32 bits are different too.
    assert.notEqual(new Rng(2 ** 32 + 7).nextUint32(), new Rng(7).nextUint32());
  });

  test("state export/import continues the stream exactly, including a cached normal", () => {
    const r = new Rng(99);
    for (let i = 0; i < 17; i++) r.uniform();
    r.normal(); // leaves the second Box–Muller value cached
    const saved = JSON.parse(JSON.stringify(r.state())) as ReturnType<Rng["state"]>;
    assert.notEqual(saved.spareNormal, null);
    const expected = [r.normal(), r.normal(), r.uniform(), r.int(1000)];
    const restored = Rng.fromState(saved);
    assert.deepEqual([restored.normal(), restored.normal(), restored.uniform(), restored.int(1000)], expected);
  });

  test("fromState rejects malformed states", () => {
    assert.throws(() => Rng.fromState({ algorithm: "xoshiro128**", s: [0, 0, 0, 0], spareNormal: null }), ConfigError);
    assert.throws(() => Rng.fromState({ algorithm: "xoshiro128**", s: [1, 2, 3, 2 ** 32], spareNormal: null }), ConfigError);
    assert.throws(() => new Rng(-1), ConfigError);
    assert.throws(() => new Rng(1.5), ConfigError);
  });

  test("uniform is in [0,1) with mean ≈ 1/2 and variance ≈ 1/12", () => {
    const r = new Rng(7);
    const n = 200_000;
    let sum = 0;
    let sq = 0;
    for (let i = 0; i < n; i++) {
      const u = r.uniform();
      assert.ok(u >= 0 && u < 1);
      sum += u;
      sq += u * u;
    }
    const mean = sum / n;
    const variance = sq / n - mean * mean;
    assert.ok(Math.abs(mean - 0.5) < 0.005, `mean ${mean}`);
    assert.ok(Math.abs(variance - 1 / 12) < 0.002, `variance ${variance}`);
  });

  test("normal has mean ≈ 0, std ≈ 1 and ≈ 68.3% within one std", () => {
    const r = new Rng(11);
    const n = 200_000;
    let sum = 0;
    let sq = 0;
    let within = 0;
    for (let i = 0; i < n; i++) {
      const z = r.normal();
      sum += z;
      sq += z * z;
      if (Math.abs(z) < 1) within++;
    }
    const mean = sum / n;
    const std = Math.sqrt(sq / n - mean * mean);
    assert.ok(Math.abs(mean) < 0.01, `mean ${mean}`);
    assert.ok(Math.abs(std - 1) < 0.01, `std ${std}`);
    assert.ok(Math.abs(within / n - 0.6827) < 0.005, `within ${within / n}`);
    const shifted = new Rng(11).normal(3, 2);
    assert.equal(shifted, 3 + 2 * new Rng(11).normal());
  });

  test("int(n) covers 0..n-1 roughly uniformly (chi-square)", () => {
    const r = new Rng(5);
    const k = 10;
    const n = 100_000;
    const counts = new Array<number>(k).fill(0);
    for (let i = 0; i < n; i++) counts[r.int(k)]!++;
    const e = n / k;
    const chi2 = counts.reduce((s, c) => s + ((c - e) * (c - e)) / e, 0);
    assert.ok(chi2 < 30, `chi2 ${chi2}`); // 9 dof: p ≈ 0.0004 at 30
    assert.throws(() => r.int(0), RangeError);
    assert.throws(() => r.int(2 ** 32 + 1), RangeError);
    assert.equal(r.int(1), 0);
  });

  test("shuffle is a permutation, deterministic, and each position is uniform", () => {
    const a = new Rng(3).shuffle(Array.from({ length: 100 }, (_, i) => i));
    const b = new Rng(3).shuffle(Array.from({ length: 100 }, (_, i) => i));
    assert.deepEqual(a, b);
    assert.deepEqual([...a].sort((x, y) => x - y), Array.from({ length: 100 }, (_, i) => i));
    assert.notDeepEqual(a, Array.from({ length: 100 }, (_, i) => i));
    // Where does element 0 of [0,1,2,3] land? Each of 4 positions ≈ 1/4.
    const r = new Rng(8);
    const pos = [0, 0, 0, 0];
    for (let t = 0; t < 40_000; t++) pos[r.shuffle([0, 1, 2, 3]).indexOf(0)]!++;
    for (const p of pos) assert.ok(Math.abs(p / 40_000 - 0.25) < 0.015, `position share ${p / 40_000}`);
    const perm = new Rng(3).permutation(100);
    assert.ok(perm instanceof Int32Array);
    assert.deepEqual(Array.from(perm), a);
  });

  test("fork is deterministic, label-dependent, and does not advance the parent", () => {
    const p1 = new Rng(42);
    const p2 = new Rng(42);
    const c1 = p1.fork("data");
    const c2 = p2.fork("data");
    const d = p1.fork("dropout");
    const s1 = Array.from({ length: 10 }, () => c1.nextUint32());
    assert.deepEqual(s1, Array.from({ length: 10 }, () => c2.nextUint32()));
    assert.notDeepEqual(s1, Array.from({ length: 10 }, () => d.nextUint32()));
    // Parent unaffected by forking.
    assert.deepEqual(p1.state(), new Rng(42).state());
    // Child stream differs from parent stream.
    assert.notDeepEqual(s1, Array.from({ length: 10 }, () => p1.nextUint32()));
  });
});
