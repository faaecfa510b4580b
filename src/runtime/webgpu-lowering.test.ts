import assert from "node:assert/strict";
import { describe, test } from "node:test";
import onnxProto from "onnx-proto";
import { UnsupportedFileTypeError } from "../errors.js";
import * as G from "../graph/api.js";
import { grad } from "../graph/autodiff.js";
import { crossEntropy, dropout } from "../graph/composite.js";
import { Graph } from "../graph/graph.js";
import { toOnnx } from "../graph/onnx.js";
import { type Tensor, floatToHalf, toFloat64 } from "../tensor.js";
import { CompiledGraph, type Feeds, type Results } from "./session.js";
import { predictWebgpuPlacement } from "./webgpu-kernels.js";
import { lowerForWebgpu } from "./webgpu-lowering.js";

const { onnx } = onnxProto;

function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

function floats(dtype: "float32" | "float16" | "float64", shape: number[], scale: number, seed: number): Tensor {
  const r = rng(seed);
  const n = shape.reduce((p, d) => p * d, 1);
  const v = Array.from({ length: n }, () => (r() * 2 - 1) * scale);
  if (dtype === "float16") return { dtype, shape, data: Uint16Array.from(v, floatToHalf) };
  return { dtype, shape, data: dtype === "float32" ? Float32Array.from(v) : Float64Array.from(v) };
}

const labelsOf = (xs: number[]): Tensor => ({ dtype: "int64", shape: [xs.length], data: BigInt64Array.from(xs, (x) => BigInt(x)) });

async function run(bytes: Uint8Array, feeds: Feeds): Promise<Results> {
  const cg = await CompiledGraph.create(bytes, { ep: "cpu", threads: 1 });
  try {
    return await cg.run(feeds);
  } finally {
    await cg.release();
  }
}

function ops(bytes: Uint8Array): string[] {
  return (onnx.ModelProto.decode(bytes).graph?.node ?? []).map((n) => n.opType ?? "");
}

/** max |a − b| / (atol + |b|) over two tensors of the same shape (NaN must match NaN). */
function maxRelErr(a: Tensor, b: Tensor, atol: number): number {
  assert.deepEqual(a.shape, b.shape);
  const x = toFloat64(a);
  const y = toFloat64(b);
  let worst = 0;
  for (let i = 0; i < x.length; i++) {
    if (Number.isNaN(y[i]!)) assert.ok(Number.isNaN(x[i]!), `element ${i}: ${x[i]} where the original gives NaN`);
    else worst = Math.max(worst, Math.abs(x[i]! - y[i]!) / (atol + Math.abs(y[i]!)));
  }
  return worst;
}

/** Original and lowered graph on the CPU EP, same feeds; returns both results and the lowering. */
async function compare(g: Graph, feeds: Feeds, fromBytes = false) {
  const original = toOnnx(g);
  const lowering = lowerForWebgpu(fromBytes ? original : g);
  return { want: await run(original, feeds), got: await run(lowering.bytes, feeds), lowering };
}

// relative tolerance of each dtype's rounding (a few units in the last place)
const TOL: Record<string, number> = { float32: 1e-5, float16: 4e-3 };

