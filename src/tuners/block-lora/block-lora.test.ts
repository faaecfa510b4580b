import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { loraExportOf } from "../../peft/export-lora.js";
import { PeftModel } from "../../peft/peft-model.js";
import { type Tensor, toFloat32 } from "../../tensor.js";
import { fixtureModel, gradCheckLinear, maxDiff, methodSuite, runLinear } from "../../train/method-suite.test-util.js";
import { exportParity, trainedTiny } from "../../cli/commands/export-lora.test-util.js";

const t = (shape: number[], data: number[]): Tensor => ({ dtype: "float32", shape, data: Float32Array.from(data) });

describe("Block-LoRA", () => {
  // in 4 split into n 2 blocks of 2; r 2, out 3, alpha 4 (scaling 2); shared A₀ [2, 2]
  const A0 = [
    [1, -1],
    [0.5, 2],
  ];
  const B = [
    [1, 0.5],
    [-2, 1],
    [0.25, -0.75],
  ];
  const W = [
    [0.1, -0.2, 0.3, 0.05],
    [0.3, 0.4, -0.5, 0.2],
    [-0.1, 0.2, 0.1, -0.3],
  ];
  const x = [
    [1, 2, -1, 0.5],
    [-1, 0.5, 2, 1.5],
  ];
  const raw = { peft_type: "BLOCK_LORA", r: 2, lora_alpha: 4, block_num: 2, target_modules: ["m"] };
  const tensors = new Map<string, Tensor>([
    ["m.block_lora_A", t([2, 2], A0.flat())],
    ["m.block_lora_B", t([3, 2], B.flat())],
  ]);

  test("equals its dense form base + (α/r)·B·[A₀ A₀]·x, computed by hand", async () => {
    const Adense = A0.map((row) => [...row, ...row]); // [A₀ A₀]
    const want = x.flatMap((row) =>
      [0, 1, 2].map((o) => {
        let d = 0;
        for (let k = 0; k < 2; k++) d += B[o]![k]! * Adense[k]!.reduce((a, v, i) => a + v * row[i]!, 0);
        return W[o]!.reduce((a, w, i) => a + w * row[i]!, 0) + 2 * d;
      }),
    );
    const got = await runLinear({ raw, module: "m", tensors, weight: t([3, 4], W.flat()), x: t([2, 4], x.flat()) });
    assert.ok(maxDiff(got, want) < 1e-6, `${[...got]} vs ${want}`);
  });

  test("finite-difference gradients of its graph", async () => {
    await gradCheckLinear({ raw, module: "m", tensors: new Map([...tensors]), weight: t([3, 4], W.flat()), x: t([2, 4], x.flat()) });
  });

  test("parameters: r·(in/n + out) per layer against LoRA's r·(in + out); a layer whose in_features n does not divide is refused", () => {
    const base = fixtureModel("llama");
    const bl = PeftModel.create(base, { peft_type: "BLOCK_LORA", r: 4, block_num: 4, target_modules: ["q_proj", "v_proj"] });
    const lora = PeftModel.create(base, { peft_type: "LORA", r: 4, target_modules: ["q_proj", "v_proj"] });
    const info = bl.info.linearModules.filter((m) => /q_proj|v_proj/u.test(m.name));
    const want = info.reduce((s, m) => s + 4 * (m.inFeatures / 4 + m.outFeatures), 0);
    assert.equal(bl.getNbTrainableParameters()[0], want);
    assert.equal(lora.getNbTrainableParameters()[0], info.reduce((s, m) => s + 4 * (m.inFeatures + m.outFeatures), 0));
    assert.ok(bl.getNbTrainableParameters()[0] < lora.getNbTrainableParameters()[0]);
    assert.throws(() => PeftModel.create(base, { peft_type: "BLOCK_LORA", r: 4, block_num: 5, target_modules: ["q_proj"] }), /block_num/);
  });

  test("after training, the dense LoRA export (A = [A₀ … A₀]) gives the trained logits through peft forward", async () => {
    const { pm } = await trainedTiny({ peft_type: "BLOCK_LORA", r: 4, lora_alpha: 8, block_num: 4, target_modules: ["q_proj", "v_proj"] }, 6);
    const a = pm.adapter("default");
    const m = "model.layers.0.self_attn.q_proj";
    const A0t = toFloat32(a.tensors.get(`${m}.block_lora_A`)!);
    const w = a.tensors.get(`${m}.block_lora_A`)!.shape[1]!;
    const eA = toFloat32(loraExportOf(pm, "default").tensors.get(`${m}.lora_A.weight`)!);
    for (let k = 0; k < 4; k++) for (let j = 0; j < 4; j++) assert.deepEqual(eA.subarray(k * 4 * w + j * w, k * 4 * w + (j + 1) * w), A0t.subarray(k * w, (k + 1) * w));
    await exportParity(pm);
    await pm.dispose();
  });

  methodSuite({
    method: "block_lora",
    arch: "llama",
    randomConfig: { peft_type: "BLOCK_LORA", r: 4, lora_alpha: 8, target_modules: ["q_proj", "v_proj"] },
    trainConfig: { peft_type: "BLOCK_LORA", r: 4, lora_alpha: 8, target_modules: ["q_proj", "v_proj", "down_proj"] },
    badConfigs: [
      [{ peft_type: "BLOCK_LORA", block_num: 0, target_modules: ["q_proj"] }, "block_num"],
      [{ peft_type: "BLOCK_LORA", block_num: 7, target_modules: ["q_proj"] }, "block_num"],
      [{ peft_type: "BLOCK_LORA", target_modules: ["nothing_here"] }, "target_modules"],
    ],
    perturb: true,
    lr: 0.02,
  });
});
