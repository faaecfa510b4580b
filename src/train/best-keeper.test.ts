import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { BestKeeper } from "./best-keeper.js";

describe("BestKeeper", () => {
  test("keeps a copy of the best parameters, counts evaluations since, stops when patience runs out", () => {
    const w = new Float32Array([1, 2]);
    const params = new Map([["w", w]]);
    const keeper = new BestKeeper<{ acc: number }>((a, b) => a.acc > b.acc, 2);
    assert.equal(keeper.observe({ acc: 0.5 }, params), false);
    w.set([3, 4]);
    assert.equal(keeper.observe({ acc: 0.7 }, params), false);
    w.set([5, 6]);
    assert.equal(keeper.observe({ acc: 0.6 }, params), false);
    assert.equal(keeper.sinceBest, 1);
    assert.equal(keeper.observe({ acc: 0.7 }, params), true, "a tie is no improvement");
    assert.deepEqual(keeper.best, { acc: 0.7 });
    keeper.restoreInto(params);
    assert.deepEqual([...w], [3, 4]);
  });

  test("state and restore carry a run across a checkpoint; no patience never stops", () => {
    const a = new BestKeeper<{ loss: number }>((x, y) => x.loss < y.loss);
    a.observe({ loss: 2 }, new Map([["w", new Float32Array([7])]]));
    a.observe({ loss: 3 }, new Map([["w", new Float32Array([8])]]));
    const b = new BestKeeper<{ loss: number }>((x, y) => x.loss < y.loss);
    b.restore(a.state(), a.bestParams);
    assert.deepEqual(b.state(), { best: { loss: 2 }, sinceBest: 1 });
    for (let i = 0; i < 10; i++) assert.equal(b.observe({ loss: 5 }, new Map()), false);
    const w = new Float32Array([0]);
    b.restoreInto(new Map([["w", w]]));
    assert.equal(w[0], 7);
  });
});
