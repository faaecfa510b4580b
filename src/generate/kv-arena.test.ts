import assert from "node:assert/strict";
import { test } from "node:test";
import { KvArena } from "./kv-arena.js";

/** The cached keys of `slot` as [head][position][d] numbers. */
function keysOf(a: KvArena, layer: number, slot: number): number[][][] {
  const { kvHeads, headDim } = a.shape;
  const v = a.view(layer, "key", slot, slot + 1);
  return Array.from({ length: kvHeads }, (_, h) =>
    Array.from({ length: a.lengths[slot]! }, (_, p) => Array.from(v.subarray((h * a.capacity + p) * headDim, (h * a.capacity + p + 1) * headDim))),
  );
}

test("KvArena: appends in place, keeps the data when the capacity grows, moves slots, views slot ranges without copies", () => {
  const a = new KvArena({ layers: 2, kvHeads: 2, headDim: 3 });
  assert.equal(a.bytesPerToken, 2 * 2 * 2 * 3 * 4);
  a.ensure(2, 5);
  assert.equal(a.capacity, 16);
  // a run output [rows 2, heads 2, seq 5, d 3]: value = 1000·row + 100·head + 10·pos + d
  const out = Float32Array.from({ length: 2 * 2 * 5 * 3 }, (_, i) => {
    const d = i % 3;
    const p = Math.floor(i / 3) % 5;
    const h = Math.floor(i / 15) % 2;
    const r = Math.floor(i / 30);
    return 1000 * r + 100 * h + 10 * p + d;
  });
  const counts = [5, 3];
  for (let l = 0; l < 2; l++) for (let r = 0; r < 2; r++) for (const kind of ["key", "value"] as const) a.write(l, kind, r, out, r, 5, counts[r]!);
  a.advance(0, 5);
  a.advance(1, 3);
  const want = (r: number, n: number) => Array.from({ length: 2 }, (_, h) => Array.from({ length: n }, (_, p) => [0, 1, 2].map((d) => 1000 * r + 100 * h + 10 * p + d)));
  assert.deepEqual(keysOf(a, 1, 0), want(0, 5));
  assert.deepEqual(keysOf(a, 1, 1), want(1, 3));
  const before = a.view(0, "key", 0, 2);
  assert.equal(before.length, 2 * 2 * 16 * 3);
  a.ensure(3, 40); // capacity 16 → 64, one more slot
  assert.equal(a.capacity, 64);
  assert.deepEqual(keysOf(a, 1, 0), want(0, 5));
  assert.deepEqual(keysOf(a, 1, 1), want(1, 3));
  a.move(1, 2);
  assert.deepEqual(keysOf(a, 1, 2), want(1, 3));
  a.move(0, 1);
  assert.deepEqual(keysOf(a, 0, 1), want(0, 5));
  a.truncate(1, 2);
  assert.deepEqual(keysOf(a, 0, 1), want(0, 2));
  a.reset(1);
  assert.equal(a.lengths[1], 0);
});
