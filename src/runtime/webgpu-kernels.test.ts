import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { ConfigError, GraphBuildError, UnsupportedFileTypeError } from "../errors.js";
import * as G from "../graph/api.js";
import { grad } from "../graph/autodiff.js";
import { Graph } from "../graph/graph.js";
import { toOnnx } from "../graph/onnx.js";
import { OPSET } from "../graph/opset.js";
import { loadModel } from "../models/load.js";
import { PeftModel } from "../peft/peft-model.js";
import { taskLoss } from "../train/loss.js";
import { GRAD_PREFIX } from "../train/step.js";
import { fixturePath } from "../util/paths.js";
import { WEBGPU_KERNELS, describeWebgpuCpuNodes, lookupWebgpuKernel, predictWebgpuPlacement } from "./webgpu-kernels.js";

function placementOf(p: ReturnType<typeof predictWebgpuPlacement>, op: string) {
  const n = p.nodes.filter((x) => x.op === op);
  assert.ok(n.length > 0, `no ${op} node`);
  return n;
}

describe("WebGPU kernel table", () => {
  test("lookup honours opset ranges and type constraints", () => {
    assert.ok(lookupWebgpuKernel("Add", OPSET, ["float32", "float32"]).kernel);
    assert.ok(lookupWebgpuKernel("Add", OPSET, ["int32", "int32"]).kernel);
    assert.equal(lookupWebgpuKernel("Add", OPSET, ["int64", "int64"]).reason, "dtype");
    assert.equal(lookupWebgpuKernel("Add", OPSET, ["float64", "float64"]).reason, "dtype");
    assert.equal(lookupWebgpuKernel("LayerNormalization", 16, ["float32", "float32", "float32"]).reason, "opset");
    assert.ok(lookupWebgpuKernel("LayerNormalization", 17, ["float32", "float32", "float32"], ["float32", "float32", "float32"]).kernel);
    assert.equal(lookupWebgpuKernel("LogSoftmax", OPSET, ["float32"]).reason, "no-kernel");
    // Cast: int64 outputs are fine, int64 inputs are not
    assert.ok(lookupWebgpuKernel("Cast", OPSET, ["float32"], ["int64"]).kernel);
    assert.equal(lookupWebgpuKernel("Cast", OPSET, ["int64"], ["float32"]).reason, "dtype");
    assert.equal(lookupWebgpuKernel("Cast", OPSET, ["float32"], ["float64"]).reason, "dtype");
    // contrib ops live in their own domain
    assert.ok(lookupWebgpuKernel("FastGelu", 1, ["float32"], [], "com.microsoft").kernel);
    assert.equal(lookupWebgpuKernel("FastGelu", 1, ["float32"]).reason, "no-kernel");
  });

  test("every registered range is well formed and an op's ranges do not overlap", () => {
    const seen = new Map<string, [number, number][]>();
    for (const k of WEBGPU_KERNELS) {
      for (const [a, b] of k.versions) {
        assert.ok(a >= 1 && (b === null || b >= a), `${k.op} [${a}, ${b}]`);
        const key = `${k.domain}:${k.op}`;
        const prev = seen.get(key) ?? [];
        for (const [c, d] of prev) assert.ok((b ?? Infinity) < c || a > d, `${key}: [${a}, ${b}] overlaps [${c}, ${d}]`);
        seen.set(key, [...prev, [a, b ?? Infinity]]);
      }
      for (const p of [...k.inputs, ...(k.outputs ?? [])]) if (p !== null) assert.ok(k.types[p], `${k.op}: type parameter ${p} has no types`);
    }
  });
});

