/**
 * LoRA+ (`loraplusLrRatio`, PEFT's `create_loraplus_optimizer`): the low-rank B factors (and 1-D
 * tensors) step with lr × ratio. AdamW's first step moves every parameter with a non-zero
 * gradient by lr·sign(g) (m/√v = ±1), so the step sizes show each tensor's learning rate.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { loadModel } from "../models/load.js";
import { PeftModel } from "../peft/peft-model.js";
import { toFloat32 } from "../tensor.js";
import { fixturePath } from "../util/paths.js";
import { patternCorpus } from "./tiny-llama.test-util.js";
import { Trainer } from "./trainer.js";

describe("LoRA+ learning-rate ratio", () => {
  test("B factors move 16× as far as A factors in AdamW's first step; ratio ≤ 0 is refused", async () => {
    const pm = PeftModel.create(loadModel(fixturePath("peft-parity", "llama", "base")), { peft_type: "LORA", r: 2, lora_alpha: 4, target_modules: ["q_proj"], init_lora_weights: false }, "default", { seed: 1 });
    const before = new Map([...pm.adapter("default").tensors].map(([k, t]) => [k, Float32Array.from(toFloat32(t))]));
    const lr = 1e-3;
    const tr = new Trainer(pm, { task: "causal-lm", epochs: 1, maxSteps: 1, batchSize: 8, lr, weightDecay: 0, seed: 0, schedule: "constant", dropout: false, loraplusLrRatio: 16 }, patternCorpus(8, 1, () => 6));
    assert.equal(tr.usesResidentOptimizer, false);
    await tr.fit();
    for (const [k, t] of pm.adapter("default").tensors) {
      const after = toFloat32(t);
      const b = before.get(k)!;
      const moved = Math.max(...after.map((v, i) => Math.abs(v - b[i]!)));
      const want = k.endsWith("lora_B.weight") ? 16 * lr : lr;
      assert.ok(Math.abs(moved - want) < want * 1e-3, `${k}: moved ${moved}, want ${want}`);
    }
    await assert.rejects(
      async () => new Trainer(pm, { task: "causal-lm", epochs: 1, batchSize: 8, lr, seed: 0, loraplusLrRatio: 0 }, patternCorpus(8, 1, () => 6)).fit(),
      /loraplusLrRatio/u,
    );
    await pm.dispose();
  });
});
