import assert from "node:assert/strict";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { AtlasComposer } from "../../compose/atlas/composer.js";
import { layoutFromCoefficientFile, readAtlasCoefficients } from "../../compose/atlas/files.js";
import { composeAtlasWeights } from "../../compose/atlas/layout.js";
import { loadAtlasTaskVector } from "../../compose/atlas/task-vectors.js";
import { loadSafetensors } from "../../io/safetensors.js";
import { overlaySource } from "../../models/context.js";
import { loadModel } from "../../models/load.js";
import { loadAdapterDir } from "../../peft/adapter-io.js";
import { modelInfo } from "../../peft/model-info.js";
import type { Tensor } from "../../tensor.js";
import type { AtlasMetrics } from "../../runs/atlas/run.js";
import { runCli } from "../main.js";
import { loadRunData, tokenizeSplits } from "../../runs/data.js";
import { openModelSource } from "../../runs/model-source.js";
import { makeTinyModelDir, writeTinyDataset } from "../../runs/testing.js";

let root = "";
let bert = "";
let gpt2 = "";
let dataA = "";
let dataB = "";
let data2 = "";
let runA = "";
let runB = "";

const train = (out: string, model: string, data: string, extra: string[] = []) =>
  runCli(["train", "--model", model, "--data", data, "--out", out, "--target", "query,value", "--r", "4", "--alpha", "8", "--epochs", "6", "--batch-size", "8", "--lr", "0.05", "--seed", "0", "--threads", "1", "--no-progress", "--no-plot", ...extra]);

const atlas = (out: string, extra: string[] = [], tvs = `${runA},${runB}`) =>
  runCli(["atlas", "--model", bert, "--task-vectors", tvs, "--data", dataA, "--out", out, "--threads", "1", "--no-progress", ...extra]);

function readJson<T>(file: string): T {
  return JSON.parse(readFileSync(file, "utf8")) as T;
}

function maxAbsDiff(a: Tensor, b: Tensor): number {
  assert.deepEqual([...a.shape], [...b.shape]);
  let d = 0;
  for (let i = 0; i < a.data.length; i++) d = Math.max(d, Math.abs(Number(a.data[i]) - Number(b.data[i])));
  return d;
}

before(async () => {
  root = mkdtempSync(join(tmpdir(), "peft-atlas-cli-"));
  bert = makeTinyModelDir("bert", join(root, "bert"));
  gpt2 = makeTinyModelDir("gpt2", join(root, "gpt2"));
  dataA = writeTinyDataset(join(root, "a.jsonl"), 90, 1);
  dataB = writeTinyDataset(join(root, "b.jsonl"), 90, 5);
  data2 = writeTinyDataset(join(root, "two.jsonl"), 40, 2, 2);
  runA = join(root, "run-a");
  runB = join(root, "run-b");
  for (const [out, data] of [
    [runA, dataA],
    [runB, dataB],
  ] as const) {
    const r = await train(out, bert, data);
    assert.equal(r.code, 0, r.stderr);
  }
});

after(() => rmSync(root, { recursive: true, force: true }));

