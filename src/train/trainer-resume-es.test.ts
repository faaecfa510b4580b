import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import type { PeftModel } from "../peft/peft-model.js";
import { llamaLora, patternCorpus } from "./tiny-llama.test-util.js";
import { Trainer, type TrainerConfig } from "./trainer.js";

const corpus = (n: number, seed: number) => patternCorpus(n, seed, () => 10);

function maxDiff(a: PeftModel, b: PeftModel): number {
  let worst = 0;
  for (const [k, t] of a.adapter("default").tensors) {
    const x = t.data as Float32Array;
    const y = b.adapter("default").tensors.get(k)!.data as Float32Array;
    for (let i = 0; i < x.length; i++) worst = Math.max(worst, Math.abs(x[i]! - y[i]!));
  }
  return worst;
}

describe("trainer: early stopping across a resume", () => {
  test("a run interrupted after its best evaluation stops at the same step and restores the same best parameters", async () => {
    const dir = mkdtempSync(join(tmpdir(), "peft-resume-es-"));
    try {
      const train = corpus(24, 9);
      // a validation set unlike the training patterns: its loss falls, then rises as the adapter overfits
      const validation = corpus(8, 31).map((e) => ({ ids: e.ids.map((t, j) => (j % 2 ? t : 3 + ((t * 7) % 40))) }));
      const cfg: TrainerConfig = { task: "causal-lm", epochs: 20, batchSize: 4, lr: 3e-2, seed: 4, dropout: false, evalEvery: 2, earlyStopping: { patience: 3 } };
      const straightPm = llamaLora();
      const straight = await new Trainer(straightPm, cfg, train, validation).fit();
      const evals = straight.history.evals.map((e) => `${e.step}:${e.loss.toFixed(4)}`).join(" ");
      console.log(`# straight: best step ${straight.best?.step}, stopped early ${straight.stoppedEarly} after ${straight.steps} steps; evals ${evals}`);
      assert.ok(straight.stoppedEarly && straight.best !== null, "the straight run stops early");
      // interrupt after the best evaluation but before the stop
      const k = straight.best!.step + 2;
      assert.ok(k < straight.steps, `interrupt at ${k} < ${straight.steps}`);
      await new Trainer(llamaLora(), { ...cfg, stopAfterSteps: k, checkpointDir: dir, checkpointEvery: k }, train, validation).fit();
      const resumedPm = llamaLora();
      const resumed = await new Trainer(resumedPm, { ...cfg, checkpointDir: dir }, train, validation).fit();
      assert.equal(resumed.stoppedEarly, true);
      assert.equal(resumed.steps, straight.steps, "stops at the same step");
      assert.equal(resumed.best?.step, straight.best!.step, "the best evaluation is the one before the interruption");
      const d = maxDiff(straightPm, resumedPm);
      console.log(`# resumed: stopped at ${resumed.steps}, best step ${resumed.best?.step}, max |Δparam| vs straight ${d.toExponential(2)}`);
      assert.ok(d <= 1e-6, `restored parameters differ by ${d}`);
      assert.ok(maxDiff(llamaLora(), resumedPm) > 1e-3, "the restored best parameters are trained ones");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
