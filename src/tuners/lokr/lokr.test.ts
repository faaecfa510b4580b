import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { PeftModel } from "../../peft/peft-model.js";
import type { Tensor } from "../../tensor.js";
import { fixtureModel, gradCheckLinear, maxDiff, methodSuite, runLinear } from "../../train/method-suite.test-util.js";
import { factorization } from "./index.js";

const t = (shape: number[], data: number[]): Tensor => ({ dtype: "float32", shape, data: Float32Array.from(data) });

describe("LoKr", () => {
  test("factorization matches PEFT's documented examples", () => {
    assert.deepEqual(factorization(256), [16, 16]);
    assert.deepEqual(factorization(128), [8, 16]);
    assert.deepEqual(factorization(127), [1, 127]);
    assert.deepEqual(factorization(128, 4), [4, 32]);
    assert.deepEqual(factorization(32), [4, 8]);
    assert.deepEqual(factorization(16), [4, 4]);
  });

  // out 4 = 2·2, in 6 = 2·3; r 1 < max(2, 3)/2 → w2 = w2_a·w2_b, w1 whole
  const w1 = [
    [1, -2],
    [0.5, 3],
  ];
  const w2a = [[2], [-1]];
  const w2b = [[0.5, 1, -1.5]];
  const W = Array.from({ length: 4 }, (_, o) => Array.from({ length: 6 }, (_, i) => ((o * 7 + i * 3) % 5) / 10 - 0.2));
  const x = [
    [1, 0, -1, 2, 0.5, -0.5],
    [0.25, 1, 1, -2, 1, 0],
  ];
  const tensors = new Map<string, Tensor>([
    ["m.lokr_w1", t([2, 2], w1.flat())],
    ["m.lokr_w2_a", t([2, 1], w2a.flat())],
    ["m.lokr_w2_b", t([1, 3], w2b.flat())],
  ]);
  const raw = { peft_type: "LOKR", r: 1, alpha: 2, target_modules: ["m"] };

  test("forward = x·(W + (w1 ⊗ (w2_a·w2_b))·alpha/r)ᵀ, computed by hand", async () => {
    const w2 = w2a.map((row) => w2b[0]!.map((v) => row[0]! * v)); // [2, 3]
    // Kronecker product: ΔW[i·2 + k][j·3 + l] = w1[i][j] · w2[k][l]
    const delta = (o: number, i: number) => w1[Math.floor(o / 2)]![Math.floor(i / 3)]! * w2[o % 2]![i % 3]! * 2;
    const want = x.flatMap((row) => W.map((wr, o) => row.reduce((s, v, i) => s + v * (wr[i]! + delta(o, i)), 0)));
    const got = await runLinear({ raw, module: "m", tensors, weight: t([4, 6], W.flat()), x: t([2, 6], x.flat()) });
    assert.ok(maxDiff(got, want) < 1e-6, `${[...got]} vs ${want}`);
  });

  test("finite-difference gradients of its graph", async () => {
    await gradCheckLinear({ raw, module: "m", tensors, weight: t([4, 6], W.flat()), x: t([2, 6], x.flat()) });
  });

  test("tensor names and shapes follow decompose_both, decompose_factor and r as in PEFT", () => {
    const model = fixtureModel("llama");
    // q_proj 32→32: factorization(32) = (4, 8); r 8 ≥ max(8, 8)/2 → w2 whole; w1 whole unless decompose_both
    const a = PeftModel.create(model, { peft_type: "LOKR", r: 8, target_modules: ["q_proj"] }).adapter("default").tensors;
    assert.deepEqual(a.get("model.layers.0.self_attn.q_proj.lokr_w1")!.shape, [4, 4]);
    assert.deepEqual(a.get("model.layers.0.self_attn.q_proj.lokr_w2")!.shape, [8, 8]);
    const b = PeftModel.create(model, { peft_type: "LOKR", r: 1, decompose_both: true, target_modules: ["q_proj"] }).adapter("default").tensors;
    assert.deepEqual(b.get("model.layers.0.self_attn.q_proj.lokr_w1_a")!.shape, [4, 1]);
    assert.deepEqual(b.get("model.layers.0.self_attn.q_proj.lokr_w2_b")!.shape, [1, 8]);
    // decompose_factor 2: 32 = 2·16; r 4 < max(16, 16)/2 → w2 = w2_a·w2_b
    const c = PeftModel.create(model, { peft_type: "LOKR", r: 4, decompose_factor: 2, target_modules: ["q_proj"] }).adapter("default").tensors;
    assert.deepEqual(c.get("model.layers.0.self_attn.q_proj.lokr_w1")!.shape, [2, 2]);
    assert.deepEqual(c.get("model.layers.0.self_attn.q_proj.lokr_w2_a")!.shape, [16, 4]);
    // PEFT's default init: w1 zero, so ΔW = 0
    assert.ok((a.get("model.layers.0.self_attn.q_proj.lokr_w1")!.data as Float32Array).every((v) => v === 0));
  });

  methodSuite({
    method: "lokr",
    arch: "llama",
    randomConfig: { peft_type: "LOKR", r: 2, alpha: 4, target_modules: ["q_proj", "v_proj"], init_weights: false, decompose_both: true, rank_pattern: { v_proj: 1 } },
    trainConfig: { peft_type: "LOKR", r: 4, alpha: 4, target_modules: ["q_proj", "v_proj", "down_proj"] },
    badConfigs: [
      [{ peft_type: "LOKR", r: -1, target_modules: ["q_proj"] }, "'r'"],
      [{ peft_type: "LOKR", decompose_factor: 0, target_modules: ["q_proj"] }, "decompose_factor"],
      [{ peft_type: "LOKR", init_weights: "pissa", target_modules: ["q_proj"] }, "init_weights"],
      [{ peft_type: "LOKR", target_modules: ["nothing_here"] }, "target_modules"],
    ],
    lr: 0.02,
  });
});
