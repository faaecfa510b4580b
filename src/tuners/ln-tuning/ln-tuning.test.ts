import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { forwardLogits } from "../../models/forward.js";
import { overlaySource } from "../../models/context.js";
import { PeftModel } from "../../peft/peft-model.js";
import type { Tensor } from "../../tensor.js";
import { fixtureModel, maxDiff, methodSuite } from "../../train/method-suite.test-util.js";

describe("LN tuning", () => {
  const ids: Tensor<"int64"> = { dtype: "int64", shape: [1, 5], data: BigInt64Array.from([3, 9, 4, 12, 7], BigInt) };

  test("forward = the base model with the norm weights replaced by the trained copies (built by hand)", async () => {
    const model = fixtureModel("llama");
    const pm = PeftModel.create(model, { peft_type: "LN_TUNING", target_modules: ["input_layernorm", "norm"] });
    const a = pm.adapter("default");
    assert.deepEqual(
      [...a.tensors.keys()].sort(),
      ["model.layers.0.input_layernorm.ln_tuning_layers.weight", "model.layers.1.input_layernorm.ln_tuning_layers.weight", "model.norm.ln_tuning_layers.weight"],
      "PEFT's names: <module>.ln_tuning_layers.<param>; 'norm' matches model.norm, not input_layernorm twice",
    );
    // explicit new norm weights: 1 + 0.1·i
    const hand = new Map<string, Tensor>();
    const values = new Map<string, Tensor>();
    for (const k of a.tensors.keys()) {
      const n = a.tensors.get(k)!.shape[0]!;
      const t: Tensor = { dtype: "float32", shape: [n], data: Float32Array.from({ length: n }, (_, i) => 1 + 0.1 * i) };
      values.set(k, t);
      hand.set(k.replace(".ln_tuning_layers.", "."), t);
    }
    pm.updateAdapterTensors("default", values);
    const got = await pm.forward({ inputIds: ids });
    const mask: Tensor<"int64"> = { dtype: "int64", shape: [1, 5], data: new BigInt64Array(5).fill(1n) };
    const want = await forwardLogits({ ...model, weights: overlaySource(model.weights, hand) }, ids, mask);
    assert.ok(maxDiff(got.data as Float32Array, want.data as Float32Array) < 1e-5);
    const base = await pm.disableAdapter(() => pm.forward({ inputIds: ids }));
    assert.ok(maxDiff(got.data as Float32Array, base.data as Float32Array) > 1e-3);
    // the copies are full trainable parameters (PEFT counts them next to the originals)
    assert.equal(pm.getNbTrainableParameters()[0], 3 * 32);
    await pm.dispose();
  });

  test("a mixed-adapter batch refuses LN tuning (it replaces weights, which cannot differ per row)", async () => {
    const pm = PeftModel.create(fixtureModel("llama"), { peft_type: "LN_TUNING", target_modules: ["norm"] });
    await assert.rejects(pm.forward({ inputIds: ids, adapterNames: ["default"] }), /LN_TUNING/u);
    await pm.dispose();
  });

  methodSuite({
    method: "ln_tuning",
    arch: "llama",
    randomConfig: { peft_type: "LN_TUNING", target_modules: ["input_layernorm", "post_attention_layernorm", "norm"] },
    trainConfig: { peft_type: "LN_TUNING", target_modules: ["input_layernorm", "post_attention_layernorm", "norm"] },
    badConfigs: [
      [{ peft_type: "LN_TUNING", target_modules: ["nothing_here"] }, "target_modules"],
      [{ peft_type: "LN_TUNING", target_modules: "all-linear" }, "target_modules"],
      [{ peft_type: "LN_TUNING", target_modules: ["norm"], r: 4 }, "'r'"],
    ],
    lr: 0.02,
    perturb: true,
  });
});
