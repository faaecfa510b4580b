/**
 * WebGPU runs against the CPU: each rewrite of the lowering pass and whole LoRA training steps of
 * the tiny fixture models, run by onnxruntime's WebGPU execution provider, against the graph as
 * built on the CPU EP. Needs a WebGPU adapter; every test skips without one (CI). On a machine
 * without a GPU, Mesa's lavapipe provides one (docs/webgpu.md, "Running the WebGPU tests without a GPU").
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import * as G from "../graph/api.js";
import { grad } from "../graph/autodiff.js";
import { crossEntropy, dropout } from "../graph/composite.js";
import { Graph } from "../graph/graph.js";
import { loadSafetensors } from "../io/safetensors.js";
import { loadModel } from "../models/load.js";
import { PeftModel } from "../peft/peft-model.js";
import { type Tensor, floatToHalf, toFloat64 } from "../tensor.js";
import { type Batch, TrainStep } from "../train/step.js";
import { fixturePath } from "../util/paths.js";
import { CompiledGraph, type Feeds, type Results, type SessionOptions } from "./session.js";

/** Why WebGPU cannot run here, or null when a session can be created. */
async function webgpuUnavailable(): Promise<string | null> {
  const g = new Graph("probe");
  g.output(G.mul(g.input("x", "float32", [2]), 2), "y");
  try {
    const cg = await CompiledGraph.create(g, { ep: "webgpu" });
    await cg.release();
    return null;
  } catch (e) {
    return `no WebGPU adapter (${(e instanceof Error ? e.message : String(e)).split("\n")[0]!.slice(0, 160)}); without a GPU, see docs/webgpu.md for lavapipe`;
  }
}

const unavailable = await webgpuUnavailable();
const skip = unavailable ?? false;

function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

function floats(dtype: "float32" | "float16", shape: number[], scale: number, seed: number, values?: number[]): Tensor {
  const r = rng(seed);
  const v = values ?? Array.from({ length: shape.reduce((p, d) => p * d, 1) }, () => (r() * 2 - 1) * scale);
  return dtype === "float16" ? { dtype, shape, data: Uint16Array.from(v, floatToHalf) } : { dtype, shape, data: Float32Array.from(v) };
}

const labelsOf = (xs: number[]): Tensor => ({ dtype: "int64", shape: [xs.length], data: BigInt64Array.from(xs, (x) => BigInt(x)) });

async function runOn(g: Graph, feeds: Feeds, options: SessionOptions): Promise<Results> {
  const cg = await CompiledGraph.create(g, options);
  try {
    return await cg.run(feeds);
  } finally {
    await cg.release();
  }
}

/** max |got − want| / (atol + |want|); NaN must meet NaN. */
function relErr(got: Tensor, want: Tensor, atol: number): number {
  assert.deepEqual(got.shape, want.shape);
  const a = toFloat64(got);
  const b = toFloat64(want);
  let worst = 0;
  for (let i = 0; i < a.length; i++) {
    if (Number.isNaN(b[i]!)) assert.ok(Number.isNaN(a[i]!), `element ${i}: ${a[i]}, CPU NaN`);
    else if (a[i] !== b[i]) worst = Math.max(worst, Math.abs(a[i]! - b[i]!) / (atol + Math.abs(b[i]!)));
  }
  return worst;
}

/** The graph on webgpu (lowered by CompiledGraph.create) against the same graph on the CPU EP. */
async function webgpuVsCpu(g: Graph, feeds: Feeds, tol: number, atol = 1e-3): Promise<Results> {
  const want = await runOn(g, feeds, { ep: "cpu", threads: 1 });
  const got = await runOn(g, feeds, { ep: "webgpu" });
  for (const name of Object.keys(want)) {
    const e = relErr(got[name]!, want[name]!, atol);
    assert.ok(e <= tol, `${name}: max rel err ${e.toExponential(2)} > ${tol}`);
  }
  return got;
}

const TOL = { float32: 2e-5, float16: 4e-3 } as const;

