import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import { grad } from "../src/graph/autodiff.js";
import { Graph } from "../src/graph/graph.js";
import { liveNodes } from "../src/graph/onnx.js";
import * as G from "../src/graph/api.js";
import type { Node } from "../src/graph/types.js";
import { PeftModel } from "../src/peft/peft-model.js";
import { benchInfer } from "./infer.js";
import { activationEstimate, benchMemory, evalDim } from "./memory.js";
import { type Gpt2Shape, gpt2Flops, randomGpt2 } from "./models.js";
import { summarizeProfile } from "./profile.js";
import { benchTrainStep, randomBatch } from "./train-step.js";

/** 2·M·K·N of every forward Gemm/MatMul node (not under the `grad` scope), dims evaluated. */
function forwardMatmulFlops(nodes: readonly Node[], symbols: Record<string, number>): number {
  let total = 0;
  for (const n of nodes) {
    if (n.name.startsWith("grad")) continue;
    if (n.op !== "Gemm" && n.op !== "MatMul") continue;
    const [a, b] = n.inputs;
    const dims = (v: typeof a) => v!.shape.map((d) => evalDim(d, symbols)!);
    const [sa, sb] = [dims(a), dims(b)];
    const ta = n.op === "Gemm" && n.attrs.transA === 1;
    const k = ta ? sa[sa.length - 2]! : sa[sa.length - 1]!;
    assert.ok(sb.length >= 2);
    const out = n.outputs[0]!.shape.map((d) => evalDim(d, symbols)!);
    total += 2 * k * out.reduce((p, d) => p * d, 1);
  }
  return total;
}