describe("predictWebgpuPlacement on small graphs", () => {
  test("a supported op runs on the GPU; its graph input and output cross once each", () => {
    const g = new Graph("t");
    const a = g.input("a", "float32", ["n", 3]);
    g.output(G.exp(G.add(a, a)), "y");
    const p = predictWebgpuPlacement(g, { dims: { n: 4 } });
    assert.deepEqual(p.nodes.map((n) => n.ep), ["webgpu", "webgpu"]);
    assert.equal(p.summary.cpuNodes, 0);
    assert.deepEqual(p.summary.crossingsByKind, { feed: 1, internal: 0, fetch: 1 });
    assert.equal(p.summary.bytes, 2 * 4 * 3 * 4);
    assert.equal(p.summary.unknownSizeCrossings, 0);
    const resident = predictWebgpuPlacement(g, { dims: { n: 4 }, deviceInputs: ["a"], deviceOutputs: ["y"] });
    assert.equal(resident.summary.crossings, 0);
    // without the dim value the sizes are unknown, not guessed
    assert.equal(predictWebgpuPlacement(g).summary.unknownSizeCrossings, 2);
  });

  test("an op without a WebGPU kernel falls back and costs a copy each way between GPU nodes", () => {
    const g = new Graph("t");
    const a = g.input("a", "float32", [8, 8]);
    const s = G.sign(G.exp(a)); // Sign has no WebGPU kernel
    g.output(G.mul(s, a), "y");
    const p = predictWebgpuPlacement(g);
    const sign = placementOf(p, "Sign")[0]!;
    assert.equal(sign.ep, "cpu");
    assert.equal(sign.reason, "no-kernel");
    assert.equal(placementOf(p, "Mul")[0]!.ep, "webgpu");
    const internal = p.crossings.filter((c) => c.kind === "internal");
    assert.deepEqual(internal.map((c) => c.direction).sort(), ["toDevice", "toHost"]);
    assert.ok(internal.every((c) => c.bytes === 8 * 8 * 4));
    assert.deepEqual(p.summary.cpuByOp, { Sign: 1 });
  });

  test("float64 and int64 tensors have no WebGPU kernels", () => {
    const g = new Graph("t");
    const d = g.input("d", "float64", [4]);
    const i = g.input("i", "int64", [4]);
    const f = g.input("f", "float32", [4]);
    g.output(G.add(d, d), "y64");
    g.output(G.mul(i, i), "yi");
    g.output(G.add(f, f), "y32");
    const p = predictWebgpuPlacement(g);
    const [f64, i64, f32] = p.nodes;
    assert.equal(f64!.ep, "cpu");
    assert.equal(f64!.reason, "dtype");
    assert.match(f64!.detail, /float64/);
    assert.equal(i64!.reason, "dtype");
    assert.equal(f32!.ep, "webgpu");
    // host-computed outputs are fetched without a copy; only the float32 path crosses
    assert.deepEqual(p.crossings.map((c) => c.value).sort(), ["f", "y32"]);
    assert.ok(describeWebgpuCpuNodes(p).some((s) => s.startsWith("Add — dtype (input 0 is float64")));
  });

  test("a node fed only by host tensors and small constants moves to the CPU (GetCpuPreferredNodes), float16 excepted", () => {
    for (const dtype of ["float32", "float16"] as const) {
      const g = new Graph("t");
      const x = g.input("x", "float32", ["n", 5]);
      const y = G.exp(x);
      // Shape (WebGPU kernel, host output) → Gather from a small constant → Add a scalar
      const table = g.constant({ dtype: "float32", shape: [8], data: Float32Array.from({ length: 8 }, (_, i) => i) });
      const picked = G.gather(dtype === "float32" ? table : G.cast(table, "float16"), G.shapeOf(y), 0);
      const scaled = G.add(picked, g.scalar(1, dtype));
      g.output(G.mul(G.cast(G.reduceSum(scaled, [0], true), "float32"), y), "z");
      // onnxruntime-node 1.30 logs the move but keeps the nodes on the GPU (probed): the default
      assert.equal(predictWebgpuPlacement(g).summary.cpuNodes, 0);
      const p = predictWebgpuPlacement(g, { dims: { n: 3 }, cpuPreferredFallback: true });
      assert.equal(placementOf(p, "Shape")[0]!.ep, "webgpu");
      const [gather, add] = [placementOf(p, "Gather")[0]!, placementOf(p, "Add")[0]!];
      if (dtype === "float32") {
        assert.deepEqual([gather.reason, add.reason], ["cpu-preferred", "cpu-preferred"]);
        // the ReduceSum reads a host tensor through an axes constant it takes on the host: traced too
        assert.equal(placementOf(p, "ReduceSum")[0]!.reason, "cpu-preferred");
        assert.equal(placementOf(p, "Mul")[0]!.ep, "webgpu");
      } else assert.deepEqual([gather.ep, add.ep], ["webgpu", "webgpu"]);
    }
  });

  test("nodes after a CPU fallback are not pulled to the CPU (onnxruntime 1.30 traces only from WebGPU host outputs)", () => {
    const g = new Graph("t");
    const x = g.input("x", "float32", ["n", 5]);
    const y = G.exp(x);
    const dims = G.cast(G.shapeOf(y), "float32"); // Cast from int64: no WebGPU kernel
    const scaled = G.add(dims, g.scalar(1, "float32"));
    g.output(G.mul(G.reduceSum(scaled, [0], true), y), "z");
    const p = predictWebgpuPlacement(g, { dims: { n: 3 }, cpuPreferredFallback: true });
    assert.equal(placementOf(p, "Cast")[0]!.reason, "dtype");
    assert.equal(placementOf(p, "Add")[0]!.ep, "webgpu");
    // the Shape output is already on the host: no copy before the Cast, one after it
    assert.deepEqual(
      p.crossings.filter((c) => c.kind === "internal").map((c) => [c.producer, c.direction]),
      [["Cast_2", "toDevice"]],
    );
  });

  test("ONNX bytes give the same placement as the graph", () => {
    const g = new Graph("t");
    const a = g.input("a", "float32", ["n", 4]);
    const ids = g.input("ids", "int64", ["n"]);
    const w = g.constant({ dtype: "float32", shape: [10, 4], data: new Float32Array(40) });
    const e = G.gather(w, G.add(ids, g.scalar(1, "int64")), 0);
    g.output(G.add(e, a), "y");
    const fromGraph = predictWebgpuPlacement(g, { dims: { n: 2 } });
    const fromBytes = predictWebgpuPlacement(toOnnx(g), { dims: { n: 2 } });
    assert.deepEqual(fromBytes.nodes, fromGraph.nodes);
    assert.deepEqual(
      fromBytes.crossings.map((c) => [c.value, c.direction, c.kind]),
      fromGraph.crossings.map((c) => [c.value, c.direction, c.kind]),
    );
    assert.equal(fromGraph.nodes.find((n) => n.op === "Add" && n.reason === "dtype")?.ep, "cpu");
  });

  test("bad input raises typed errors", () => {
    assert.throws(() => predictWebgpuPlacement(new Uint8Array([0xff, 0xff, 0xff, 0x07])), UnsupportedFileTypeError);
    const g = new Graph("t");
    g.output(G.exp(g.input("a", "float32", ["n"])), "y");
    assert.throws(() => predictWebgpuPlacement(g, { dims: { n: 0 } }), ConfigError);
    assert.throws(() => predictWebgpuPlacement(g, { dims: { n: 1.5 } }), ConfigError);
  });
});