describe("lowerForWebgpu: SoftmaxCrossEntropyLoss", () => {
  for (const dtype of ["float32", "float16"] as const) {
    for (const fromBytes of [false, true]) {
      test(`${dtype}${fromBytes ? " (ONNX bytes, inferred dtypes)" : ""}: rows and log-probs match, ignored rows are 0`, async () => {
        const g = new Graph("sce");
        const x = g.input("x", dtype, ["n", 11]);
        const labels = g.input("labels", "int64", ["n"]);
        // the scores pass through nodes, as logits do, so the bytes path must infer their dtype
        const [rows, logProb] = g.op("SoftmaxCrossEntropyLoss", [G.mul(G.reshape(x, [-1, 11]), 1.5), labels], { reduction: "none", ignore_index: -100 });
        g.output(rows!, "rows");
        g.output(logProb!, "log_prob");
        const feeds = { x: floats(dtype, [6, 11], 8, 1), labels: labelsOf([3, -100, 0, 10, -100, 7]) };
        const { want, got, lowering } = await compare(g, feeds, fromBytes);
        assert.equal(lowering.lowered.SoftmaxCrossEntropyLoss, 1);
        assert.ok(!ops(lowering.bytes).includes("SoftmaxCrossEntropyLoss"));
        assert.equal(got.rows!.dtype, dtype);
        assert.ok(maxRelErr(got.rows!, want.rows!, 1e-3) <= TOL[dtype]!, "rows");
        assert.ok(maxRelErr(got.log_prob!, want.log_prob!, 1e-3) <= TOL[dtype]!, "log_prob");
        const r = toFloat64(got.rows!);
        assert.equal(r[1], 0);
        assert.equal(r[4], 0);
        assert.ok(r[0]! > 0);
      });
    }
  }

  test("all rows ignored: loss 0 and zero gradient, as the original", async () => {
    const g = new Graph("sce-all-ignored");
    const w = g.input("w", "float32", [5, 9]);
    const x = g.input("x", "float32", ["n", 5]);
    const labels = g.input("labels", "int64", ["n"]);
    const loss = g.output(crossEntropy(G.matmul(x, w), labels), "loss");
    g.output(grad(loss, [w])[0]!, "dw");
    const feeds = { w: floats("float32", [5, 9], 1, 2), x: floats("float32", [4, 5], 3, 3), labels: labelsOf([-100, -100, -100, -100]) };
    const { want, got } = await compare(g, feeds);
    // ±0: the original sums −0 rows
    assert.ok(toFloat64(want.loss!)[0] === 0);
    assert.ok(toFloat64(got.loss!)[0] === 0);
    assert.ok(toFloat64(got.dw!).every((v) => v === 0));
  });

  test("loss and gradient of crossEntropy (both outputs used by the backward) match", async () => {
    const g = new Graph("sce-grad");
    const w = g.input("w", "float32", [6, 13]);
    const x = g.input("x", "float32", ["n", 6]);
    const labels = g.input("labels", "int64", ["n"]);
    const loss = g.output(crossEntropy(G.matmul(x, w), labels), "loss");
    g.output(grad(loss, [w])[0]!, "dw");
    const feeds = { w: floats("float32", [6, 13], 1, 4), x: floats("float32", [7, 6], 4, 5), labels: labelsOf([1, 12, -100, 0, 5, -100, 9]) };
    const { want, got, lowering } = await compare(g, feeds);
    assert.equal(lowering.lowered.SoftmaxCrossEntropyLoss, 1);
    assert.ok(maxRelErr(got.loss!, want.loss!, 0) <= 1e-6);
    assert.ok(maxRelErr(got.dw!, want.dw!, 1e-4) <= 1e-5);
    assert.ok(toFloat64(want.dw!).some((v) => Math.abs(v) > 1e-3));
  });

  test("float64 scores, other reductions and class weights are kept, with a reason", () => {
    const g = new Graph("sce-kept");
    const x = g.input("x", "float64", ["n", 4]);
    const labels = g.input("labels", "int64", ["n"]);
    g.output(g.op("SoftmaxCrossEntropyLoss", [x, labels], { reduction: "none", ignore_index: -100 })[0]!, "rows");
    const r = lowerForWebgpu(g);
    assert.equal(r.lowered.SoftmaxCrossEntropyLoss, 0);
    assert.match(r.skipped[0]!.reason, /float64/);
    assert.ok(ops(r.bytes).includes("SoftmaxCrossEntropyLoss"));
    // reduction "mean" (the ONNX default) in ONNX bytes
    const m = onnx.ModelProto.decode(toOnnx(g));
    m.graph!.node![0]!.attribute = [];
    const bytes = onnx.ModelProto.encode(m).finish();
    const r2 = lowerForWebgpu(bytes);
    assert.match(r2.skipped[0]!.reason, /reduction 'mean'/);
    assert.equal(r2.bytes, bytes, "unchanged bytes are returned as they are");
  });
});

