import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { CompiledGraph } from "../runtime/session.js";
import type { Tensor } from "../tensor.js";
import * as G from "./api.js";
import { grad } from "./autodiff.js";
import { crossEntropy, dense, geluTanh, nextTokenCrossEntropy } from "./composite.js";
import { Graph } from "./graph.js";
import { liveNodes } from "./onnx.js";

async function run(g: Graph, feeds: Record<string, Tensor>): Promise<Record<string, Tensor>> {
  const s = await CompiledGraph.create(g, { threads: 1 });
  try {
    return await s.run(feeds);
  } finally {
    await s.release();
  }
}

/** The nodes `v` depends on. */
function liveNodesOf(g: Graph, v: ReturnType<typeof G.shapeOf>) {
  const need = new Set<number>([v.id]);
  const out = [];
  for (let k = g.nodes.length - 1; k >= 0; k--) {
    const n = g.nodes[k]!;
    if (n.outputs.some((o) => need.has(o.id))) {
      out.push(n);
      for (const i of n.inputs) need.add(i.id);
    }
  }
  return out;
}

const f64 = (shape: number[], data: number[]): Tensor => ({ dtype: "float64", shape, data: Float64Array.from(data) });
const seq = (n: number, f: (i: number) => number) => Array.from({ length: n }, (_, i) => f(i));