describe("WebGPU lowering on a WebGPU adapter vs the CPU EP", () => {
  for (const dtype of ["float32", "float16"] as const) {
    test(`SoftmaxCrossEntropyLoss ${dtype}: rows, log-probs, ignored rows`, { skip }, async () => {
      const g = new Graph("sce");
      const x = g.input("x", dtype, ["n", 37]);
      const [rows, logProb] = g.op("SoftmaxCrossEntropyLoss", [G.mul(x, 1.5), g.input("labels", "int64", ["n"])], { reduction: "none", ignore_index: -100 });
      g.output(rows!, "rows");
      g.output(logProb!, "log_prob");
      const got = await webgpuVsCpu(g, { x: floats(dtype, [5, 37], 6, 1), labels: labelsOf([36, -100, 0, 17, -100]) }, TOL[dtype]);
      assert.equal(toFloat64(got.rows!)[1], 0);
    });

    test(`LogSoftmax ${dtype}`, { skip }, async () => {
      const g = new Graph("lsm");
      g.output(G.logSoftmax(G.add(g.input("x", dtype, [6, 29]), 0.5), -1), "y");
      await webgpuVsCpu(g, { x: floats(dtype, [6, 29], 5, 2) }, TOL[dtype]);
    });

    test(`Sign ${dtype}`, { skip }, async () => {
      const g = new Graph("sign");
      g.output(G.sign(G.mul(g.input("x", dtype, ["n"]), 1)), "y");
      // onnxruntime's float16 Sign maps NaN to 0 on the CPU; the lowered form keeps NaN (see webgpu-lowering.test.ts)
      const vals = [-0, 0, Infinity, -Infinity, 2.5, -3, 1e-3, -1e-3, ...(dtype === "float32" ? [NaN] : [])];
      await webgpuVsCpu(g, { x: floats(dtype, [vals.length], 1, 3, vals) }, 0, 0);
    });
  }

  test("cross-entropy loss and gradient, incl. an all-ignored batch", { skip }, async () => {
    const g = new Graph("ce");
    const w = g.input("w", "float32", [8, 41]);
    const loss = g.output(crossEntropy(G.matmul(g.input("x", "float32", ["n", 8]), w), g.input("labels", "int64", ["n"])), "loss");
    g.output(grad(loss, [w])[0]!, "dw");
    const feeds = { w: floats("float32", [8, 41], 1, 4), x: floats("float32", [6, 8], 3, 5) };
    await webgpuVsCpu(g, { ...feeds, labels: labelsOf([40, -100, 3, 0, 22, -100]) }, TOL.float32);
    const none = await webgpuVsCpu(g, { ...feeds, labels: labelsOf([-100, -100, -100, -100, -100, -100]) }, 0, 0);
    assert.ok(toFloat64(none.loss!)[0] === 0 && toFloat64(none.dw!).every((v) => v === 0));
  });

  test("Abs + ReduceMean gradient with symbolic shapes (Sign and Size)", { skip }, async () => {
    const g = new Graph("abs-mean");
    const w = g.input("w", "float32", [1, 7]);
    const loss = g.output(G.sumAll(G.reduceMean(G.abs(G.mul(g.input("x", "float32", ["n", 7]), w)), [0])), "loss");
    g.output(grad(loss, [w])[0]!, "dw");
    await webgpuVsCpu(g, { w: floats("float32", [1, 7], 1, 6), x: floats("float32", [5, 7], 2, 7) }, TOL.float32);
  });

  test("dropout (RandomUniformLike): the same masks as on the CPU", { skip }, async () => {
    const g = new Graph("dropout");
    g.output(dropout(G.add(g.input("x", "float32", ["n", 64]), 1), 0.3, 5), "y");
    const got = await webgpuVsCpu(g, { x: floats("float32", [16, 64], 1, 8) }, TOL.float32);
    const zeros = toFloat64(got.y!).filter((v) => v === 0).length;
    assert.ok(zeros > 200 && zeros < 420, `${zeros} of 1024 dropped at p 0.3`);
  });

  test("placement (verbose log): no GPU→host copy and no kernel-less op left on the CPU", { skip }, () => {
    const count = (lowering: boolean) => placements(lowering);
    const before = count(false);
    const after = count(true);
    console.log(`# toy graph: CPU nodes ${before.cpu.length} → ${after.cpu.length}, MemcpyToHost ${before.toHost} → ${after.toHost}, MemcpyFromHost ${before.fromHost} → ${after.fromHost}`);
    // x feeds every kernel-less op: onnxruntime copies it to the host once (plus the inlined loss's own copies)
    assert.ok(before.toHost >= 1, `before: ${before.toHost} GPU→host copies`);
    for (const op of ["LogSoftmax", "Sign", "Size", "RandomUniformLike"]) assert.ok(before.cpu.includes(op), `${op} not on the CPU before lowering`);
    assert.equal(after.toHost, 0);
    for (const op of ["SoftmaxCrossEntropyLoss", "LogSoftmax", "Sign", "Size"]) assert.ok(!after.cpu.includes(op), `${op} on the CPU: ${after.cpu.join(", ")}`);
    assert.ok(after.cpu.includes("RandomUniformLike") && after.cpu.includes("Expand"));
  });
});