interface Built {
  readonly graph: Graph;
  readonly vocab: number;
}

function loraModel(model: "gpt2" | "llama", trainable: boolean): PeftModel {
  return PeftModel.fromPretrained(loadModel(fixturePath("peft-parity", model, "base")), fixturePath("peft-parity", model, "lora"), { isTrainable: trainable });
}

/** The training-step graph as TrainStep.create builds it (dropout off), without a session. */
function trainGraph(model: "gpt2" | "llama"): Built {
  const built = loraModel(model, true).buildGraph({ training: true, dropout: false });
  const g = built.graph;
  const labels = g.input("labels", "int64", ["batch", "seq"]);
  const loss = taskLoss("causal-lm", built.outputs.logits, labels);
  g.output(loss, "loss");
  const names = [...built.trainable.keys()];
  grad(
    loss,
    names.map((n) => g.inputs.find((v) => v.name === n)!),
  ).forEach((gv, i) => g.output(gv, GRAD_PREFIX + names[i]!));
  return { graph: g, vocab: built.outputs.logits.shape[2] as number };
}

function forwardGraph(model: "gpt2" | "llama"): Built {
  const built = loraModel(model, false).buildGraph({});
  built.graph.output(built.outputs.logits, "logits");
  return { graph: built.graph, vocab: built.outputs.logits.shape[2] as number };
}