describe("lowerForWebgpu: LogSoftmax, Sign, Size, RandomUniformLike", () => {
  for (const dtype of ["float32", "float16"] as const) {
    for (const axis of [-1, 0]) {
      test(`LogSoftmax ${dtype} axis ${axis}`, async () => {
        const g = new Graph("lsm");
        const x = g.input("x", dtype, [5, 7]);
        g.output(G.logSoftmax(G.add(x, 0.25), axis), "y");
        const { want, got, lowering } = await compare(g, { x: floats(dtype, [5, 7], 6, 7 + axis) });
        assert.equal(lowering.lowered.LogSoftmax, 1);
        assert.ok(!ops(lowering.bytes).includes("LogSoftmax"));
        assert.ok(maxRelErr(got.y!, want.y!, 1e-3) <= TOL[dtype]!);
      });
    }
    test(`Sign ${dtype}: ±1, ±0 → +0, ±∞ as onnxruntime's Sign; NaN → NaN`, async () => {
      const g = new Graph("sign");
      const x = g.input("x", dtype, ["n"]);
      g.output(G.sign(G.mul(x, 1)), "y");
      const vals = [NaN, -0, 0, Infinity, -Infinity, 2.5, -3, 1e-4, -1e-4];
      const feed: Tensor = dtype === "float16" ? { dtype, shape: [vals.length], data: Uint16Array.from(vals, floatToHalf) } : { dtype, shape: [vals.length], data: Float32Array.from(vals) };
      const { want, got, lowering } = await compare(g, { x: feed });
      assert.equal(lowering.lowered.Sign, 1);
      const a = toFloat64(got.y!);
      const b = toFloat64(want.y!);
      assert.ok(Number.isNaN(a[0]!));
      // onnxruntime's float16 Sign gives 0 for NaN (its float32 Sign gives NaN); the lowered form keeps NaN in both
      if (dtype === "float32") assert.ok(Number.isNaN(b[0]!));
      for (let i = 1; i < vals.length; i++) assert.ok(Object.is(a[i], b[i]), `sign(${vals[i]}): ${a[i]} vs ${b[i]}`);
    });
  }

  test("Abs + ReduceMean gradient with symbolic shapes (Sign and Size in the backward)", async () => {
    const g = new Graph("abs-mean");
    const w = g.input("w", "float32", [1, 5]);
    const x = g.input("x", "float32", ["n", 5]);
    // the mean over the symbolic axis counts its elements with Size in the backward
    const loss = g.output(G.sumAll(G.reduceMean(G.abs(G.mul(x, w)), [0])), "loss");
    g.output(grad(loss, [w])[0]!, "dw");
    const feeds = { w: floats("float32", [1, 5], 1, 8), x: floats("float32", [3, 5], 2, 9) };
    const { want, got, lowering } = await compare(g, feeds);
    assert.equal(lowering.lowered.Sign, 1);
    assert.ok(lowering.lowered.Size >= 1, "the Size of a node output is lowered");
    assert.ok(!ops(lowering.bytes).includes("Sign"));
    assert.ok(maxRelErr(got.dw!, want.dw!, 1e-6) <= 1e-6);
    assert.ok(maxRelErr(got.loss!, want.loss!, 0) <= 1e-6);
  });

  test("Size → ReduceProd(Shape): same int64 count, graph inputs left alone", async () => {
    const g = new Graph("size");
    const x = g.input("x", "float32", ["a", "b", 3]);
    g.output(G.size(G.mul(x, 2)), "n");
    g.output(G.size(x), "m");
    const { want, got, lowering } = await compare(g, { x: floats("float32", [4, 2, 3], 1, 10) });
    assert.equal(lowering.lowered.Size, 1);
    assert.equal(lowering.skipped.length, 1);
    assert.match(lowering.skipped[0]!.reason, /graph input/);
    assert.deepEqual([...(got.n!.data as BigInt64Array)], [24n]);
    assert.deepEqual(got.n!.data, want.n!.data);
    assert.deepEqual(got.m!.data, want.m!.data);
  });

  for (const dtype of ["float32", "float16"] as const) {
    test(`RandomUniformLike (dropout, ${dtype}): the same masks, run after run, without reading x`, async () => {
      const g = new Graph("dropout");
      const x = g.input("x", dtype, ["n", 6]);
      g.output(dropout(G.add(x, 1), 0.4, 17), "y");
      g.output(dropout(G.add(x, 2), 0.3, 18), "z");
      const feeds = { x: floats(dtype, [9, 6], 1, 11) };
      const original = await CompiledGraph.create(toOnnx(g), { ep: "cpu", threads: 1 });
      const lowering = lowerForWebgpu(g);
      const lowered = await CompiledGraph.create(lowering.bytes, { ep: "cpu", threads: 1 });
      assert.equal(lowering.lowered.RandomUniformLike, 2);
      const rul = onnx.ModelProto.decode(lowering.bytes).graph!.node!.filter((n) => n.opType === "RandomUniformLike");
      assert.ok(rul.every((n) => n.input![0]!.includes("expand")), "RandomUniformLike reads the int8 Expand");
      for (let k = 0; k < 2; k++) {
        const [a, b] = [await original.run(feeds), await lowered.run(feeds)];
        assert.deepEqual(b.y!.data, a.y!.data);
        assert.deepEqual(b.z!.data, a.z!.data);
        assert.ok(toFloat64(a.y!).some((v) => v === 0) && toFloat64(a.y!).some((v) => v !== 0));
      }
      await original.release();
      await lowered.release();
    });
  }
});

