import assert from "node:assert/strict";
import { test } from "node:test";
import { tinyModel } from "../../compose/atlas/tiny-model.test-util.js";
import { PeftModel } from "../../peft/peft-model.js";
import { modelInfo } from "../../peft/model-info.js";
import { tunerForMethod } from "../registry.js";

test("(IA)³ has default targets on USE-lite (keys, values, feed-forward outputs), so peft train --method ia3 needs no --target", () => {
  const model = tinyModel();
  const opts = { taskType: "SEQ_CLS", r: 8, alpha: 16, dropout: 0, target: null, feedforward: null, numVirtualTokens: 20, modulesToSave: ["classifier"] } as const;
  const raw = tunerForMethod("ia3").trainConfig(opts, modelInfo(model));
  assert.deepEqual([raw.target_modules, raw.feedforward_modules], [["key", "value", "output.dense"], ["output.dense"]]);
  const keys = [...PeftModel.create(model, raw).adapter("default").tensors.keys()].filter((k) => k.endsWith(".ia3_l")).sort();
  assert.deepEqual(keys, [0, 1].flatMap((i) => ["attention.output.dense", "attention.self.key", "attention.self.value", "output.dense"].map((m) => `encoder.layer.${i}.${m}.ia3_l`)).sort());
});