const HEAVY = ["MatMul", "Gemm", "Softmax", "LayerNormalization", "Transpose", "Sigmoid", "Exp"];
const dims = { batch: 4, seq: 16 };

describe("predicted placement of the real graphs (tiny fixtures)", () => {
  for (const model of ["gpt2", "llama"] as const) {
    test(`${model} LoRA training step: compute on the GPU, int64 bookkeeping and the loss on the CPU`, (t) => {
      const { graph, vocab } = trainGraph(model);
      const p = predictWebgpuPlacement(graph, { dims });
      for (const n of p.nodes) if (HEAVY.includes(n.op)) assert.equal(n.ep, "webgpu", `${n.op} ${n.name}`);
      const sce = placementOf(p, "SoftmaxCrossEntropyLoss")[0]!;
      assert.equal(sce.ep, "cpu");
      assert.equal(sce.reason, "no-kernel");
      // every other fallback is an int64 (shape, position, mask, label) computation
      for (const n of p.nodes.filter((x) => x.ep === "cpu" && x.op !== "SoftmaxCrossEntropyLoss")) {
        assert.equal(n.reason, "dtype", `${n.op} ${n.name}`);
        assert.match(n.detail, /int64/, `${n.op} ${n.name}`);
      }
      // the largest copies: the logits to the host for the loss and the log-probabilities back
      const logitsBytes = dims.batch * dims.seq * vocab * 4;
      const big = p.crossings.filter((c) => c.kind === "internal" && c.bytes === logitsBytes);
      assert.deepEqual(big.map((c) => c.direction).sort(), ["toDevice", "toHost"]);
      assert.ok(p.summary.bytesByKind.internal >= 2 * logitsBytes);
      // LoRA tensors in, their gradients and the loss out
      const trainable = graph.inputs.filter((v) => v.name!.includes("lora_")).length;
      assert.ok(trainable > 0);
      assert.equal(p.crossings.filter((c) => c.kind === "fetch").length, trainable + 1);
      t.diagnostic(
        `${model} train: ${p.summary.nodes} nodes, ${p.summary.cpuNodes} on CPU (${describeWebgpuCpuNodes(p).join("; ")}); ` +
          `${p.summary.crossings} copies/step ${JSON.stringify(p.summary.crossingsByKind)}, ${p.summary.bytes} B at ${dims.batch}×${dims.seq}`,
      );
    });

    test(`${model} forward: only int64 mask/position nodes fall back`, (t) => {
      const { graph, vocab } = forwardGraph(model);
      const p = predictWebgpuPlacement(graph, { dims });
      for (const n of p.nodes) if (HEAVY.includes(n.op)) assert.equal(n.ep, "webgpu", `${n.op} ${n.name}`);
      assert.ok(p.nodes.filter((n) => n.ep === "cpu").every((n) => n.reason === "dtype" && /int64/.test(n.detail)));
      const fetch = p.crossings.filter((c) => c.kind === "fetch");
      assert.deepEqual(fetch.map((c) => [c.value, c.bytes]), [["logits", dims.batch * dims.seq * vocab * 4]]);
      t.diagnostic(`${model} forward: ${p.summary.nodes} nodes, ${p.summary.cpuNodes} on CPU; ${p.summary.crossings} copies, ${p.summary.bytes} B`);
    });
  }

  test("the predictor reads a graph with an unknown value name as an error", () => {
    const g = new Graph("t");
    g.output(G.exp(g.input("a", "float32", [2])), "y");
    const bytes = toOnnx(g);
    // rename the node's input inside the protobuf: 'a' → 'b' (one byte)
    const text = Buffer.from(bytes);
    const at = text.indexOf(Buffer.from([0x0a, 0x01, 0x61, 0x12])); // NodeProto.input = "a", then output
    assert.ok(at >= 0);
    text[at + 2] = 0x62;
    assert.throws(() => predictWebgpuPlacement(new Uint8Array(text)), GraphBuildError);
  });
});