describe("lowerForWebgpu: the model", () => {
  test("placement: no kernel-less node and no internal copy of the scores left", () => {
    const g = new Graph("loss");
    const x = g.input("x", "float32", ["n", 1000]);
    const w = g.input("w", "float32", [1000, 1000]);
    const labels = g.input("labels", "int64", ["n"]);
    const loss = g.output(crossEntropy(G.matmul(x, w), labels), "loss");
    g.output(grad(loss, [w])[0]!, "dw");
    const dims = { n: 64 };
    const before = predictWebgpuPlacement(g, { dims }).summary;
    const after = predictWebgpuPlacement(lowerForWebgpu(g).bytes, { dims }).summary;
    assert.equal(before.cpuByReason["no-kernel"], 1);
    assert.equal(after.cpuByReason["no-kernel"], 0);
    assert.ok(before.bytesByKind.internal >= 2 * 64 * 1000 * 4, `before: ${before.bytesByKind.internal} B`);
    assert.ok(after.bytesByKind.internal < 64 * 1000, `after: ${after.bytesByKind.internal} B`);
  });

  test("dropout placement: the noise is uploaded, x is not read back; annotate gives the copy sizes", () => {
    const g = new Graph("drop");
    const x = g.input("x", "float32", ["n", 256]);
    g.output(G.mul(dropout(G.mul(x, 2), 0.1, 1), 3), "y");
    const dims = { n: 32 };
    const before = predictWebgpuPlacement(g, { dims });
    const plain = lowerForWebgpu(g);
    assert.equal(onnx.ModelProto.decode(plain.bytes).graph!.valueInfo!.length, 0, "no value_info unless asked");
    const annotated = lowerForWebgpu(g, { annotate: true });
    const after = predictWebgpuPlacement(annotated.bytes, { dims });
    const readBack = (p: typeof before) => p.crossings.filter((c) => c.kind === "internal" && c.direction === "toHost");
    assert.equal(readBack(before).length, 1);
    assert.equal(readBack(before)[0]!.bytes, 32 * 256 * 4);
    assert.equal(readBack(after).length, 0);
    const up = after.crossings.filter((c) => c.kind === "internal" && c.direction === "toDevice");
    assert.deepEqual(up.map((c) => c.bytes), [32 * 256 * 4], "only the uniform noise goes to the GPU");
    assert.equal(after.summary.unknownSizeCrossings, 0);
    const vi = new Map(onnx.ModelProto.decode(annotated.bytes).graph!.valueInfo!.map((v) => [v.name, v.type!.tensorType!]));
    const expand = [...vi.keys()].find((k) => k!.endsWith("/expand"))!;
    assert.deepEqual(vi.get(expand)!.shape!.dim!.map((d) => d.dimParam || Number(d.dimValue)), ["n", 256]);
    assert.equal(vi.get(expand)!.elemType, 3, "int8");
  });

  test("inputs, outputs and untouched nodes are kept; ops option; bad bytes", () => {
    const g = new Graph("keep");
    const x = g.input("x", "float32", ["n", 4]);
    g.output(G.logSoftmax(G.mul(x, 2)), "a");
    g.output(G.sign(G.mul(x, 3)), "b");
    const only = lowerForWebgpu(g, { ops: ["Sign"] });
    assert.deepEqual(only.lowered, { SoftmaxCrossEntropyLoss: 0, LogSoftmax: 0, RandomUniformLike: 0, Sign: 1, Size: 0 });
    const m = onnx.ModelProto.decode(only.bytes);
    assert.deepEqual(m.graph!.input!.map((v) => v.name), ["x"]);
    assert.deepEqual(m.graph!.output!.map((v) => v.name), ["a", "b"]);
    assert.ok(ops(only.bytes).includes("LogSoftmax"));
    assert.equal(only.nodesAfter - only.nodesBefore, 4);
    const plain = new Graph("plain");
    plain.output(G.mul(plain.input("x", "float32", [2]), 2), "y");
    const none = toOnnx(plain);
    assert.equal(lowerForWebgpu(none).bytes, none);
    plain.output(G.mul(G.mul(plain.inputs[0]!, 3), 4), "z");
    const vi = onnx.ModelProto.decode(lowerForWebgpu(plain, { annotate: true }).bytes).graph!.valueInfo!;
    assert.deepEqual(vi.map((v) => v.type!.tensorType!.shape!.dim!.map((d) => Number(d.dimValue))), [[2]], "annotate with nothing to lower");
    assert.throws(() => lowerForWebgpu(new Uint8Array([1, 2, 3, 250])), UnsupportedFileTypeError);
  });
});