/** CPU-placed ops and Memcpy nodes of a session over a graph with every lowered op, read from onnxruntime's verbose log in a child process. */
function placements(lowering: boolean): { cpu: string[]; toHost: number; fromHost: number } {
  const url = (f: string) => new URL(f, import.meta.url).href;
  const code = `
    import * as ort from "onnxruntime-node";
    import * as G from ${JSON.stringify(url("../graph/api.js"))};
    import { dropout } from ${JSON.stringify(url("../graph/composite.js"))};
    import { Graph } from ${JSON.stringify(url("../graph/graph.js"))};
    import { CompiledGraph } from ${JSON.stringify(url("./session.js"))};
    ort.env.logLevel = "verbose";
    const g = new Graph("all");
    const x = G.mul(g.input("x", "float32", ["n", 16]), 2);
    const [rows] = g.op("SoftmaxCrossEntropyLoss", [x, g.input("labels", "int64", ["n"])], { reduction: "none", ignore_index: -100 });
    g.output(rows, "rows");
    g.output(G.logSoftmax(x), "lsm");
    g.output(G.sign(x), "sign");
    g.output(G.size(x), "size");
    g.output(dropout(x, 0.5, 1), "drop");
    await CompiledGraph.create(g, { ep: "webgpu", webgpuLowering: ${lowering} });
  `;
  const r = spawnSync(process.execPath, ["--input-type=module", "-e", code], { encoding: "utf8", maxBuffer: 64 << 20, cwd: fileURLToPath(new URL(".", import.meta.url)) });
  assert.equal(r.status, 0, r.stderr.slice(-2000));
  const lines = `${r.stdout}\n${r.stderr}`.split("\n").filter((l) => l.includes("VerifyEachNodeIsAssignedToAnEp]"));
  const cpu: string[] = [];
  let onCpu = false;
  let toHost = 0;
  let fromHost = 0;
  for (const l of lines) {
    const header = /Node\(s\) placed on \[(\w+)\]/.exec(l);
    if (header) onCpu = header[1] === "CPUExecutionProvider";
    const node = /AnEp\] {3}(\S+) \(/.exec(l);
    if (!node || header) continue;
    if (node[1] === "MemcpyToHost") toHost++;
    if (node[1] === "MemcpyFromHost") fromHost++;
    if (onCpu) cpu.push(node[1]!);
  }
  assert.ok(lines.length > 0, "onnxruntime wrote no node placements");
  return { cpu, toHost, fromHost };
}

