import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { PeftModel } from "../../src/peft/peft-model.js";
import { AdamW8bit } from "../../src/train/optim/adamw8bit.js";
import { accuracyOf, loadSentimentTask, median, sentimentBase, trainLoop } from "./sentiment-task.js";

describe("the sentiment task of the compression measurements", () => {
  const base = sentimentBase(2, 0);
  const task = loadSentimentTask(base.tokenizer);

  test("uci-yelp split 600 / 200 / 200, balanced labels, tokenised", () => {
    assert.deepEqual([task.train.length, task.validation.length, task.test.length], [600, 200, 200]);
    for (const part of [task.train, task.validation, task.test]) {
      const pos = part.filter((e) => e.label === 1).length;
      assert.equal(pos, part.length / 2, "uci-yelp has 500 / 500 labels and the split is stratified");
      assert.ok(part.every((e) => e.ids.length > 0 && e.ids.length <= 64));
    }
  });

  test("trainLoop: a few AdamW8bit steps update the adapter (LoRA factors and the head) in the model", async () => {
    const pm = PeftModel.create(base, { peft_type: "LORA", task_type: "SEQ_CLS", r: 4, target_modules: ["query", "value"] }, "default", { seed: 1 });
    const before = new Map([...pm.adapter("default").tensors].map(([k, t]) => [k, Float32Array.from(t.data as Float32Array)]));
    const examples = task.train.slice(0, 8);
    const r = await trainLoop(pm, examples, { epochs: 3, batchSize: 8, lr: 0.01, seed: 0, optimizer: "adamw8bit", session: { threads: 1 } });
    assert.equal(r.steps, 3);
    assert.equal(r.runSeconds.length, 3);
    assert.ok(r.optimizer instanceof AdamW8bit);
    assert.ok(Number.isFinite(r.finalLoss));
    const changed = [...pm.adapter("default").tensors].filter(([k, t]) => (t.data as Float32Array).some((v, i) => v !== before.get(k)![i]));
    assert.ok(changed.some(([k]) => k.includes("lora_B")) && changed.some(([k]) => k.startsWith("classifier")), changed.map(([k]) => k).join(", "));
    pm.sessionOptions = { threads: 1 };
    const acc = await accuracyOf(pm, examples);
    assert.ok(acc >= 0 && acc <= 1);
    await pm.dispose();
    assert.equal(median([3, 1, 2]), 2);
    assert.equal(median([4, 1, 2, 3]), 2.5);
  });
});
