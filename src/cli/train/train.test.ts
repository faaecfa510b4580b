import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { loadSafetensors } from "../../io/safetensors.js";
import { loadModel } from "../../models/load.js";
import { PeftModel } from "../../peft/peft-model.js";
import type { Tensor } from "../../tensor.js";
import { collate } from "../../train/trainer.js";
import { runCli } from "../main.js";
import { DEFAULT_SPLIT } from "../../runs/data.js";
import { openModelSource } from "../../runs/model-source.js";
import { RUN_FILES } from "../../runs/run-dir.js";
import { type TrainRunOptions, type TrainMetrics, runTraining } from "../../runs/train.js";
import { makeTinyModelDir, writeTinyDataset } from "../../runs/testing.js";

let root = "";
let bert = "";
let gpt2 = "";
let data = "";
let data2 = "";


function readJson<T>(file: string): T {
  return JSON.parse(readFileSync(file, "utf8")) as T;
}

function maxAbsDiff(a: Tensor, b: Tensor): number {
  assert.deepEqual(a.shape, b.shape);
  let d = 0;
  for (let i = 0; i < a.data.length; i++) d = Math.max(d, Math.abs(Number(a.data[i]) - Number(b.data[i])));
  return d;
}

const TRAIN_ARGS = (out: string, extra: string[] = []) => [
  "train",
  "--model",
  bert,
  "--data",
  data,
  "--out",
  out,
  "--target",
  "query,value",
  "--r",
  "4",
  "--alpha",
  "8",
  "--epochs",
  "3",
  "--batch-size",
  "8",
  "--lr",
  "0.02",
  "--seed",
  "3",
  "--threads",
  "1",
  "--no-progress",
  ...extra,
];

before(() => {
  root = mkdtempSync(join(tmpdir(), "peft-train-"));
  bert = makeTinyModelDir("bert", join(root, "bert"));
  gpt2 = makeTinyModelDir("gpt2", join(root, "gpt2"));
  data = writeTinyDataset(join(root, "data.jsonl"), 90, 1);
  data2 = writeTinyDataset(join(root, "two.jsonl"), 40, 2, 2);
});

after(() => rmSync(root, { recursive: true, force: true }));

