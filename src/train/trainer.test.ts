import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import { loadModel } from "../models/load.js";
import { PeftModel } from "../peft/peft-model.js";
import { Rng } from "../util/rng.js";
import { fixturePath } from "../util/paths.js";
import { separableClasses } from "./tiny-llama.test-util.js";
import { type TokenizedExample, Trainer, type TrainerConfig, collate } from "./trainer.js";

const LORA = (targets: string[]) => ({ peft_type: "LORA", r: 4, lora_alpha: 8, target_modules: targets, lora_dropout: 0 });

/** A fixed toy corpus: repeated short patterns, learnable by a tiny LM. */
function corpus(n: number, seed: number): TokenizedExample[] {
  const rng = new Rng(seed);
  return Array.from({ length: n }, () => {
    const start = 3 + rng.int(8);
    return { ids: Array.from({ length: 10 }, (_, j) => 3 + ((start + 3 * j) % 40)) };
  });
}

function llamaLora(seed = 1): PeftModel {
  return PeftModel.create(loadModel(fixturePath("peft-parity", "llama", "base")), LORA(["q_proj", "v_proj"]), "default", { seed });
}

describe("trainer", () => {
  test("an adapter loaded for inference is frozen: nothing to train is an error", async () => {
    const pm = PeftModel.fromPretrained(loadModel(fixturePath("peft-parity", "llama", "base")), fixturePath("peft-parity", "llama", "lora"));
    await assert.rejects(
      new Trainer(pm, { task: "causal-lm", epochs: 1, batchSize: 2, lr: 1e-3, seed: 0 }, corpus(4, 1)).fit(),
      (e: Error & { code?: string }) => e.code === "PEFT_ERR_ADAPTER_STATE" && /isTrainable/.test(e.message),
    );
  });

  test("optimizer 'adamw8bit': LoRA tensors under 4,096 elements keep 32-bit moments (bitsandbytes' rule), so it equals adamw here", async () => {
    const data = corpus(16, 2);
    const cfg: TrainerConfig = { task: "causal-lm", epochs: 100, maxSteps: 20, batchSize: 8, lr: 1e-2, seed: 0, schedule: "constant", dropout: false };
    const a = await new Trainer(llamaLora(5), cfg, data).fit();
    const b = await new Trainer(llamaLora(5), { ...cfg, optimizer: "adamw8bit" }, data).fit();
    const la = a.history.steps.at(-1)!.loss;
    const lb = b.history.steps.at(-1)!.loss;
    console.log(`# final loss adamw ${la.toFixed(4)} vs adamw8bit ${lb.toFixed(4)}`);
    assert.ok(lb < b.history.steps[0]!.loss - 0.05, "8-bit run lowered the loss");
    assert.equal(lb, la);
  });

  test("collate pads right, masks padding and ignores it in LM labels", () => {
    const b = collate([{ ids: [5, 6, 7] }, { ids: [8] }], "causal-lm", 0);
    assert.deepEqual([...b.inputIds.data].map(Number), [5, 6, 7, 8, 0, 0]);
    assert.deepEqual([...b.attentionMask.data].map(Number), [1, 1, 1, 1, 0, 0]);
    assert.deepEqual([...b.labels.data].map(Number), [5, 6, 7, 8, -100, -100]);
  });

  for (const arch of ["gpt2", "llama"] as const) {
    test(`${arch}: 50 LoRA steps on a toy corpus lower the loss`, async () => {
      const targets = arch === "gpt2" ? ["c_attn"] : ["q_proj", "v_proj"];
      const raw = { ...LORA(targets), ...(arch === "gpt2" ? { fan_in_fan_out: true } : {}) };
      const pm = PeftModel.create(loadModel(fixturePath("peft-parity", arch, "base")), raw, "default", { seed: 3 });
      const data = corpus(32, 5);
      const cfg: TrainerConfig = { task: "causal-lm", epochs: 100, maxSteps: 50, batchSize: 8, lr: 1e-2, seed: 0, schedule: "constant", dropout: false };
      const r = await new Trainer(pm, cfg, data).fit();
      const losses = r.history.steps.map((s) => s.loss);
      const first = losses.slice(0, 10).reduce((a, b) => a + b) / 10;
      const last = losses.slice(-10).reduce((a, b) => a + b) / 10;
      console.log(`# ${arch}: mean loss first 10 steps ${first.toFixed(3)} → last 10 ${last.toFixed(3)}`);
      assert.equal(r.steps, 50);
      // "monotonically on average": each block of 10 steps has a lower mean than the one before
      for (let k = 10; k < 50; k += 10) {
        const prev = losses.slice(k - 10, k).reduce((a, b) => a + b) / 10;
        const cur = losses.slice(k, k + 10).reduce((a, b) => a + b) / 10;
        assert.ok(cur < prev, `block ${k / 10}: ${cur} ≥ ${prev}`);
      }
      assert.ok(last < first - 0.1, `loss ${first} → ${last}`);
      // the adapter got the trained values
      const a = pm.adapter("default").tensors.get(arch === "gpt2" ? "transformer.h.0.attn.c_attn.lora_B.weight" : "model.layers.0.self_attn.q_proj.lora_B.weight")!;
      assert.ok((a.data as Float32Array).some((v) => v !== 0), "lora_B was updated");
    });
  }

  test("resume: N steps straight = k steps, stop, resume, N−k steps", async () => {
    const dir = mkdtempSync(join(tmpdir(), "peft-resume-"));
    try {
      const data = corpus(20, 9);
      const base: TrainerConfig = { task: "causal-lm", epochs: 3, batchSize: 4, lr: 5e-3, seed: 4, dropout: false, maxGradNorm: 1, warmupSteps: 2 };
      const straight = llamaLora();
      await new Trainer(straight, { ...base }, data).fit();
      const resumed = llamaLora();
      await new Trainer(resumed, { ...base, stopAfterSteps: 7, checkpointDir: dir, checkpointEvery: 7 }, data).fit();
      const again = llamaLora();
      await new Trainer(again, { ...base, checkpointDir: dir }, data).fit();
      let worst = 0;
      for (const [k, t] of straight.adapter("default").tensors) {
        const u = again.adapter("default").tensors.get(k)!;
        const x = t.data as Float32Array;
        const y = u.data as Float32Array;
        for (let i = 0; i < x.length; i++) worst = Math.max(worst, Math.abs(x[i]! - y[i]!));
      }
      console.log(`# resume: max |Δparam| = ${worst.toExponential(2)}`);
      assert.ok(worst <= 1e-6, `resumed run differs by ${worst}`);
      // and training did move the parameters
      const b = straight.adapter("default").tensors.get("model.layers.1.self_attn.v_proj.lora_B.weight")!.data as Float32Array;
      assert.ok(b.some((v) => v !== 0));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("gradient accumulation 2×2 equals one batch of 4 (classification)", async () => {
    const model = loadModel(fixturePath("peft-parity", "bert", "base"));
    const raw = { ...LORA(["query", "value"]), task_type: "SEQ_CLS", init_lora_weights: false };
    const data: TokenizedExample[] = Array.from({ length: 4 }, (_, i) => ({ ids: [5 + i, 9, 11 + i, 20], label: i % 3 }));
    const cfg: TrainerConfig = { task: "seq-cls", epochs: 1, batchSize: 4, lr: 1e-2, seed: 0, dropout: false, schedule: "constant" };
    const one = PeftModel.create(model, raw, "default", { seed: 2 });
    await new Trainer(one, cfg, data).fit();
    const two = PeftModel.create(model, raw, "default", { seed: 2 });
    await new Trainer(two, { ...cfg, batchSize: 2, gradientAccumulation: 2 }, data).fit();
    let worst = 0;
    for (const [k, t] of one.adapter("default").tensors) {
      const x = t.data as Float32Array;
      const y = two.adapter("default").tensors.get(k)!.data as Float32Array;
      for (let i = 0; i < x.length; i++) worst = Math.max(worst, Math.abs(x[i]! - y[i]!));
    }
    assert.ok(worst <= 1e-6, `accumulated update differs by ${worst}`);
    const cls = one.adapter("default").tensors.get("classifier.weight")!.data as Float32Array;
    const orig = model.weights.get("classifier.weight").data as Float32Array;
    assert.ok(cls.some((v, i) => v !== orig[i]), "the modules_to_save classifier copy was trained");
    assert.ok(orig.every((v, i) => v === (model.weights.get("classifier.weight").data as Float32Array)[i]), "base weights untouched");
  });

  test("evaluation reports accuracy and F1 for classification, and early stopping keeps the best", async () => {
    const model = loadModel(fixturePath("peft-parity", "bert", "base"));
    const raw = { ...LORA(["query", "value"]), task_type: "SEQ_CLS" };
    const mk = separableClasses(new Rng(3));
    const pm = PeftModel.create(model, raw, "default", { seed: 1 });
    const val = mk(24);
    const tr = new Trainer(pm, { task: "seq-cls", epochs: 12, batchSize: 8, lr: 5e-2, seed: 1, dropout: false, evalEvery: 6, earlyStopping: { patience: 3 } }, mk(48), val);
    const r = await tr.fit();
    assert.ok(r.history.evals.length >= 1);
    const best = r.best!;
    console.log(`# toy classification: best accuracy ${best.accuracy} at step ${best.step}, ${r.steps} steps, early stop ${r.stoppedEarly}`);
    assert.ok(best.accuracy! >= 0.9, `accuracy ${best.accuracy}`);
    for (const e of r.history.evals) assert.ok(e.f1! >= 0 && e.f1! <= 1 && e.accuracy! >= 0 && e.accuracy! <= 1);
    // the best parameters were restored, not the last ones
    const again = await tr.evaluate(val);
    await tr.release();
    assert.equal(again.accuracy, best.accuracy);
    assert.ok(Math.abs(again.loss - best.loss) < 1e-6);
  });
});