describe("bench helpers", () => {
  test("gpt2Flops counts exactly the forward matmuls of the built graph (projections, QKᵀ, AV, LM head, LoRA)", () => {
    const shape: Gpt2Shape = { layers: 2, hidden: 32, heads: 4, vocab: 96, positions: 64 };
    const [batch, seq, r] = [3, 10, 4];
    const pm = PeftModel.create(randomGpt2(shape), { peft_type: "LORA", r, lora_alpha: 8, target_modules: ["c_attn"], fan_in_fan_out: true });
    const built = pm.buildGraph({ training: true, dropout: false });
    built.graph.output(built.outputs.logits, "logits");
    const counted = forwardMatmulFlops(liveNodes(built.graph), { batch, seq });
    const f = gpt2Flops(shape, seq, r);
    assert.equal(counted, (f.forwardPerToken + f.loraForwardPerToken) * batch * seq);
    assert.equal(f.trainPerToken, 2 * f.forwardPerToken + 3 * f.loraForwardPerToken);
  });

  test("evalDim and activationEstimate size the forward values the backward reads", () => {
    assert.equal(evalDim("batch*seq", { batch: 3, seq: 5 }), 15);
    assert.equal(evalDim("seq+4", { seq: 5 }), 9);
    assert.equal(evalDim("batch*seq*2", { batch: 3, seq: 5 }), 30);
    assert.equal(evalDim("other", { seq: 5 }), null);
    assert.equal(evalDim(null, {}), null);
    assert.equal(evalDim("batch*seq+4", { batch: 3, seq: 5 }), null);
    const g = new Graph("acts");
    const x = g.input("x", "float32", ["batch", 1024]);
    const w = g.input("w", "float32", [1024, 256]);
    const h = G.tanh(G.matmul(x, w)); // backward reads tanh's output [batch, 256] and x [batch, 1024] (an input, not an activation)
    const loss = G.sumAll(G.mul(h, h)); // backward reads h (already counted)
    g.output(loss, "loss");
    g.output(grad(loss, [w])[0]!, "gw");
    const est = activationEstimate(liveNodes(g), { batch: 512 });
    assert.equal(est.savedMiB, (512 * 256 * 4) / 2 ** 20);
    assert.equal(est.largestMiB, (512 * 1024 * 4) / 2 ** 20);
    assert.equal(est.unsized, 0);
  });

  test("summarizeProfile aggregates kernel time per op and skips warm-up runs", () => {
    const dir = mkdtempSync(join(tmpdir(), "peft-bench-test-"));
    try {
      const node = (name: string, op: string, dur: number) => ({ cat: "Node", name: `${name}_kernel_time`, dur, args: { op_name: op, provider: "CPUExecutionProvider" } });
      const run = (dur: number) => ({ cat: "Session", name: "model_run", dur });
      const events = [node("a", "MatMul", 999), run(1000), node("a", "MatMul", 60), node("b", "Add", 20), node("c", "Add", 20), run(110), node("a", "MatMul", 40), node("b", "Add", 10), node("c", "Add", 30), run(90)];
      const file = join(dir, "p.json");
      writeFileSync(file, JSON.stringify(events));
      const s = summarizeProfile(file, { skipRuns: 1 });
      assert.equal(s.runs, 2);
      assert.equal(s.runMs, 0.1);
      assert.equal(s.kernelMs, 0.09);
      assert.deepEqual(s.byOp.map((o) => [o.op, o.ms, o.calls]), [["MatMul", 0.05, 1], ["Add", 0.04, 2]]);
      assert.equal(s.topNodes[0]!.node, "a");
      assert.deepEqual(s.byProvider, { CPUExecutionProvider: 0.09 });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("randomBatch: ids in [1, vocab), labels are the ids (causal LM) or classes", () => {
    const lm = randomBatch({ batch: 2, seq: 7, vocab: 11, task: "causal-lm", numLabels: 0 });
    assert.deepEqual([...lm.inputIds.shape], [2, 7]);
    assert.ok([...lm.inputIds.data].every((v) => v >= 1n && v < 11n));
    assert.deepEqual([...lm.labels.data], [...lm.inputIds.data]);
    const cls = randomBatch({ batch: 5, seq: 3, vocab: 11, task: "seq-cls", numLabels: 2 });
    assert.deepEqual([...cls.labels.shape], [5]);
    assert.ok([...cls.labels.data].every((v) => v === 0n || v === 1n));
  });
});

describe("benchmarks on small shapes", () => {
  test("train-step: ceiling interleaved with the steps, MFU from the same run", async () => {
    const r = await benchTrainStep({ model: "tiny", threads: 1, steps: 2, warmup: 1, batch: 2, seq: 8, ceilingRounds: 2 });
    assert.equal(r.stepMs.all.length, 2);
    assert.ok(r.ceiling && r.ceiling.rounds === 4, JSON.stringify(r.ceiling?.rounds));
    assert.deepEqual(r.ceiling.shapes.map((s) => [s.name, s.m]), [["c_attn", 16], ["attn_proj", 16], ["mlp_up", 16], ["mlp_down", 16], ["lm_head", 16]]);
    // a round runs each layer product once per layer (4 layers) and the LM head once: 4 rounds × counts
    assert.deepEqual(r.ceiling.shapes.map((s) => s.timings.plain!.medianMs > 0), [true, true, true, true, true]);
    assert.ok(Math.abs(r.mfu! - r.achievedGflops / r.ceiling.mixGflops) < 2e-3, `${r.mfu} vs ${r.achievedGflops} / ${r.ceiling.mixGflops}`);
    assert.ok(r.ceiling.mixMedianGflops <= r.ceiling.mixGflops + 1e-6);
    assert.ok(r.mfuCpu! > 0 && r.mfuMedian! > 0 && r.peakRssMiB > 0);
  });

  test("train-step: timings, FLOP rate and a profile summary", async () => {
    const r = await benchTrainStep({ model: "tiny", threads: 1, steps: 1, warmup: 1, batch: 2, seq: 8, ceiling: false, profile: true });
    assert.equal(r.stepMs.all.length, 1);
    assert.ok(r.stepMs.best > 0 && Number.isFinite(r.loss) && r.loss > 0);
    assert.ok(Math.abs(r.tokensPerSecond - 16 / (r.stepMs.best / 1e3)) <= 0.01 * r.tokensPerSecond + 1);
    assert.equal(r.flops.perStep, r.flops.trainPerToken * 16);
    assert.ok(r.trainableParams > 0 && r.mfu === undefined);
    assert.ok(r.profile && r.profile.runs === 1 && r.profile.byOp.some((o) => o.op === "Gemm"), JSON.stringify(r.profile?.byOp.slice(0, 3)));
  });

  test("train-step --resident --dtype float16: the fused mixed-precision step; the same first loss as float32 within float16 error", async () => {
    const o = { model: "tiny", threads: 1, steps: 1, warmup: 1, batch: 2, seq: 8, ceiling: false } as const;
    const [a, b] = [await benchTrainStep(o), await benchTrainStep({ ...o, resident: true, dtype: "float16" })];
    assert.equal(a.resident, false);
    assert.equal(a.dtype, "float32");
    assert.equal(b.resident, true);
    assert.equal(b.dtype, "float16");
    // the warm-up step updated b's parameters before the timed step, so compare loosely
    assert.ok(Number.isFinite(b.loss) && Math.abs(b.loss - a.loss) / a.loss < 0.05, `${b.loss} vs ${a.loss}`);
    assert.equal(b.flops.perStep, a.flops.perStep);
  });

  test("infer: mixed-adapter rows agree with the merged adapter", async () => {
    const shape: Gpt2Shape = { layers: 1, hidden: 32, heads: 2, vocab: 64, positions: 32 };
    const r = await benchInfer({ threads: 1, shape, batch: 8, seq: 4, rank: 4, adapters: [1, 4], repeat: 1, warmup: 1 });
    assert.deepEqual(r.mixed.map((m) => m.adapters), [1, 4]);
    for (const m of r.mixed) {
      assert.ok(m.maxAbsDiffVsMerged < 1e-4, `${m.adapters} adapters: ${m.maxAbsDiffVsMerged}`);
      assert.ok(m.tokensPerSecond > 0 && m.ratioToMerged > 0);
    }
  });

  test("memory: RSS per stage and the estimate's parts", async () => {
    const r = await benchMemory({ model: "tiny", threads: 1, steps: 1, batch: 2, seq: 8 });
    assert.deepEqual(Object.keys(r.rssMiB), ["start", "weights", "graph", "session", "step1", "step1+adamw"]);
    assert.ok(r.estimateMiB.weights > 20 && r.estimateMiB.weights < 25, String(r.estimateMiB.weights)); // L4 d256 vocab 8192: 5.5M params
    assert.ok(r.estimateMiB.activations.savedMiB > 0 && r.peakRssMiB >= r.rssMiB.step1!);
    assert.ok(Math.abs(r.estimateMiB.total - (r.estimateMiB.weights + r.estimateMiB.trainableWithOptimizer + r.estimateMiB.activations.savedMiB + r.estimateMiB.activations.largestMiB)) < 0.2);
  });
});