describe("composites", () => {
  test("geluTanh computes transformers' 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))", async () => {
    const xs = [-12, -3.5, -1, -0.25, 0, 0.3, 1, 2.5, 9];
    const g = new Graph("gelu");
    g.output(geluTanh(g.input("x", "float64", [xs.length])), "y");
    const y = (await run(g, { x: f64([xs.length], xs) })).y!.data as Float64Array;
    xs.forEach((x, i) => {
      const want = 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x ** 3)));
      assert.ok(Math.abs(y[i]! - want) <= 1e-12 * Math.max(1, Math.abs(want)), `x=${x}: ${y[i]} vs ${want}`);
    });
  });

  test("crossEntropy is the mean over non-ignored rows, and 0 when every row is ignored", async () => {
    const z = [0.1, -2, 0.7, 1.5, 0.3, -0.4, 2, 1, 0];
    const cases: [number[], number][] = [
      [[2, -100, 0], 0],
      [[-100, -100, -100], 0],
    ];
    for (const [labels] of cases) {
      const g = new Graph("ce");
      g.output(crossEntropy(g.input("z", "float64", [3, 3]), g.input("y", "int64", [3])), "loss");
      const loss = Number((await run(g, { z: f64([3, 3], z), y: { dtype: "int64", shape: [3], data: BigInt64Array.from(labels.map(BigInt)) } })).loss!.data[0]);
      let total = 0;
      let count = 0;
      labels.forEach((l, r) => {
        if (l === -100) return;
        const row = z.slice(3 * r, 3 * r + 3);
        const lse = Math.log(row.reduce((a, v) => a + Math.exp(v), 0));
        total += lse - row[l]!;
        count++;
      });
      const want = count ? total / count : 0;
      assert.ok(Math.abs(loss - want) < 1e-12, `labels ${labels}: ${loss} vs ${want}`);
    }
  });

  test("nextTokenCrossEntropy equals the loss on sliced logits (values and gradients)", async () => {
    for (const prefix of [0, 2]) {
      const [b, s, v] = [2, 4, 5];
      const t = prefix + s;
      const g = new Graph("next");
      const z = g.input("z", "float64", [b, t, v]);
      const y = g.input("y", "int64", [b, s]);
      const shifted = nextTokenCrossEntropy(z, y, prefix);
      const sliced = crossEntropy(G.reshape(G.slice(z, [prefix], [-1], [1]), [-1, v]), G.reshape(G.slice(y, [1], [Number.MAX_SAFE_INTEGER], [1]), [-1]));
      g.output(shifted, "a");
      g.output(sliced, "b");
      g.output(grad(shifted, [z])[0]!, "ga");
      g.output(grad(sliced, [z])[0]!, "gb");
      const labels = [3, 1, -100, 4, 0, 2, 2, -100];
      const out = await run(g, {
        z: f64([b, t, v], seq(b * t * v, (i) => Math.sin(i * 1.7))),
        y: { dtype: "int64", shape: [b, s], data: BigInt64Array.from(labels.map(BigInt)) },
      });
      const [la, lb] = [Number(out.a!.data[0]), Number(out.b!.data[0])];
      assert.ok(la > 0 && Math.abs(la - lb) < 1e-12, `prefix ${prefix}: ${la} vs ${lb}`);
      const [ga, gb] = [out.ga!.data as Float64Array, out.gb!.data as Float64Array];
      assert.ok(ga.some((x) => Math.abs(x) > 1e-3));
      ga.forEach((x, i) => assert.ok(Math.abs(x - gb[i]!) < 1e-12, `prefix ${prefix} grad[${i}]: ${x} vs ${gb[i]}`));
    }
  });

  test("dense: one Gemm on the flattened rows, bias accumulated, both weight layouts, shape kept", async () => {
    const [b, s, k, n] = [2, 3, 4, 5];
    const x = seq(b * s * k, (i) => ((i * 7) % 11) / 5 - 1);
    const w = seq(k * n, (i) => ((i * 5) % 13) / 6 - 1); // [k, n]
    const wT = seq(n * k, (i) => w[(i % k) * n + Math.floor(i / k)]!); // [n, k]
    const bias = seq(n, (i) => i / 10 - 0.2);
    const want = seq(b * s * n, (i) => {
      const [r, j] = [Math.floor(i / n), i % n];
      return bias[j]! + seq(k, (p) => x[r * k + p]! * w[p * n + j]!).reduce((a, v) => a + v, 0);
    });
    for (const transB of [false, true]) {
      const g = new Graph("dense");
      const xv = g.input("x", "float64", ["batch", s, k]);
      const y = dense(xv, g.initializer("w", f64(transB ? [n, k] : [k, n], transB ? wT : w)), g.initializer("b", f64([n], bias)), { transB, alpha: 1 });
      assert.deepEqual([...y.shape], ["batch", s, n]);
      g.output(y, "y");
      assert.equal(liveNodes(g).filter((nd) => nd.op === "Gemm").length, 1);
      assert.ok(!liveNodes(g).some((nd) => nd.op === "Add" || nd.op === "Transpose"));
      const got = (await run(g, { x: f64([b, s, k], x) })).y!;
      assert.deepEqual([...got.shape], [b, s, n]);
      const d = got.data as Float64Array;
      want.forEach((v, i) => assert.ok(Math.abs(d[i]! - v) < 1e-12, `transB=${transB} [${i}]: ${d[i]} vs ${v}`));
    }
  });

  test("shapeTensor: a constant for static shapes, read off the inputs (once per graph) for symbolic ones", async () => {
    const g = new Graph("shapes");
    const ids = g.input("ids", "int64", ["batch", "seq"]);
    const c = g.input("c", "float32", [2, 3]);
    const h = G.mul(G.cast(G.unsqueeze(ids, [2]), "float32"), g.constant({ dtype: "float32", shape: [4], data: Float32Array.of(1, 2, 3, 4) }));
    const h2 = G.add(h, 1);
    const sh = G.shapeTensor(h);
    assert.equal(G.shapeTensor(h2), sh, "same symbolic dims share one shape value");
    assert.ok(!liveNodesOf(g, sh).some((n) => n.inputs.includes(h)), "the shape does not read the activation");
    assert.notEqual(G.shapeTensor(h, 7), sh);
    assert.equal(G.shapeTensor(h2, 7), G.shapeTensor(h, 7));
    const sc = G.shapeTensor(c);
    assert.equal(sc.kind, "initializer");
    assert.deepEqual(Array.from(sc.data!.data as BigInt64Array, Number), [2, 3]);
    const flat = G.reshape(h, [-1, 4]);
    assert.deepEqual([...flat.shape], ["batch*seq", 4]);
    const r = G.reshape(flat, G.shapeTensor(h, 4));
    assert.deepEqual([...r.shape], ["batch", "seq", 4], "reshape to a traced shape keeps the dims");
    g.output(G.shapeTensor(flat), "flat_shape");
    g.output(G.shapeTensor(h, 9), "h_shape");
    const out = await run(g, { ids: { dtype: "int64", shape: [3, 5], data: new BigInt64Array(15) }, c: { dtype: "float32", shape: [2, 3], data: new Float32Array(6) } });
    assert.deepEqual(Array.from(out.flat_shape!.data as BigInt64Array, Number), [15, 4]);
    assert.deepEqual(Array.from(out.h_shape!.data as BigInt64Array, Number), [3, 5, 9]);
  });
});
