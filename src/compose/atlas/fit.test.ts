import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ConfigError } from "../../errors.js";
import { loadModel } from "../../models/load.js";
import { PeftModel } from "../../peft/peft-model.js";
import { Trainer } from "../../train/trainer.js";
import { AtlasComposer } from "./composer.js";
import { atlasCoefficientFile, layoutFromCoefficientFile, readAtlasCoefficients, saveAtlasCoefficients, saveComposedModel } from "./files.js";
import { ATLAS_OUTPUTS } from "./graph.js";
import { composeAtlasWeights } from "./layout.js";
import { type AtlasTaskVector, atlasTaskVectorFromAdapter } from "./task-vectors.js";
import { randomTaskVector, syntheticTask, tinyModel } from "./tiny-model.test-util.js";

const model = tinyModel(3, 2);
const train = syntheticTask(240, 21);
const test_ = syntheticTask(200, 22);
const tmp = mkdtempSync(join(tmpdir(), "peft-atlas-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

let expert: AtlasTaskVector;
let noise: AtlasTaskVector;
let loraAccuracy = 0;

/** k examples of each class from `pool`, in pool order. */
function kShot(pool: readonly { ids: readonly number[]; label?: number }[], k: number): { ids: readonly number[]; label: number }[] {
  const out: { ids: readonly number[]; label: number }[] = [];
  for (const c of [0, 1]) out.push(...pool.filter((e) => e.label === c).slice(0, k).map((e) => ({ ids: e.ids, label: c })));
  return out;
}

describe("aTLAS training", () => {
  before(async () => {
    // the "expert": a LoRA fine-tune of the encoder on the synthetic task (the head stays fixed)
    const pm = PeftModel.create(model, { peft_type: "LORA", r: 4, lora_alpha: 8, target_modules: ["query", "value", "dense"], init_lora_weights: true }, "expert", { seed: 4 });
    const trainer = new Trainer(pm, { task: "seq-cls", epochs: 6, batchSize: 16, lr: 2e-2, seed: 0, dropout: false }, train, test_);
    const r = await trainer.fit();
    loraAccuracy = r.history.evals.at(-1)!.accuracy!;
    expert = atlasTaskVectorFromAdapter("expert", pm.adapter("expert"), pm.info);
    noise = randomTaskVector(model, "noise", [...expert.blocks.keys()], 9, 0.05);
  });

  test("LoRA deltas become task-vector blocks in the base weights' layout", () => {
    assert.ok(expert.blocks.size >= 8);
    for (const [k, v] of expert.blocks) {
      assert.match(k, /\.weight$/);
      assert.equal(v.length, model.weights.get(k).data.length);
    }
  });

  test("few-shot (8 per class): learned anisotropic λ improve test accuracy over λ = 0", async (t) => {
    const c = AtlasComposer.create(model, [expert, noise], { mode: "anisotropic" });
    try {
      const zero = await c.evaluate(test_);
      const shots = kShot(train, 8);
      const r = await c.fit([{ name: "synthetic", examples: shots }], { epochs: 40, batchSize: 16, lr: 0.1, seed: 0 });
      const after_ = await c.evaluate(test_);
      t.diagnostic(`λ=0: ${zero.accuracy.toFixed(3)}, aTLAS 8-shot: ${after_.accuracy.toFixed(3)}, LoRA on 240: ${loraAccuracy.toFixed(3)}; ${r.steps} steps in ${r.seconds.toFixed(1)} s`);
      assert.ok(r.losses.at(-1)! < r.losses[0]!, "training loss goes down");
      assert.ok(after_.accuracy >= zero.accuracy + 0.1, `${zero.accuracy} → ${after_.accuracy}`);
      // the expert's coefficients grew more than the noise's
      const mean = (tv: number) => c.layout.blocks.reduce((s, _, b) => s + Math.abs(c.coefficient(tv, b)), 0) / c.layout.blocks.length;
      assert.ok(mean(0) > mean(1), `expert ${mean(0)} vs noise ${mean(1)}`);
    } finally {
      await c.release();
    }
  });

  test("test-time adaptation: the entropy objective lowers the prediction entropy on unlabelled data", async () => {
    const c = AtlasComposer.create(model, [expert], { mode: "isotropic" });
    try {
      const unlabelled = test_.map((e) => ({ ids: e.ids }));
      const before_ = await c.evaluate(unlabelled);
      await c.fit([{ name: "tta", examples: unlabelled, objective: "entropy" }], { epochs: 3, batchSize: 32, lr: 0.05, seed: 1 });
      const after_ = await c.evaluate(unlabelled);
      assert.ok(Number.isNaN(after_.accuracy));
      assert.ok(after_.entropy < before_.entropy - 0.01, `${before_.entropy} → ${after_.entropy}`);
      await assert.rejects(() => c.lossAndGradient(unlabelled.slice(0, 4), "cross-entropy"), ConfigError);
    } finally {
      await c.release();
    }
  });

  test("block selection keeps the highest-scoring pairs and rebuilds a smaller graph", async () => {
    const c = AtlasComposer.create(model, [expert, noise]);
    try {
      const data = [{ name: "synthetic", examples: train.slice(0, 64) }];
      const scores = await c.blockScores({ criterion: "gradient", data, batchSize: 32, batches: 2 });
      const best = [...scores.keys()].filter((i) => !Number.isNaN(scores[i]!)).sort((a, b) => scores[b]! - scores[a]!);
      const r = await c.selectBlocks({ criterion: "gradient", keep: 0.25, data, batchSize: 32, batches: 2 });
      assert.equal(r.after.pairs, Math.round(0.25 * r.before.pairs));
      assert.ok(r.after.parameters < r.before.parameters);
      for (const i of best.slice(0, r.after.pairs)) assert.equal(c.layout.kept[i], 1);
      for (const i of best.slice(r.after.pairs)) assert.equal(c.layout.kept[i], 0);
      // the smaller graph still trains and gives gradients only for kept pairs
      const { grad } = await c.lossAndGradient(train.slice(0, 16), "cross-entropy");
      c.layout.kept.forEach((k, i) => {
        if (!k) assert.equal(grad[i], 0);
      });
      const byNorm = AtlasComposer.create(model, [expert, noise]);
      await byNorm.selectBlocks({ criterion: "norm", keep: 3, count: true });
      assert.equal(byNorm.layout.kept.reduce((s, k) => s + k, 0), 3);
      // the noise vector (std 0.05) never beats the trained expert blocks on norm
      assert.ok(byNorm.layout.kept.slice(byNorm.layout.blocks.length).every((k) => k === 0));
      await byNorm.release();
      await assert.rejects(() => c.selectBlocks({ criterion: "norm", keep: 1.5 }), ConfigError);
    } finally {
      await c.release();
    }
  });

  test("coefficient files round-trip; the composed model folder loads and gives the composer's logits", async () => {
    const c = AtlasComposer.create(model, [expert, noise], { init: [0.5, -0.2] });
    try {
      c.coefficients.forEach((_, i) => (c.coefficients[i] = 0.1 * Math.cos(i)));
      const file = join(tmp, "coef.json");
      saveAtlasCoefficients(file, atlasCoefficientFile(c.layout, c.coefficients, c.taskVectors, { baseModel: "tiny", metadata: { task: "synthetic" } }));
      const read = readAtlasCoefficients(file);
      assert.equal(read.mode, "anisotropic");
      assert.equal(read.taskVectors.length, 2);
      const { layout, coefficients } = layoutFromCoefficientFile(read, c.taskVectors, model.weights.keys());
      const a = composeAtlasWeights(model.weights, c.taskVectors, layout, coefficients);
      const b = c.composedWeights();
      assert.deepEqual([...a.keys()], [...b.keys()]);
      for (const [k, v] of a) assert.deepEqual(v.data, b.get(k)!.data);
      const dir = join(tmp, "composed");
      saveComposedModel(dir, model, b);
      const reloaded = new PeftModel(loadModel(dir));
      const ex = train.slice(0, 1)[0]!;
      const ids = { dtype: "int64" as const, shape: [1, ex.ids.length], data: BigInt64Array.from(ex.ids, BigInt) };
      const got = (await reloaded.forward({ inputIds: ids })).data as Float32Array;
      const want = (await c.run([ex], [ATLAS_OUTPUTS.logits]))[ATLAS_OUTPUTS.logits]!.data as Float32Array;
      for (let i = 0; i < want.length; i++) assert.ok(Math.abs(got[i]! - want[i]!) <= 1e-5);
      await reloaded.dispose();
      writeFileSync(join(tmp, "bad.json"), JSON.stringify({ format: "peft-ts-atlas", version: 1, mode: "anisotropic", task_vectors: [{ name: "x", source: { kind: "memory" }, blocks: ["a"], coefficients: [1, 2] }] }));
      assert.throws(() => readAtlasCoefficients(join(tmp, "bad.json")), (e: unknown) => e instanceof ConfigError && e.path === "task_vectors[0].coefficients");
    } finally {
      await c.release();
    }
  });
});