describe("LoRA training step on WebGPU vs the CPU EP (tiny fixture models)", () => {
  for (const [model, dropoutOn] of [["gpt2", true], ["gpt2", false], ["llama", false]] as const) {
    test(`${model}${dropoutOn ? " with dropout" : ""}: loss and every gradient`, { skip }, async () => {
      const ref = loadSafetensors(fixturePath("peft-parity", `${model}/lora.grads.safetensors`)).tensors;
      const batch: Batch = {
        inputIds: ref.get("input_ids") as Tensor<"int64">,
        attentionMask: ref.get("attention_mask") as Tensor<"int64">,
        labels: ref.get("labels") as Tensor<"int64">,
      };
      const make = (ep: "cpu" | "webgpu") => {
        const pm = PeftModel.fromPretrained(loadModel(fixturePath("peft-parity", model, "base")), fixturePath("peft-parity", `${model}/lora`), { isTrainable: true });
        return TrainStep.create(pm, { task: "causal-lm", dropout: dropoutOn, seed: 3, session: { ep } });
      };
      const [cpu, gpu] = [await make("cpu"), await make("webgpu")];
      try {
        // two steps: with dropout, each run draws new masks; both sessions draw the same ones
        for (let k = 0; k < 2; k++) {
          const [a, b] = [await cpu.run(batch, new Map()), await gpu.run(batch, new Map())];
          const lossErr = Math.abs(a.loss - b.loss) / Math.abs(a.loss);
          let worst = 0;
          for (const n of cpu.names) {
            const [x, y] = [a.grads.get(n)!, b.grads.get(n)!];
            let num = 0;
            let den = 0;
            for (let i = 0; i < x.length; i++) {
              num = Math.max(num, Math.abs(x[i]! - y[i]!));
              den = Math.max(den, Math.abs(x[i]!));
            }
            worst = Math.max(worst, num / den);
          }
          console.log(`# ${model}${dropoutOn ? " dropout" : ""} step ${k}: loss ${a.loss} (CPU) vs ${b.loss} (WebGPU), rel ${lossErr.toExponential(2)}; ${cpu.names.length} gradients, max rel err ${worst.toExponential(2)}`);
          assert.ok(lossErr <= 1e-5, `loss rel err ${lossErr}`);
          assert.ok(worst <= 1e-5, `gradient rel err ${worst}`);
        }
      } finally {
        await cpu.release();
        await gpu.release();
      }
    });
  }
});

describe("mixed-precision (float16) LoRA training step on WebGPU vs float32 on the CPU EP", () => {
  for (const model of ["gpt2", "llama"] as const) {
    test(`${model}: loss and gradients within the float16 tolerances of docs/training.md`, { skip }, async () => {
      const ref = loadSafetensors(fixturePath("peft-parity", `${model}/lora.grads.safetensors`)).tensors;
      const batch: Batch = {
        inputIds: ref.get("input_ids") as Tensor<"int64">,
        attentionMask: ref.get("attention_mask") as Tensor<"int64">,
        labels: ref.get("labels") as Tensor<"int64">,
      };
      const make = (ep: "cpu" | "webgpu", dtype: "float32" | "float16") => {
        const pm = PeftModel.fromPretrained(loadModel(fixturePath("peft-parity", model, "base")), fixturePath("peft-parity", `${model}/lora`), { isTrainable: true });
        return TrainStep.create(pm, { task: "causal-lm", dropout: false, dtype, session: { ep } });
      };
      const [cpu, gpu] = [await make("cpu", "float32"), await make("webgpu", "float16")];
      try {
        const [a, b] = [await cpu.run(batch, new Map()), await gpu.run(batch, new Map())];
        const lossErr = Math.abs(a.loss - b.loss) / Math.abs(a.loss);
        // relative error of the whole gradient vector, as the float16 CPU tests measure it
        let num = 0;
        let den = 0;
        for (const n of cpu.names) {
          const [x, y] = [a.grads.get(n)!, b.grads.get(n)!];
          assert.equal(y.constructor, Float32Array, `${n}: master-weight gradients are float32`);
          for (let i = 0; i < x.length; i++) {
            num += (x[i]! - y[i]!) ** 2;
            den += x[i]! ** 2;
          }
        }
        const gradErr = Math.sqrt(num / den);
        console.log(`# ${model} float16 on WebGPU vs float32 on CPU: loss ${b.loss} vs ${a.loss} (rel ${lossErr.toExponential(2)}), gradient vector rel err ${gradErr.toExponential(2)}`);
        assert.ok(lossErr <= 1e-3, `loss rel err ${lossErr}`);
        assert.ok(gradErr <= 5e-3, `gradient rel err ${gradErr}`);
        assert.ok(gradErr > 0, "a float16 run differs from float32 somewhere (else the dtype was not applied)");
      } finally {
        await cpu.release();
        await gpu.release();
      }
    });
  }
});
