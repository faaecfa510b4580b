import assert from "node:assert/strict";
import { test } from "node:test";
import { CompiledGraph } from "../runtime/session.js";
import * as G from "./api.js";
import { Graph } from "./graph.js";
import { naiveConv } from "./conv.test-util.js";

const vals = (n: number, k: number) => Float32Array.from({ length: n }, (_, i) => (((i * k + 3) % 23) - 11) / 7);

for (const geo of [
  { s: [1, 1], p: [0, 0, 0, 0], d: [1, 1] },
  { s: [2, 2], p: [1, 1, 1, 1], d: [1, 1] },
  { s: [2, 1], p: [0, 2, 1, 0], d: [2, 1] },
] as const) {
  test(`Conv forward equals the loops and the inferred shape (strides ${geo.s}, pads ${geo.p}, dilations ${geo.d})`, async () => {
    const xs = [2, 3, 7, 6];
    const ws = [4, 3, 3, 2];
    const g = new Graph("conv");
    const x = g.input("x", "float32", ["batch", 3, 7, 6]);
    const w = g.input("w", "float32", ws);
    const b = g.input("b", "float32", [4]);
    const y = G.conv2d(x, w, b, { strides: geo.s, pads: geo.p, dilations: geo.d });
    g.output(y, "y");
    const xd = vals(2 * 3 * 7 * 6, 5);
    const wd = vals(4 * 3 * 3 * 2, 7);
    const bd = vals(4, 3);
    const ref = naiveConv(xd, xs, wd, ws, bd, geo.s, geo.p, geo.d);
    assert.deepEqual(y.shape, ["batch", ...ref.shape.slice(1)]);
    const cg = await CompiledGraph.create(g, { threads: 1 });
    try {
      const out = (await cg.run({ x: { dtype: "float32", shape: xs, data: xd }, w: { dtype: "float32", shape: ws, data: wd }, b: { dtype: "float32", shape: [4], data: bd } })).y!;
      assert.deepEqual(out.shape, ref.shape);
      (out.data as Float32Array).forEach((v, i) => assert.ok(Math.abs(v - ref.data[i]!) < 1e-4, `at ${i}: ${v} vs ${ref.data[i]}`));
    } finally {
      await cg.release();
    }
  });
}

test("Conv shape errors are GraphBuildErrors naming the op", () => {
  const g = new Graph("bad");
  const x = g.input("x", "float32", [1, 3, 5, 5]);
  const isBuild = (re: RegExp) => (e: unknown) => (e as { code?: string }).code === "PEFT_ERR_GRAPH_BUILD" && re.test((e as Error).message);
  assert.throws(() => G.conv2d(x, g.input("w1", "float32", [2, 4, 3, 3]), null), isBuild(/channels differ/));
  assert.throws(() => G.conv2d(x, g.input("w2", "float32", [2, 3, 7, 7]), null), isBuild(/smaller than the kernel/));
  assert.throws(() => G.conv2d(g.input("x3", "float32", [3, 5, 5]), g.input("w3", "float32", [2, 3, 3, 3]), null), isBuild(/4-D/));
  assert.throws(() => G.conv2d(x, g.input("w4", "float32", [2, 3, 3, 3]), null, { strides: [0, 1] }), isBuild(/strides/));
  assert.throws(() => g.op1("Conv", [x, g.input("w5", "float32", [3, 1, 3, 3])], { group: 3 }), isBuild(/group 1/));
  assert.throws(() => G.conv2d(x, g.input("w6", "float32", [2, 3, 3, 3]), g.input("b6", "float32", [3])), isBuild(/B must be/));
});
