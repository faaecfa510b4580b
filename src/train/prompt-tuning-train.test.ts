/**
 * Prompt tuning trains through the Trainer on causal LMs: the logits carry the virtual tokens in
 * front (batch × (seq + n)), and the loss skips them as PEFT does (labels padded with −100). This
 * once failed at the first step with a broadcast of the labels against the longer logits.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { loadModel } from "../models/load.js";
import { PeftModel } from "../peft/peft-model.js";
import { fixturePath } from "../util/paths.js";
import { patternCorpus } from "./tiny-llama.test-util.js";
import { collate, Trainer, type TrainerConfig } from "./trainer.js";
import { TrainStep } from "./step.js";

describe("prompt tuning trains on causal LMs", () => {
  for (const arch of ["gpt2", "llama"] as const) {
    test(`${arch}: PROMPT_TUNING (4 virtual tokens) lowers the loss; the loss ignores the virtual positions`, async () => {
      const model = loadModel(fixturePath("peft-parity", arch, "base"));
      const pm = PeftModel.create(model, { peft_type: "PROMPT_TUNING", task_type: "CAUSAL_LM", num_virtual_tokens: 4 }, "default", { seed: 2 });
      const data = patternCorpus(16, 3, () => 8);
      // the loss over [4 virtual + 8] logits equals the cross-entropy of positions 4..10 against ids 1..7
      const step = await TrainStep.create(pm, { task: "causal-lm", dropout: false });
      const batch = collate(data.slice(0, 4), "causal-lm", 0);
      const r = await step.run(batch, new Map());
      const logits = await pm.forward({ inputIds: batch.inputIds, attentionMask: batch.attentionMask });
      assert.deepEqual(logits.shape.slice(0, 2), [4, 12]);
      const [, , vocab] = logits.shape as [number, number, number];
      const l = logits.data as Float32Array;
      let sum = 0;
      let n = 0;
      for (let b = 0; b < 4; b++) {
        for (let t = 0; t < 7; t++) {
          const row = l.subarray((b * 12 + 4 + t) * vocab, (b * 12 + 5 + t) * vocab);
          const max = Math.max(...row);
          const lse = max + Math.log(row.reduce((s, v) => s + Math.exp(v - max), 0));
          sum += lse - row[Number(batch.inputIds.data[b * 8 + t + 1])]!;
          n++;
        }
      }
      assert.ok(Math.abs(r.loss - sum / n) < 1e-4, `graph loss ${r.loss} vs reference ${sum / n}`);
      await step.release();

      const cfg: TrainerConfig = { task: "causal-lm", epochs: 100, maxSteps: 30, batchSize: 16, lr: 0.3, seed: 0, schedule: "constant", dropout: false };
      const fit = await new Trainer(pm, cfg, data).fit();
      const losses = fit.history.steps.map((s) => s.loss);
      console.log(`# ${arch} prompt tuning: loss ${losses[0]!.toFixed(3)} → ${losses.at(-1)!.toFixed(3)}`);
      // one full batch per step (16 examples), no dropout: a deterministic descent on a tiny random model
      assert.ok(losses.at(-1)! < losses[0]! - 0.02, `loss fell: ${losses.join(", ")}`);
      for (let k = 1; k < 10; k++) assert.ok(losses[k]! < losses[k - 1]!, `step ${k} lowered the loss: ${losses.join(", ")}`);
      await pm.dispose();
    });
  }
});