describe("peft atlas", () => {
  test("few-shot cross-entropy: files, metrics, and the coefficient file reproduces the reported accuracy and the saved model", async () => {
    const out = join(root, "atlas-ce");
    const r = await atlas(out, ["--shots", "4", "--epochs", "10", "--lr", "0.2", "--head", runA, "--save-model", "--json"]);
    assert.equal(r.code, 0, r.stderr);
    for (const f of ["atlas_coefficients.json", "metrics.json", "config.json", "model/model.safetensors", "model/config.json", "model/tokenizer.json"]) assert.ok(existsSync(join(out, f)), f);
    const m = readJson<AtlasMetrics>(join(out, "metrics.json"));
    assert.deepEqual(JSON.parse(r.stdout), m);
    assert.equal(m.trainExamples, 12); // 4 shots × 3 classes
    assert.equal(m.coefficientCount, 8); // 2 task vectors × 4 blocks (query, value of 2 layers)
    assert.deepEqual(m.coefficients.map((c) => c.name), ["run-a", "run-b"]);
    // the base encoder with run A's head is at chance; the composed one learns the task
    assert.ok(m.base.test!.accuracy < 0.5, `base ${m.base.test!.accuracy}`);
    assert.ok(m.fitted.test!.accuracy >= 0.8, `fitted ${m.fitted.test!.accuracy}`);
    assert.ok(m.fitted.validation!.loss < m.base.validation!.loss);

    // rebuild from the coefficient file alone and score the held-out test split
    const file = readAtlasCoefficients(join(out, "atlas_coefficients.json"));
    assert.equal(file.mode, "anisotropic");
    assert.equal(file.baseModel, bert);
    const data = loadRunData({ data: dataA, seed: 0 });
    const source = openModelSource(bert, { numLabels: 3, seed: 0 });
    const head = loadAdapterDir(runA, "h", modelInfo(source.model)).tensors;
    const model = { ...source.model, weights: overlaySource(source.model.weights, new Map([...head].filter(([k]) => k.startsWith("classifier.")))) };
    const tvs = file.taskVectors.map((e) => loadAtlasTaskVector(e.name, e.source, model));
    const { layout, coefficients } = layoutFromCoefficientFile(file, tvs, model.weights.keys());
    const c = AtlasComposer.create(model, tvs, { mode: file.mode, padId: source.padId, session: { threads: 1 } });
    try {
      assert.deepEqual(c.layout.blocks, layout.blocks);
      c.coefficients.set(coefficients);
      const test = tokenizeSplits(data, (t) => source.encode(t)).test;
      assert.equal((await c.evaluate(test)).accuracy, m.fitted.test!.accuracy);
    } finally {
      await c.release();
    }
    // the saved model is θ0 + Σ λ τ with run A's head
    const saved = loadSafetensors(join(out, "model", "model.safetensors")).tensors;
    const composed = composeAtlasWeights(model.weights, tvs, layout, coefficients);
    assert.equal(composed.size, 4);
    for (const [k, t] of composed) assert.ok(maxAbsDiff(saved.get(k)!, t) <= 1e-6, k);
    assert.equal(maxAbsDiff(saved.get("classifier.weight")!, head.get("classifier.weight")!), 0);
    assert.ok(maxAbsDiff(saved.get(layout.blocks[0]!)!, loadModel(bert).weights.get(layout.blocks[0]!)) > 1e-4);
  });

  test("isotropic entropy minimisation (unlabelled texts) lowers the entropy; an existing run needs --overwrite", async () => {
    const out = join(root, "atlas-ent");
    const r = await atlas(out, ["--mode", "isotropic", "--objective", "entropy", "--epochs", "3", "--lr", "0.1", "--head", runA]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /isotropic, entropy/);
    const m = readJson<AtlasMetrics>(join(out, "metrics.json"));
    assert.equal(m.coefficientCount, 2);
    assert.ok(m.fitted.validation!.entropy < m.base.validation!.entropy);
    const file = readAtlasCoefficients(join(out, "atlas_coefficients.json"));
    assert.deepEqual(file.taskVectors.map((e) => e.coefficient), m.coefficients.map((c) => c.mean));
    assert.equal(file.metadata.objective, "entropy");

    const again = await atlas(out, ["--head", runA]);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /PEFT_ERR_CONFIG.*--out.*already holds a run.*--overwrite/);
    const over = await atlas(out, ["--head", runA, "--epochs", "2", "--keep-best", "--overwrite"]);
    assert.equal(over.code, 0, over.stderr);
    const m2 = readJson<AtlasMetrics>(join(out, "metrics.json"));
    assert.equal(m2.objective, "cross-entropy");
    assert.ok(m2.bestEpoch !== null && m2.bestEpoch >= 0 && m2.bestEpoch <= 2);
    assert.match(over.stderr, /validation after epoch 2: accuracy/);
    // --keep-best restores the best epoch's λ, so the final validation accuracy is never below λ = 0's
    assert.ok(m2.fitted.validation!.accuracy >= m2.base.validation!.accuracy);
  });

  test("bad inputs are typed errors naming the option and path", async () => {
    const missing = join(root, "no-such-run");
    let r = await atlas(join(root, "e1"), [], `${runA},${missing}`);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /error \[PEFT_ERR_MISSING_FILE\].*no-such-run.*--task-vectors/);

    const empty = join(root, "empty-run");
    mkdirSync(empty);
    r = await atlas(join(root, "e2"), [], `${runA},${empty}`);
    assert.match(r.stderr, /PEFT_ERR_MISSING_FILE.*empty-run.*adapter_config\.json.*holds no adapter/);

    const gptRun = join(root, "run-gpt2");
    assert.equal((await train(gptRun, gpt2, dataB, ["--target", "c_attn", "--max-steps", "1"])).code, 0);
    r = await atlas(join(root, "e3"), [], `${runA},${gptRun}`);
    assert.match(r.stderr, /PEFT_ERR_CONFIG.*--task-vectors.*run-gpt2 was trained on a gpt2 model, but --model is bert/);

    // a 2-label run: fine as a task vector (its head is left out), refused as the 3-label target's head
    const two = join(root, "run-two");
    assert.equal((await train(two, bert, data2, ["--max-steps", "2"])).code, 0);
    r = await atlas(join(root, "e4"), ["--head", two]);
    assert.match(r.stderr, /PEFT_ERR_CONFIG.*--head.*run-two has 2 labels, --data has 3/);
    r = await atlas(join(root, "e5"), ["--head", runA, "--epochs", "1"], `${runA},${two}`);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(!existsSync(join(root, "e1")) && !existsSync(join(root, "e4")), "a failed run writes nothing");

    r = await atlas(join(root, "e6"), [], `${runA},${runA}`);
    assert.match(r.stderr, /PEFT_ERR_CONFIG.*--task-vectors.*listed twice/);
    r = await atlas(join(root, "e7"), ["--mode", "diagonal"]);
    assert.match(r.stderr, /--mode.*diagonal.*anisotropic, isotropic/);
  });
});
