import assert from "node:assert/strict";
import { cpSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import { loadModel } from "../models/load.js";
import { PeftModel } from "../peft/peft-model.js";
import { fixturePath } from "../util/paths.js";
import { Rng } from "../util/rng.js";
import { separableClasses } from "./tiny-llama.test-util.js";
import { type TokenizedExample, Trainer, type TrainerConfig, type TrainResult } from "./trainer.js";

const LORA = (targets: string[]) => ({ peft_type: "LORA", r: 4, lora_alpha: 8, target_modules: targets, lora_dropout: 0 });
const LLAMA = loadModel(fixturePath("peft-parity", "llama", "base"));
const BERT = loadModel(fixturePath("peft-parity", "bert", "base"));

function corpus(n: number, seed: number): TokenizedExample[] {
  const rng = new Rng(seed);
  return Array.from({ length: n }, () => {
    const start = 3 + rng.int(8);
    return { ids: Array.from({ length: 6 + rng.int(5) }, (_, j) => 3 + ((start + 3 * j) % 40)) };
  });
}

const llamaLora = () => PeftModel.create(LLAMA, LORA(["q_proj", "v_proj"]), "default", { seed: 1 });

function maxParamDiff(a: PeftModel, b: PeftModel): number {
  let worst = 0;
  let compared = 0;
  for (const [k, t] of a.adapter("default").tensors) {
    const x = t.data as Float32Array;
    const y = b.adapter("default").tensors.get(k)!.data as Float32Array;
    for (let i = 0; i < x.length; i++) worst = Math.max(worst, Math.abs(x[i]! - y[i]!));
    compared++;
  }
  assert.ok(compared > 0);
  return worst;
}

const lossDiff = (a: TrainResult, b: TrainResult) => {
  assert.equal(a.history.steps.length, b.history.steps.length);
  return Math.max(...a.history.steps.map((s, i) => Math.abs(s.loss - b.history.steps[i]!.loss)));
};

describe("trainer with the resident (fused) optimizer", () => {
  const data = corpus(24, 4);
  const base: TrainerConfig = { task: "causal-lm", epochs: 3, batchSize: 4, lr: 1e-2, seed: 2, dropout: false, maxGradNorm: 0.25, warmupSteps: 3 };

  test("same losses, gradient norms and final parameters as the host optimizer (clipping, warm-up + linear decay, weight decay)", async () => {
    const hostPm = llamaLora();
    const host = new Trainer(hostPm, { ...base, residentOptimizer: false }, data);
    const hr = await host.fit();
    const resPm = llamaLora();
    const res = new Trainer(resPm, { ...base, residentOptimizer: true }, data);
    const rr = await res.fit();
    assert.equal(host.usesResidentOptimizer, false);
    assert.equal(res.usesResidentOptimizer, true);
    assert.equal(rr.steps, 18);
    const dl = lossDiff(hr, rr);
    const dn = Math.max(...hr.history.steps.map((s, i) => Math.abs(s.gradNorm - rr.history.steps[i]!.gradNorm) / s.gradNorm));
    const dp = maxParamDiff(hostPm, resPm);
    console.log(`# resident vs host trainer, ${rr.steps} steps: max |Δloss| ${dl.toExponential(2)}, max rel Δ grad norm ${dn.toExponential(2)}, max |Δparam| ${dp.toExponential(2)}`);
    const clipped = hr.history.steps.filter((s) => s.gradNorm > base.maxGradNorm!).length;
    assert.ok(clipped > 0 && clipped < rr.steps, `clipping active in ${clipped} of ${rr.steps} steps`);
    assert.ok(dl <= 1e-5, `losses differ by ${dl}`);
    assert.ok(dn <= 1e-4, `gradient norms differ by ${dn}`);
    assert.ok(dp <= 1e-5, `parameters differ by ${dp}`);
    // and training moved the parameters by much more than that
    const fresh = llamaLora();
    assert.ok(maxParamDiff(fresh, resPm) > 1e-2);
    // the perplexity evaluation after fit uses the downloaded parameters
    const eh = await host.evaluate(data.slice(0, 8));
    const er = await res.evaluate(data.slice(0, 8));
    await host.release();
    await res.release();
    assert.ok(Math.abs(eh.loss - er.loss) <= 1e-5, `eval loss ${eh.loss} vs ${er.loss}`);
  });

  test("checkpoints: resident k steps + resume = straight run; its checkpoint also resumes on the host path", async () => {
    const dir = mkdtempSync(join(tmpdir(), "peft-resident-resume-"));
    const hostDir = `${dir}-host`;
    try {
      const cfg: TrainerConfig = { ...base, residentOptimizer: true };
      const straight = llamaLora();
      await new Trainer(straight, cfg, data).fit();
      await new Trainer(llamaLora(), { ...cfg, stopAfterSteps: 7, checkpointDir: dir, checkpointEvery: 7 }, data).fit();
      cpSync(dir, hostDir, { recursive: true });
      const again = llamaLora();
      await new Trainer(again, { ...cfg, checkpointDir: dir }, data).fit();
      const dr = maxParamDiff(straight, again);
      const viaHost = llamaLora();
      await new Trainer(viaHost, { ...cfg, residentOptimizer: false, checkpointDir: hostDir }, data).fit();
      const dh = maxParamDiff(straight, viaHost);
      console.log(`# resident resume: max |Δparam| ${dr.toExponential(2)}; host resume from the resident checkpoint: ${dh.toExponential(2)}`);
      assert.ok(dr <= 1e-6, `resumed resident run differs by ${dr}`);
      assert.ok(dh <= 1e-5, `host run resumed from the resident checkpoint differs by ${dh}`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
      rmSync(hostDir, { recursive: true, force: true });
    }
  });

  test("classification with evaluation and early stopping: same evaluations as the host path, best parameters restored", async () => {
    const raw = { ...LORA(["query", "value"]), task_type: "SEQ_CLS" };
    const mk = separableClasses(new Rng(3));
    const train = mk(32);
    const val = mk(16);
    // a large rate: the loss rises after the first evaluation, so training stops early and the best (step 2) is restored
    const cfg: TrainerConfig = { task: "seq-cls", epochs: 6, batchSize: 8, lr: 0.3, seed: 1, dropout: false, evalEvery: 2, earlyStopping: { patience: 2, metric: "loss" } };
    const hostPm = PeftModel.create(BERT, raw, "default", { seed: 1 });
    const hr = await new Trainer(hostPm, { ...cfg, residentOptimizer: false }, train, val).fit();
    const resPm = PeftModel.create(BERT, raw, "default", { seed: 1 });
    const rt = new Trainer(resPm, { ...cfg, residentOptimizer: true }, train, val);
    const rr = await rt.fit();
    assert.equal(rt.usesResidentOptimizer, true);
    assert.equal(rr.history.evals.length, hr.history.evals.length);
    assert.ok(rr.history.evals.length >= 2);
    rr.history.evals.forEach((e, i) => {
      const h = hr.history.evals[i]!;
      assert.equal(e.step, h.step);
      assert.equal(e.accuracy, h.accuracy);
      assert.ok(Math.abs(e.loss - h.loss) <= 1e-5, `eval ${i}: loss ${e.loss} vs ${h.loss}`);
    });
    assert.equal(rr.best?.step, hr.best?.step);
    assert.equal(rr.stoppedEarly, true);
    assert.equal(hr.stoppedEarly, true);
    assert.ok(rr.best!.step < rr.steps, "the best is not the last step");
    // the modules_to_save classifier (its bias without weight decay) and the LoRA tensors match
    const dp = maxParamDiff(hostPm, resPm);
    console.log(`# seq-cls with early stopping: ${rr.history.evals.length} evaluations, best at step ${rr.best?.step}, max |Δparam| ${dp.toExponential(2)}`);
    // Adam's first steps move each element by about ±lr·g/|g|, so float32 rounding differences of
    // near-zero gradients (the two graphs are optimised differently) show up scaled by lr = 0.3
    assert.ok(dp <= 1e-3 * cfg.lr, `parameters differ by ${dp}`);
    // the restored best parameters give the best evaluation again
    const again = await rt.evaluate(val);
    await rt.release();
    assert.ok(Math.abs(again.loss - rr.best!.loss) <= 1e-6);
  });

  test("the fused step is used only where it gives the same update; webgpu turns it on by default", () => {
    const pm = llamaLora();
    const on = (c: Partial<TrainerConfig>) => new Trainer(pm, { ...base, ...c }, data).usesResidentOptimizer;
    assert.equal(on({}), false, "cpu default: host optimizer");
    assert.equal(on({ session: { ep: "webgpu" } }), true);
    assert.equal(on({ session: { ep: "webgpu" }, residentOptimizer: false }), false);
    assert.equal(on({ residentOptimizer: true, gradientAccumulation: 2 }), false);
    assert.equal(on({ residentOptimizer: true, optimizer: "sgd" }), false);
    assert.equal(on({ residentOptimizer: true, optimizer: "adamw8bit" }), false);
    assert.equal(on({ residentOptimizer: true, optimizer: "adamw" }), true);
    assert.equal(on({ residentOptimizer: true, dtype: "float16" }), true, "mixed precision: loss scaling in the graph");
  });

  test("float16 (mixed precision): the same losses, loss scales and parameters as the host GradScaler path", async () => {
    const cfg: TrainerConfig = { ...base, epochs: 2, dtype: "float16", lossScaling: { kind: "dynamic", initScale: 2 ** 22, growthInterval: 2 } };
    const hostPm = llamaLora();
    const host = new Trainer(hostPm, { ...cfg, residentOptimizer: false }, data);
    const hr = await host.fit();
    const resPm = llamaLora();
    const res = new Trainer(resPm, { ...cfg, residentOptimizer: true }, data);
    const rr = await res.fit();
    await host.release();
    await res.release();
    assert.equal(res.usesResidentOptimizer, true);
    const scales = (r: TrainResult) => r.history.steps.map((s) => [s.lossScale, s.skipped]);
    console.log(`# float16 resident vs host: scales ${JSON.stringify(scales(rr))}`);
    assert.deepEqual(scales(rr), scales(hr), "the same steps overflow and the same scales follow");
    assert.ok(rr.history.steps.some((s) => s.skipped) && rr.history.steps.some((s) => !s.skipped), "some steps skipped, some taken");
    const dl = lossDiff(hr, rr);
    const dp = maxParamDiff(hostPm, resPm);
    console.log(`# float16 resident vs host trainer, ${rr.steps} steps: max |Δloss| ${dl.toExponential(2)}, max |Δparam| ${dp.toExponential(2)}`);
    assert.ok(dl <= 1e-5, `losses differ by ${dl}`);
    assert.ok(dp <= 1e-5, `parameters differ by ${dp}`);
    assert.ok(maxParamDiff(llamaLora(), resPm) > 1e-3, "the taken steps moved the parameters");
  });

  test("float16: an overflow on every step skips every update, halves the scale each time and leaves the adapter as it was", async () => {
    const pm = llamaLora();
    const t = new Trainer(pm, { ...base, epochs: 1, maxSteps: 3, dtype: "float16", residentOptimizer: true, lossScaling: { kind: "dynamic", initScale: 2 ** 120 } }, data);
    const r = await t.fit();
    await t.release();
    assert.deepEqual(r.history.steps.map((s) => [s.lossScale, s.skipped]), [[2 ** 120, true], [2 ** 119, true], [2 ** 118, true]]);
    assert.equal(maxParamDiff(llamaLora(), pm), 0);
  });
});
