import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { exportParity, trainedTiny } from "../../cli/commands/export-lora.test-util.js";
import { PeftModel } from "../../peft/peft-model.js";
import { type Tensor, toFloat32 } from "../../tensor.js";
import { fixtureModel, gradCheckLinear, maxDiff, methodSuite, runLinear } from "../../train/method-suite.test-util.js";
import { floraDelta, floraParams } from "./index.js";

const t = (shape: number[], data: number[]): Tensor => ({ dtype: "float32", shape, data: Float32Array.from(data) });

describe("FLoRA", () => {
  // in 3, out 2, r = [2, 1]
  const P0 = [
    [1, -1],
    [0.5, 2],
    [-1, 0.25],
  ];
  const P1 = [[0.5], [-2]];
  const Gc = [[1.5], [-0.5]];
  const W = [
    [0.1, -0.2, 0.3],
    [0.4, 0.5, -0.6],
  ];
  const x = [
    [1, 2, -1],
    [0.5, -0.5, 3],
  ];
  const raw = { peft_type: "FLORA", r: [2, 1], scale: 4, target_modules: ["m"] };
  const tensors = new Map([
    ["m.flora_G", t([2, 1], Gc.flat())],
    ["m.flora_0", t([3, 2], P0.flat())],
    ["m.flora_1", t([2, 1], P1.flat())],
  ]);
  /** The Tucker reconstruction written out: ΔW[o, i] = scale · Σ_{a, b} G[a, b]·P_0[i, a]·P_1[o, b]. */
  const dense = [0, 1].map((o) => [0, 1, 2].map((i) => 4 * [0, 1].reduce((s, a) => s + Gc[a]![0]! * P0[i]![a]! * P1[o]![0]!, 0)));

  test("the 2-D case equals its dense delta: forward = x·(W + ΔW)ᵀ with ΔW = scale·G ×₀ P_0 ×₁ P_1, by hand; merge uses the same ΔW", async () => {
    const want = x.flatMap((row) => [0, 1].map((o) => [0, 1, 2].reduce((s, i) => s + (W[o]![i]! + dense[o]![i]!) * row[i]!, 0)));
    const got = await runLinear({ raw, module: "m", tensors, weight: t([2, 3], W.flat()), x: t([2, 3], x.flat()) });
    assert.ok(maxDiff(got, want) < 1e-6, `${[...got]} vs ${want}`);
    assert.ok(maxDiff(floraDelta(tensors.get("m.flora_G")!, tensors.get("m.flora_0")!, tensors.get("m.flora_1")!, 4), dense.flat()) < 1e-6);
  });

  test("finite-difference gradients of its graph", async () => {
    await gradCheckLinear({ raw, module: "m", tensors, weight: t([2, 3], W.flat()), x: t([2, 3], x.flat()) });
  });

  test("parameter count: in·r_in + out·r_out + r_in·r_out per layer, as the created adapter holds", () => {
    assert.equal(floraParams(3, 2, [2, 1]), 3 * 2 + 2 * 1 + 2);
    const pm = PeftModel.create(fixtureModel("llama"), { peft_type: "FLORA", r: [4, 2], target_modules: ["q_proj", "v_proj"] });
    const [trainable] = pm.getNbTrainableParameters();
    // q_proj 32 → 32, v_proj 32 → 16 (2 kv heads × 8), two layers
    assert.equal(trainable, 2 * (floraParams(32, 32, [4, 2]) + floraParams(32, 16, [4, 2])));
    const g = toFloat32(pm.adapter("default").tensors.get("model.layers.0.self_attn.q_proj.flora_G")!);
    assert.ok(g.every((v) => v === 0), "the core starts at zero (ΔW = 0), as the authors' init");
    const p = toFloat32(pm.adapter("default").tensors.get("model.layers.0.self_attn.q_proj.flora_0")!);
    const sd = Math.sqrt(p.reduce((s, v) => s + v * v, 0) / p.length);
    assert.ok(sd > 0.2 && sd < 0.5, `P_0 ~ Kaiming-normal(a = √3), sd 1/√(2·4) ≈ 0.35: ${sd}`);
  });

  test("trained adapter → peft export-lora → LoRA of rank r_out with the same logits through peft forward", async () => {
    const { pm, losses } = await trainedTiny({ peft_type: "FLORA", r: [3, 2], scale: 2, target_modules: ["q_proj", "v_proj"] }, 4);
    assert.ok(losses.every(Number.isFinite));
    const lc = await exportParity(pm);
    assert.equal(lc.r, 2);
    await pm.dispose();
  });

  methodSuite({
    method: "flora",
    arch: "llama",
    randomConfig: { peft_type: "FLORA", r: [4, 2], init_weights: false, target_modules: ["q_proj", "v_proj"] },
    trainConfig: { peft_type: "FLORA", r: 4, scale: 2, target_modules: ["q_proj", "v_proj", "down_proj"] },
    badConfigs: [
      [{ peft_type: "FLORA", r: [2, 2, 2, 2], target_modules: ["q_proj"] }, "r"],
      [{ peft_type: "FLORA", flora_dropout: 1, target_modules: ["q_proj"] }, "flora_dropout"],
      [{ peft_type: "FLORA", lora_alpha: 8, target_modules: ["q_proj"] }, "lora_alpha"],
    ],
    lr: 0.05,
  });
});
