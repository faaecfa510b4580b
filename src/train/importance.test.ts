import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { overlaySource } from "../models/context.js";
import type { LoadedModel } from "../models/load.js";
import { PeftModel } from "../peft/peft-model.js";
import { tensor } from "../tensor.js";
import { syntheticTask, tinyModel } from "../compose/atlas/tiny-model.test-util.js";
import { LayerImportanceRecorder, layerOfName } from "./importance.js";
import { Trainer } from "./trainer.js";

const train = syntheticTask(48, 31);

/** The tiny 2-layer USE-lite with layer `dead`'s attention output projection zeroed: that layer's query/value cannot change the output. */
function modelWithDeadAttention(dead: number): LoadedModel {
  const m = tinyModel(7, 2);
  const name = `encoder.layer.${dead}.attention.output.dense.weight`;
  const shape = m.weights.info(name).shape;
  return { ...m, weights: overlaySource(m.weights, new Map([[name, tensor("float32", shape, new Float32Array(shape[0]! * shape[1]!))]])) };
}

describe("layer importance", () => {
  test("layer names map to layer indices by the model's pattern", () => {
    assert.equal(layerOfName("base_model.model.encoder.layer.11.attention.self.query.lora_A.weight", ["layer"]), 11);
    assert.equal(layerOfName("transformer.h.3.attn.c_attn.lora_B.weight", ["h"]), 3);
    assert.equal(layerOfName("classifier.weight", ["layer"]), null);
    assert.equal(layerOfName("encoder.layers_x.2.q", ["layer"]), null);
  });

  for (const dead of [0, 1]) {
    test(`only layer ${1 - dead} matters (layer ${dead}'s attention output is zero): it ranks first, layer ${dead} scores 0`, async () => {
      const model = modelWithDeadAttention(dead);
      const pm = PeftModel.create(model, { peft_type: "LORA", r: 2, lora_alpha: 4, target_modules: ["query", "value"], modules_to_save: ["classifier"] }, "default", { seed: 3 });
      const rec = new LayerImportanceRecorder(model.def.layersPattern);
      const trainer = new Trainer(pm, { task: "seq-cls", epochs: 1, batchSize: 8, lr: 1e-2, weightDecay: 0, seed: 0, dropout: false }, train);
      await trainer.fit({ onGradients: rec.observe });
      const imp = rec.result();
      assert.equal(imp.steps, 6);
      assert.deepEqual(LayerImportanceRecorder.ranking(imp), [1 - dead, dead]);
      const live = imp.layers.find((l) => l.layer === 1 - dead)!;
      const gone = imp.layers.find((l) => l.layer === dead)!;
      assert.ok(live.taylor > 1e-6 && live.gradSq > 0 && live.update > 0, JSON.stringify(live));
      assert.equal(gone.taylor, 0);
      assert.equal(gone.gradSq, 0);
      assert.equal(gone.update, 0, "no weight decay: nothing moves the dead layer");
      assert.equal(live.tensors, 4, "lora_A and lora_B of query and value");
      assert.ok(imp.other !== null && imp.other.taylor > 0, "the trained head is reported apart");
      await pm.dispose();
    });
  }
});
