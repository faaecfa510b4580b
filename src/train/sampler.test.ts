import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { Rng } from "../util/rng.js";
import { lengthGroupedOrder, lengthSortedOrder } from "./sampler.js";

/** Padded tokens of the batches an order makes (Σ over batches of batch × longest − Σ lengths). */
function padding(order: ArrayLike<number>, lengths: readonly number[], batchSize: number): number {
  let pad = 0;
  for (let i = 0; i < order.length; i += batchSize) {
    const b = Array.from(order).slice(i, i + batchSize).map((k) => lengths[k]!);
    pad += b.length * Math.max(...b) - b.reduce((s, x) => s + x, 0);
  }
  return pad;
}

describe("length-grouped batch order (transformers group_by_length)", () => {
  const rng = new Rng(5);
  const lengths = Array.from({ length: 1000 }, () => 3 + rng.int(60));

  test("a permutation; each megabatch sorted longest first; the longest example first", () => {
    const order = lengthGroupedOrder(lengths, 8, new Rng(1));
    assert.deepEqual([...order].sort((a, b) => a - b), lengths.map((_, i) => i));
    assert.equal(lengths[order[0]!], Math.max(...lengths));
    // 1000 / (8·4) = 31 → megabatches of 31 × 8 = 248; inside each (after the first element) non-increasing
    for (let start = 0; start < order.length; start += 248) {
      const mb = Array.from(order.subarray(start, start + 248)).map((k) => lengths[k]!);
      for (let i = 2; i < mb.length; i++) assert.ok(mb[i - 1]! >= mb[i]!, `megabatch at ${start}, position ${i}`);
    }
  });

  test("far less padding than a plain permutation, and another order per generator state", () => {
    const grouped = lengthGroupedOrder(lengths, 16, new Rng(2));
    const plain = new Rng(2).permutation(lengths.length);
    const [pg, pp] = [padding(grouped, lengths, 16), padding(plain, lengths, 16)];
    assert.ok(pg < pp / 5, `padding ${pg} grouped vs ${pp} plain`);
    assert.notDeepEqual([...lengthGroupedOrder(lengths, 16, new Rng(3))], [...grouped]);
    assert.deepEqual([...lengthGroupedOrder(lengths, 16, new Rng(2))], [...grouped], "deterministic for a seed");
  });

  test("small inputs: megabatch multiplier at least 1; empty; bad batch size", () => {
    assert.deepEqual([...lengthGroupedOrder([], 4, new Rng(0))], []);
    const o = lengthGroupedOrder([2, 9, 4], 4, new Rng(0));
    assert.deepEqual([...o].map((k) => [2, 9, 4][k]), [9, 4, 2]);
    assert.throws(() => lengthGroupedOrder([1, 2], 0, new Rng(0)), (e: Error & { code?: string }) => e.code === "PEFT_ERR_CONFIG");
  });

  test("evaluation order: stable sort by length", () => {
    assert.deepEqual(lengthSortedOrder([5, 2, 5, 1]), [3, 1, 0, 2]);
  });
});
