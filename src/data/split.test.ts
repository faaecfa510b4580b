import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { ConfigError } from "../errors.js";
import { loadDataset } from "./registry.js";
import { hashSplit, splitDataset } from "./split.js";

function labels(counts: number[]): { label: number }[] {
  // Interleaved so class members are scattered over the index range.
  const out: { label: number }[] = [];
  const left = [...counts];
  while (left.some((c) => c > 0)) {
    for (let c = 0; c < left.length; c++) {
      if (left[c]! > 0) {
        out.push({ label: c });
        left[c]!--;
      }
    }
  }
  return out;
}

describe("splitDataset", () => {
  test("partitions all indices with exact sizes and per-class stratification", () => {
    const ex = labels([700, 200, 100]);
    const s = splitDataset(ex, { seed: 1, train: 0.8, validation: 0.1, test: 0.1 });
    assert.deepEqual(s.info.counts, { train: 800, validation: 100, test: 100 });
    const all = [...s.train, ...s.validation, ...s.test].sort((a, b) => a - b);
    assert.deepEqual(all, Array.from({ length: 1000 }, (_, i) => i));
    for (const list of [s.train, s.validation, s.test]) {
      assert.deepEqual(list, [...list].sort((a, b) => a - b));
    }
    // Each class gets its share of each split, within one example.
    const expected = { train: [560, 160, 80], validation: [70, 20, 10], test: [70, 20, 10] };
    for (const name of ["train", "validation", "test"] as const) {
      s.info.labelCounts[name].forEach((c, k) => assert.ok(Math.abs(c - expected[name][k]!) <= 1, `${name} class ${k}: ${c}`));
      const recount = [0, 0, 0];
      for (const i of s[name]) recount[ex[i]!.label]!++;
      assert.deepEqual(recount, s.info.labelCounts[name]);
    }
  });

  test("sizes add up for awkward N and fractions; rounding goes to the largest remainder", () => {
    const s = splitDataset(labels([4, 3]), { seed: 3, train: 0.7, validation: 0.15, test: 0.15 });
    // 7·0.7 = 4.9 → 4 (+1 remainder 0.9), 1.05 → 1, 1.05 → 1.
    assert.deepEqual(s.info.counts, { train: 5, validation: 1, test: 1 });
    const t = splitDataset(labels([5, 5]), { seed: 3, train: 0.5, test: 0.5 });
    assert.deepEqual(t.info.counts, { train: 5, validation: 0, test: 5 });
    assert.deepEqual(t.info.labelCounts.train.map((c) => Math.abs(c - 2.5) <= 0.5), [true, true]);
  });

  test("deterministic for a seed, different across seeds", () => {
    const ds = loadDataset("uci-sentiment");
    const opts = { train: 0.8, validation: 0.1, test: 0.1 };
    const a = splitDataset(ds.examples, { seed: 42, ...opts });
    const b = splitDataset(ds.examples, { seed: 42, ...opts });
    const c = splitDataset(ds.examples, { seed: 43, ...opts });
    assert.deepEqual(a, b);
    assert.notEqual(a.info.hash, c.info.hash);
    assert.notDeepEqual(a.test, c.test);
    assert.deepEqual(a.info.counts, { train: 2400, validation: 300, test: 300 });
    assert.deepEqual(a.info.labelCounts.test, [150, 150]);
    assert.equal(a.info.numExamples, 3000);
    assert.equal(a.info.seed, 42);
    assert.deepEqual(a.info.fractions, opts);
  });

  test("hash is SHA-256 of the documented text form and tracks the lists", () => {
    const s = splitDataset(labels([3, 3]), { seed: 9, train: 0.5, validation: 0.5 });
    const text = `train:${s.train.join(",")};validation:${s.validation.join(",")};test:`;
    assert.equal(s.info.hash, createHash("sha256").update(text).digest("hex"));
    assert.notEqual(hashSplit([0, 1], [2], []), hashSplit([0, 2], [1], []));
    assert.notEqual(hashSplit([0, 1], [], [2]), hashSplit([0, 1], [2], []));
  });

  test("invalid options raise ConfigError", () => {
    const ex = labels([2, 2]);
    assert.throws(() => splitDataset(ex, { seed: 1, train: 0.8, validation: 0.1 }), ConfigError);
    assert.throws(() => splitDataset(ex, { seed: 1, train: 1.2, validation: -0.2 }), ConfigError);
    assert.throws(() => splitDataset(ex, { seed: -1, train: 1 }), ConfigError);
    assert.throws(() => splitDataset([{ label: 0.5 }], { seed: 1, train: 1 }), ConfigError);
  });
});
