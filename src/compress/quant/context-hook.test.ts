/** `WeightSource.emitParam`, the hook through which a quantised weight enters a model graph. */
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import * as G from "../../graph/api.js";
import { Graph } from "../../graph/graph.js";
import type { Value } from "../../graph/types.js";
import { ModelContext, mapSource, type WeightSource } from "../../models/context.js";
import type { DType, Tensor } from "../../tensor.js";

const w: Tensor = { dtype: "float32", shape: [2, 3], data: Float32Array.of(1, 2, 3, 4, 5, 6) };

/** A source that emits `w` as 2·(w/2) computed in the graph, and counts its calls. */
function emitting(): WeightSource & { calls: string[] } {
  const base = mapSource(new Map([["w", w], ["b", { dtype: "float32", shape: [3], data: Float32Array.of(0, 0, 0) } as Tensor]]));
  const calls: string[] = [];
  return {
    ...base,
    calls,
    emitParam(name: string, g: Graph, dtype: DType): Value | null {
      calls.push(name);
      if (name !== "w") return null;
      const half = g.initializer(`${name}.half`, { dtype: "float32", shape: [2, 3], data: Float32Array.of(0.5, 1, 1.5, 2, 2.5, 3) });
      return G.cast(G.mul(half, 2), dtype);
    },
  };
}

describe("ModelContext with WeightSource.emitParam", () => {
  test("an emitted parameter replaces the initializer and is cached", () => {
    const src = emitting();
    const g = new Graph();
    const ctx = new ModelContext(g, src);
    const v = ctx.param("w", [2, 3]);
    assert.equal(v.kind, "node");
    assert.equal(ctx.param("w"), v);
    assert.deepEqual(src.calls, ["w"]);
    assert.ok(!g.initializers.some((i) => i.name === "w"));
    const b = ctx.param("b");
    assert.equal(b.kind, "initializer", "a null answer falls back to the tensor");
    const v64 = new ModelContext(new Graph(), src, { dtype: "float64" }).param("w");
    assert.equal(v64.dtype, "float64");
  });

  test("overrides, trainable parameters and dry runs never ask the hook", () => {
    const over = emitting();
    const o = new ModelContext(new Graph(), over, { overrides: new Map([["w", w]]) }).param("w");
    assert.equal(o.kind, "initializer");
    const tr = emitting();
    const ctx = new ModelContext(new Graph(), tr, { inputParams: (n) => n === "w" });
    assert.equal(ctx.param("w").kind, "input");
    assert.ok(ctx.inputParams.has("w"));
    const dry = emitting();
    assert.equal(new ModelContext(new Graph(), dry, { dryRun: true }).param("w").kind, "input");
    assert.deepEqual([...over.calls, ...tr.calls, ...dry.calls], []);
  });

  test("an emitted value of the wrong shape is a ShapeMismatchError naming the parameter", () => {
    assert.throws(() => new ModelContext(new Graph(), emitting()).param("w", [3, 2]), (e: Error & { code?: string; key?: string }) => {
      assert.equal(e.code, "PEFT_ERR_SHAPE_MISMATCH");
      assert.equal(e.key, "w");
      return true;
    });
  });
});