describe("peft train", () => {
  test("runTraining: the saved adapter loads back with PeftModel.fromPretrained and gives the trained model's logits", async () => {
    const out = join(root, "api-run");
    const opts: TrainRunOptions = {
      model: bert,
      data,
      out,
      method: "lora",
      r: 4,
      alpha: 8,
      dropout: 0.1,
      target: { kind: "names", names: ["query", "value"] },
      feedforward: null,
      epochs: 4,
      lr: 0.02,
      batchSize: 8,
      seed: 5,
      weightDecay: 0.01,
      warmupRatio: 0.1,
      schedule: "linear",
      gradAccum: 1,
      maxGradNorm: 1,
      evalEvery: null,
      patience: null,
      maxLength: null,
      threads: 1,
      maxExamples: null,
      maxSteps: null,
      split: DEFAULT_SPLIT,
      mode: "new",
      plot: false,
    };
    const r = await runTraining(opts);
    for (const f of [RUN_FILES.adapterConfig, RUN_FILES.adapterWeights, RUN_FILES.metrics, RUN_FILES.config, RUN_FILES.history]) assert.ok(existsSync(join(out, f)), f);
    assert.ok(!existsSync(join(out, RUN_FILES.curvesPng)), "--no-plot writes no chart");
    const batch = collate([{ ids: [2, 7, 9, 3], label: 0 }, { ids: [2, 12, 3], label: 1 }], "seq-cls", 0);
    const trained = await r.model.forward({ inputIds: batch.inputIds, attentionMask: batch.attentionMask });
    const base = loadModel(bert);
    const loaded = PeftModel.fromPretrained(base, out);
    const again = await loaded.forward({ inputIds: batch.inputIds, attentionMask: batch.attentionMask });
    const d = maxAbsDiff(trained, again);
    console.log(`# reloaded adapter: max |Δ logits| = ${d.toExponential(2)}`);
    assert.ok(d <= 1e-6, `reloaded logits differ by ${d}`);
    const plain = await loaded.disableAdapter(() => loaded.forward({ inputIds: batch.inputIds, attentionMask: batch.attentionMask }));
    assert.ok(maxAbsDiff(trained, plain) > 1e-4, "training changed the logits");
    await Promise.all([r.model.dispose(), loaded.dispose()]);
    // the loss went down and the metrics are consistent
    const hist = readJson<{ steps: { loss: number }[] }>(join(out, RUN_FILES.history));
    const first = hist.steps.slice(0, 3).reduce((s, x) => s + x.loss, 0) / 3;
    const last = hist.steps.slice(-3).reduce((s, x) => s + x.loss, 0) / 3;
    assert.ok(last < first, `train loss ${first} → ${last}`);
    const m = r.metrics;
    assert.equal(m.steps, 4 * Math.ceil(72 / 8));
    assert.equal(m.validation?.examples, 9);
    assert.equal(m.test?.examples, 9);
    assert.ok(m.trainableParams > 0 && m.trainableParams < m.allParams);
    assert.equal(m.trainableFraction, m.trainableParams / m.allParams);
    assert.ok(m.sentencesPerSecond > 0 && m.matmulFlops > 0);
  });

  test("CLI run: outputs, config.json, curves (valid SVG and PNG), and peft eval reproduces the test metrics", async () => {
    const out = join(root, "cli-run");
    const r = await runCli(TRAIN_ARGS(out, ["--eval-every", "4"]));
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^run\s+.*cli-run$/m);
    assert.match(r.stdout, /^test\s+accuracy \d\.\d{4}/m);
    assert.match(r.stderr, /^eval step 4 \(epoch/m);
    const metrics = readJson<TrainMetrics>(join(out, RUN_FILES.metrics));
    for (const k of ["validation", "test", "steps", "seconds", "sentencesPerSecond", "trainableFraction", "achievedGflops"]) assert.ok(k in metrics, k);
    assert.ok(metrics.test!.accuracy! >= 0 && metrics.test!.accuracy! <= 1);
    const cfg = readJson<{ options: Record<string, unknown>; split: { seed: number; counts: Record<string, number>; hash: string }; environment: Record<string, unknown>; adapterConfig: Record<string, unknown> }>(join(out, RUN_FILES.config));
    assert.equal(cfg.options.lr, 0.02);
    assert.equal(cfg.options.evalEvery, 4);
    assert.deepEqual(cfg.split.counts, { train: 72, validation: 9, test: 9 });
    assert.equal(cfg.split.seed, 3);
    assert.equal(typeof cfg.environment.peftTs, "string");
    assert.equal(typeof cfg.environment.onnxruntimeNode, "string");
    assert.deepEqual(cfg.adapterConfig.target_modules, ["query", "value"]);
    const adapterCfg = readJson<Record<string, unknown>>(join(out, RUN_FILES.adapterConfig));
    assert.equal(adapterCfg.peft_type, "LORA");
    assert.equal(adapterCfg.r, 4);
    assert.deepEqual(adapterCfg.modules_to_save, ["classifier"]);
    const svg = readFileSync(join(out, RUN_FILES.curvesSvg), "utf8");
    assert.match(svg, /^<svg[^>]*xmlns="http:\/\/www.w3.org\/2000\/svg"/);
    assert.match(svg, /train loss/);
    assert.match(svg, /validation loss/);
    const png = readFileSync(join(out, RUN_FILES.curvesPng));
    assert.deepEqual([...png.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
    assert.equal(png.subarray(12, 16).toString("ascii"), "IHDR");
    assert.ok(png.readUInt32BE(16) > 200 && png.readUInt32BE(20) > 200, "PNG has a real size");

    const reportFile = join(root, "eval.json");
    const e = await runCli(["eval", "--adapter", out, "--data", data, "--json", "--output", reportFile, "--threads", "1"]);
    assert.equal(e.code, 0, e.stderr);
    const rep = JSON.parse(e.stdout) as { loss: number; accuracy: number; f1: number; examples: number; splitHash: string; model: string };
    assert.equal(rep.model, bert, "the base model comes from the run's config.json");
    assert.equal(rep.examples, 9);
    assert.equal(rep.splitHash, cfg.split.hash);
    assert.ok(Math.abs(rep.loss - metrics.test!.loss) < 1e-5, `eval loss ${rep.loss} vs training's test loss ${metrics.test!.loss}`);
    assert.equal(rep.accuracy, metrics.test!.accuracy);
    assert.equal(rep.f1, metrics.test!.f1);
    assert.deepEqual(readJson(reportFile), rep);
    const v = await runCli(["eval", "--adapter", out, "--data", data, "--split", "validation", "--threads", "1"]);
    assert.equal(v.code, 0, v.stderr);
    assert.match(v.stdout, new RegExp(`accuracy ${metrics.validation!.accuracy!.toFixed(4)}`));
  });

  test("an existing run is never overwritten by accident; --overwrite replaces it; --resume continues it", async () => {
    const out = join(root, "resume-run");
    // a constant learning rate, so that a run stopped by --max-steps and resumed without it takes the
    // steps of a straight run (with a decaying schedule --max-steps is the schedule's length)
    const constant = ["--schedule", "constant", "--warmup-ratio", "0"];
    const first = await runCli(TRAIN_ARGS(out, ["--max-steps", "5", "--no-plot", ...constant]));
    assert.equal(first.code, 0, first.stderr);
    assert.equal(readJson<TrainMetrics>(join(out, RUN_FILES.metrics)).steps, 5);
    const again = await runCli(TRAIN_ARGS(out, ["--no-plot", ...constant]));
    assert.equal(again.code, 1);
    assert.match(again.stderr, /error \[PEFT_ERR_CONFIG\]: peft train: '--out': .*already holds a run .*--resume.*--overwrite/);
    const changed = await runCli(TRAIN_ARGS(out, ["--resume", "--lr", "0.5", "--no-plot", ...constant]));
    assert.equal(changed.code, 1);
    assert.match(changed.stderr, /'--resume': the options differ .*lr: 0\.02 → 0\.5/);
    const resumed = await runCli(TRAIN_ARGS(out, ["--resume", "--no-plot", ...constant]));
    assert.equal(resumed.code, 0, resumed.stderr);
    assert.match(resumed.stderr, /resuming at step 5/);
    const total = 3 * Math.ceil(72 / 8);
    assert.equal(readJson<TrainMetrics>(join(out, RUN_FILES.metrics)).steps, total);
    const hist = readJson<{ steps: { step: number }[] }>(join(out, RUN_FILES.history));
    assert.deepEqual(
      hist.steps.map((s) => s.step),
      Array.from({ length: total }, (_, i) => i + 1),
    );
    // a straight run of the same options ends with the same adapter as the interrupted + resumed one
    const straight = join(root, "straight-run");
    assert.equal((await runCli(TRAIN_ARGS(straight, ["--no-plot", ...constant]))).code, 0);
    const a = PeftModel.fromPretrained(loadModel(bert), out).adapter("default").tensors;
    const b = PeftModel.fromPretrained(loadModel(bert), straight).adapter("default").tensors;
    let worst = 0;
    for (const [k, t] of a) worst = Math.max(worst, maxAbsDiff(t, b.get(k)!));
    assert.ok(worst <= 1e-6, `resumed adapter differs from the straight run by ${worst}`);
    const over = await runCli(TRAIN_ARGS(out, ["--overwrite", "--max-steps", "2", "--no-plot"]));
    assert.equal(over.code, 0, over.stderr);
    assert.equal(readJson<TrainMetrics>(join(out, RUN_FILES.metrics)).steps, 2);
  });

  test("--init pissa: the run writes a PiSSA adapter (init_lora_weights 'pissa') that reloads onto the original base", async () => {
    const out = join(root, "pissa-run");
    const r = await runCli(TRAIN_ARGS(out, ["--init", "pissa_niter_2", "--max-steps", "2", "--no-plot"]));
    assert.equal(r.code, 0, r.stderr);
    const adapterCfg = readJson<Record<string, unknown>>(join(out, RUN_FILES.adapterConfig));
    assert.equal(adapterCfg.init_lora_weights, "pissa_niter_2");
    const pm = PeftModel.fromPretrained(loadModel(bert), out);
    const k = pm.info.linearModules.find((m) => m.name.endsWith("query"))!.name;
    assert.notDeepEqual(pm.baseWeights.get(`${k}.weight`), pm.base.weights.get(`${k}.weight`), "loading runs the initialisation on the base again");
    await pm.dispose();
  });

  test("--max-steps is transformers' max_steps: it overrides --epochs and the learning-rate schedule spans it", async () => {
    // 72 training examples at batch 8: 9 steps per epoch; --epochs 1 alone would stop at 9
    const out = join(root, "max-steps-run");
    const r = await runCli(TRAIN_ARGS(out, ["--epochs", "1", "--max-steps", "12", "--warmup-ratio", "0.25", "--no-plot"]));
    assert.equal(r.code, 0, r.stderr);
    assert.equal(readJson<TrainMetrics>(join(out, RUN_FILES.metrics)).steps, 12, "runs 12 steps, past the one epoch");
    const lrs = readJson<{ steps: { step: number; lr: number }[] }>(join(out, RUN_FILES.history)).steps.map((s) => s.lr);
    assert.equal(lrs.length, 12);
    // linear warm-up over ceil(0.25 · 12) = 3 steps, then linear decay to 0 at step 12 (transformers' get_linear_schedule_with_warmup)
    const expected = Array.from({ length: 12 }, (_, i) => 0.02 * (i < 3 ? i / 3 : (12 - i) / 9));
    for (let i = 0; i < 12; i++) assert.ok(Math.abs(lrs[i]! - expected[i]!) < 1e-12, `step ${i + 1}: lr ${lrs[i]} vs ${expected[i]}`);
  });

  test("--method adalora: total_step is the run's steps, the rank allocator prunes, the adapter carries rank_pattern", async () => {
    const out = join(root, "adalora-run");
    const r = await runCli(TRAIN_ARGS(out, ["--method", "adalora", "--max-steps", "3", "--no-plot"]));
    assert.equal(r.code, 0, r.stderr);
    const cfg = readJson<Record<string, unknown>>(join(out, RUN_FILES.adapterConfig));
    assert.equal(cfg.peft_type, "ADALORA");
    assert.equal(cfg.total_step, 3);
    assert.equal(cfg.init_r, 6);
    assert.equal(cfg.target_r, 4);
    assert.ok(cfg.rank_pattern && Object.keys(cfg.rank_pattern).length > 0, "rank_pattern written");
    const pm = PeftModel.fromPretrained(loadModel(bert), out);
    assert.equal(pm.adapter("default").tuner.peftType, "ADALORA");
    await pm.dispose();
  });

  test("--method vera --adapter-config save_projection=false: the adapter is saved without the projections and reloads (regenerated from projection_prng_key)", async () => {
    const out = join(root, "vera-noproj-run");
    const r = await runCli(TRAIN_ARGS(out, ["--method", "vera", "--r", "4", "--adapter-config", "save_projection=false", "--max-steps", "2", "--no-plot"]));
    assert.equal(r.code, 0, r.stderr);
    const cfg = readJson<Record<string, unknown>>(join(out, RUN_FILES.adapterConfig));
    assert.deepEqual([cfg.peft_type, cfg.save_projection, cfg.projection_prng_key], ["VERA", false, 0]);
    const saved = loadSafetensors(join(out, RUN_FILES.adapterWeights)).tensors;
    assert.ok(!saved.has("base_model.vera_A") && [...saved.keys()].some((k) => k.endsWith("vera_lambda_b")), [...saved.keys()].join(", "));
    const pm = PeftModel.fromPretrained(loadModel(bert), out);
    assert.deepEqual(pm.adapter("default").tensors.get("base_model.vera_A")!.shape, [4, 32]);
    await pm.dispose();
  });

  test("bad arguments give clear errors", async () => {
    const out = join(root, "never-written");
    const cases: [string[], RegExp][] = [
      [["--r", "0"], /option '--r <n>' argument '0' is invalid\. expected a positive integer/],
      [["--lr", "fast"], /option '--lr <x>' argument 'fast' is invalid\. expected a positive number/],
      [["--dropout", "1.5"], /option '--dropout <p>' argument '1\.5' is invalid\. expected a number in \[0, 1\)/],
      [["--method", "prefix"], /option '--method <method>' argument 'prefix' is invalid\. Allowed choices are lora, ia3/],
      [["--target", "query,,value"], /'--target <modules>' argument 'query,,value' is invalid\. expected 'all-linear' or comma-separated module names/],
      [["--split", "0.5,0.2"], /\[PEFT_ERR_CONFIG\]: peft train: '--split': the fractions must add up to 1, got 0\.7/],
      [["--target", "no_such_module"], /\[PEFT_ERR_CONFIG\].*no_such_module/],
      [["--max-length", "1000"], /\[PEFT_ERR_CONFIG\]: peft train: '--max-length': 1000 is longer than the model's 64 positions/],
      [["--resume", "--overwrite"], /'--resume': cannot be combined with --overwrite/],
      [["--feedforward", "intermediate.dense"], /'--feedforward': does not apply to --method lora/],
      [["--init", "eva"], /'--init': 'eva': expected pissa, pissa_niter_K \(K ≥ 1\) or olora/],
      [["--method", "ia3", "--init", "pissa"], /'--init': applies to --method lora, not ia3/],
    ];
    for (const [extra, re] of cases) {
      const r = await runCli(TRAIN_ARGS(out, extra));
      assert.equal(r.code, 1, `${extra.join(" ")}: exit ${r.code}`);
      assert.match(r.stderr, re, `${extra.join(" ")}: ${r.stderr}`);
    }
    const noData = await runCli(["train", "--model", bert, "--data", "imdb-typo", "--out", out]);
    assert.match(noData.stderr, /\[PEFT_ERR_UNKNOWN_DATASET\].*imdb-typo/);
    const noModel = await runCli(["train", "--model", join(root, "nope"), "--data", data, "--out", out]);
    assert.match(noModel.stderr, /\[PEFT_ERR_MISSING_FILE\].*nope: file not found; --model takes 'use-lite' or a model folder/);
    const missing = await runCli(["train", "--model", bert, "--data", data]);
    assert.match(missing.stderr, /required option '-o, --out <dir>' not specified/);
    assert.ok(!existsSync(out), "no failed call created the output folder");
    const badEval = await runCli(["eval", "--adapter", join(root, "nope"), "--data", data]);
    assert.match(badEval.stderr, /\[PEFT_ERR_MISSING_FILE\].*adapter_config\.json: file not found; --adapter takes a PEFT adapter folder/);
  });

  test("a dataset with another label count trains a new head; (IA)³ and a causal LM (loss / perplexity) train too", async () => {
    const two = join(root, "two-labels");
    const r = await runCli(TRAIN_ARGS(two, ["--data", data2, "--epochs", "1", "--no-plot"]));
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /classifier: the model's head has 3 labels, the data 2; training a new 2-label head/);
    // as with transformers' num_labels=2, the base is opened with a 2-label head for the adapter to fit
    assert.throws(() => PeftModel.fromPretrained(loadModel(bert), two), /classifier\.(weight|bias)/);
    const base2 = openModelSource(bert, { numLabels: 2, seed: 3 }).model;
    const w = PeftModel.fromPretrained(base2, two).adapter("default").tensors.get("classifier.weight")!;
    assert.deepEqual(w.shape, [2, 32]);

    const ia3 = join(root, "ia3");
    const i = await runCli(TRAIN_ARGS(ia3, ["--method", "ia3", "--target", "key,value,output.dense", "--feedforward", "output.dense", "--epochs", "1", "--no-plot"]));
    assert.equal(i.code, 0, i.stderr);
    assert.equal(readJson<Record<string, unknown>>(join(ia3, RUN_FILES.adapterConfig)).peft_type, "IA3");

    const lm = join(root, "lm");
    const l = await runCli(["train", "--model", gpt2, "--data", data, "--out", lm, "--epochs", "1", "--batch-size", "8", "--lr", "0.01", "--threads", "1", "--no-progress", "--no-plot", "--json"]);
    assert.equal(l.code, 0, l.stderr);
    const m = JSON.parse(l.stdout) as TrainMetrics;
    assert.equal(m.task, "causal-lm");
    assert.ok(m.test!.perplexity! > 1 && Math.abs(Math.log(m.test!.perplexity!) - m.test!.loss) < 1e-6);
    assert.equal(m.test!.accuracy, undefined);
    const e = await runCli(["eval", "--adapter", lm, "--data", data, "--json", "--threads", "1"]);
    assert.equal(e.code, 0, e.stderr);
    const rep = JSON.parse(e.stdout) as { loss: number; perplexity: number };
    assert.ok(Math.abs(rep.loss - m.test!.loss) < 1e-5, `${rep.loss} vs ${m.test!.loss}`);
  });
});
