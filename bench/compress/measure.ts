/**
 * The measurements in docs/compression.md, on USE-lite + a LoRA adapter for uci-yelp sentiment:
 *
 *     node dist/bench/compress/measure.js compeft  [--out runs/compression]
 *     node dist/bench/compress/measure.js qlora    [--out runs/compression]
 *     node dist/bench/compress/measure.js optim8bit [--out runs/compression]
 *
 * Each part writes `<out>/<part>.json` and prints Markdown tables. Runs use 2 threads and take a
 * few minutes each on 2 cores. `qlora-probe time|memory …` are the child processes the qlora part
 * spawns to time the training graphs side by side and to read each one's memory alone.
 */
import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import * as ort from "onnxruntime-node";
import { grad } from "../../src/graph/autodiff.js";
import { toOnnx } from "../../src/graph/onnx.js";
import { saveSafetensors } from "../../src/io/safetensors.js";
import type { LoadedModel } from "../../src/models/load.js";
import { PeftModel } from "../../src/peft/peft-model.js";
import { toOrtTensor } from "../../src/runtime/session.js";
import { floatToHalf, numel, toFloat32, type Tensor } from "../../src/tensor.js";
import { taskLoss } from "../../src/train/loss.js";
import { Trainer, collate, type TokenizedExample } from "../../src/train/trainer.js";
import { adapterFromCompeft, compeftAdapter } from "../../src/compress/compeft/adapter.js";
import { compeftStats } from "../../src/compress/compeft/compeft.js";
import { encodeCompeft } from "../../src/compress/compeft/format.js";
import { readAdapterDir, writeAdapterDir } from "../../src/io/peft-files.js";
import { modelSizeReport, quantizeModel } from "../../src/compress/quant/quantized-model.js";
import type { QuantScheme } from "../../src/compress/quant/quantize.js";
import { AdamW8bit } from "../../src/train/optim/adamw8bit.js";
import { accuracyOf, loadSentimentTask, median, sentimentBase, trainLoop, type SentimentTask } from "./sentiment-task.js";

const SEED = 0;
const TRAIN = { epochs: 5, batchSize: 16, lr: 2e-3 } as const;
const SESSION = { threads: 2 } as const;
const ADAPTERS = {
  "lora-qv-r8": { peft_type: "LORA", task_type: "SEQ_CLS", r: 8, lora_alpha: 16, lora_dropout: 0, target_modules: ["query", "value"] },
  "lora-all-r8": { peft_type: "LORA", task_type: "SEQ_CLS", r: 8, lora_alpha: 16, lora_dropout: 0, target_modules: "all-linear" },
} as const;
type AdapterName = keyof typeof ADAPTERS;
const DENSITIES = [0.05, 0.1, 0.2, 0.5];
const ALPHAS = [0.5, 1, 2, 3, 5, 8, 12, 16];
const QUANTS: Record<string, QuantScheme | null> = { none: null, int8: { kind: "int8", blockSize: 64 }, nf4: { kind: "nf4", blockSize: 64, doubleQuant: true } };

const log = (s: string) => process.stderr.write(`${s}\n`);
const pct = (x: number) => `${(100 * x).toFixed(1)} %`;
const kb = (b: number) => `${(b / 1024).toFixed(1)} KiB`;

async function trainWithTrainer(model: LoadedModel, name: AdapterName, task: SentimentTask) {
  const pm = PeftModel.create(model, ADAPTERS[name], "default", { seed: SEED });
  const trainer = new Trainer(pm, { task: "seq-cls", ...TRAIN, seed: SEED, session: SESSION }, task.train, task.validation);
  const r = await trainer.fit({ onEval: (e) => log(`  ${name} step ${e.step}: validation accuracy ${e.accuracy?.toFixed(3)}`) });
  const stepSeconds = median(r.history.steps.map((s) => TRAIN.batchSize / s.examplesPerSecond));
  return { pm, seconds: r.seconds, steps: r.steps, stepSeconds };
}

async function accuracyWith(model: LoadedModel, adapterDir: string, examples: readonly TokenizedExample[]): Promise<number> {
  const pm = PeftModel.fromPretrained(model, adapterDir);
  pm.sessionOptions = SESSION;
  try {
    return await accuracyOf(pm, examples);
  } finally {
    await pm.dispose();
  }
}

/** Part (a): ComPEFT on trained adapters. */
async function measureCompeft(out: string): Promise<unknown> {
  const base = sentimentBase(2, SEED);
  const task = loadSentimentTask(base.tokenizer);
  const tmp = mkdtempSync(join(tmpdir(), "compeft-measure-"));
  const results = [];
  try {
    for (const name of Object.keys(ADAPTERS) as AdapterName[]) {
      log(`training ${name}`);
      const { pm } = await trainWithTrainer(base, name, task);
      const dir = join(out, "adapters", name);
      pm.savePretrained(dir);
      await pm.dispose();
      const a = readAdapterDir(dir);
      const fp32Bytes = statSync(a.weightsFile).size;
      const half = new Map<string, Tensor>([...a.weights].map(([k, t]) => [k, { dtype: "float16", shape: t.shape, data: Uint16Array.from(toFloat32(t), floatToHalf) } as Tensor]));
      saveSafetensors(join(tmp, "fp16.safetensors"), half, a.weightsMetadata);
      const fp16Bytes = statSync(join(tmp, "fp16.safetensors")).size;
      const original = { validation: await accuracyWith(base, dir, task.validation), test: await accuracyWith(base, dir, task.test) };
      // reference: the trained head alone (every lora_B zero, so the LoRA update is 0)
      const headDir = join(tmp, "head-only");
      writeAdapterDir(headDir, a.configRaw, new Map([...a.weights].map(([k, t]) => [k, k.includes(".lora_B.") ? { ...t, data: new Float32Array(t.data.length) } : t])), a.weightsMetadata);
      const headOnly = { validation: await accuracyWith(base, headDir, task.validation), test: await accuracyWith(base, headDir, task.test) };
      log(`  ${name}: fp32 ${fp32Bytes} B, fp16 ${fp16Bytes} B, accuracy ${JSON.stringify(original)}`);
      const rows = [];
      for (const density of DENSITIES) {
        const byAlpha: { alpha: number; validation: number }[] = [];
        let bytes = 0;
        let parts = { header: 0, sparse: 0, dense: 0 };
        const evalAlpha = async (alpha: number, examples: readonly TokenizedExample[]) => {
          const c = compeftAdapter({ configRaw: a.configRaw, weights: a.weights, weightsMetadata: a.weightsMetadata }, { density, alpha });
          const enc = encodeCompeft(c);
          bytes = enc.length;
          const header = 16 + new DataView(enc.buffer, enc.byteOffset).getUint32(12, true);
          const dense = (c.dense ?? []).reduce((s, d) => s + d.tensor.data.byteLength, 0);
          parts = { header, sparse: enc.length - header - dense, dense };
          const back = adapterFromCompeft(c);
          const d = join(tmp, `d${density}-a${alpha}`);
          writeAdapterDir(d, back.configRaw, back.weights, back.weightsMetadata);
          const keptB = c.tensors.filter((t) => t.name.includes(".lora_B.")).reduce((n, t) => n + t.positions.length, 0);
          return { acc: await accuracyWith(base, d, examples), stats: compeftStats(c), keptB };
        };
        for (const alpha of ALPHAS) byAlpha.push({ alpha, validation: (await evalAlpha(alpha, task.validation)).acc });
        const best = byAlpha.reduce((p, q) => (q.validation > p.validation ? q : p));
        const tuned = await evalAlpha(best.alpha, task.test);
        const alpha1 = await evalAlpha(1, task.test);
        rows.push({ density, bytes, parts, kept: tuned.stats.kept, keptB: tuned.keptB, params: tuned.stats.params, byAlpha, bestAlpha: best.alpha, validation: best.validation, test: tuned.acc, testAlpha1: alpha1.acc });
        log(`  density ${density}: ${bytes} B, best alpha ${best.alpha} (validation ${best.validation.toFixed(3)}), test ${tuned.acc.toFixed(3)} (alpha 1: ${alpha1.acc.toFixed(3)})`);
      }
      const sparseParams = rows[0]!.params;
      results.push({ adapter: name, config: ADAPTERS[name], fp32Bytes, fp16Bytes, loraParams: sparseParams, headParams: [...a.weights.values()].reduce((s, t) => s + numel(t.shape), 0) - sparseParams, original, headOnly, rows });
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  const lines = [
    "| adapter | storage | bytes (header + LoRA + head) | vs fp32 | kept in lora_B | α (val-tuned) | val acc | test acc | test acc (α = 1) |",
    "|---|---|---:|---:|---:|---:|---:|---:|---:|",
  ];
  for (const r of results) {
    lines.push(`| ${r.adapter} | fp32 safetensors | ${r.fp32Bytes} | 1.00× | — | — | ${pct(r.original.validation)} | ${pct(r.original.test)} | — |`);
    lines.push(`| ${r.adapter} | fp16 safetensors | ${r.fp16Bytes} | ${(r.fp32Bytes / r.fp16Bytes).toFixed(2)}× | — | — | — | — | — |`);
    lines.push(`| ${r.adapter} | head only (LoRA dropped) | — | — | — | — | ${pct(r.headOnly.validation)} | ${pct(r.headOnly.test)} | — |`);
    for (const row of r.rows) {
      const p = row.parts;
      lines.push(
        `| ${r.adapter} | ComPEFT d = ${row.density} | ${row.bytes} (${p.header} + ${p.sparse} + ${p.dense}) | ${(r.fp32Bytes / row.bytes).toFixed(1)}× | ${pct(row.keptB / row.kept)} | ${row.bestAlpha} | ${pct(row.validation)} | ${pct(row.test)} | ${pct(row.testAlpha1)} |`,
      );
    }
  }
  console.log(lines.join("\n"));
  return results;
}

/** The training graph of `pm` (as `TrainStep` builds it), for timing outside the Trainer. */
function trainingGraphBytes(pm: PeftModel): { bytes: Uint8Array; names: string[]; initial: Map<string, Tensor> } {
  const built = pm.buildGraph({ training: true, dropout: false, seed: SEED });
  const g = built.graph;
  const labels = g.input("labels", "int64", ["batch"]);
  const loss = taskLoss("seq-cls", built.outputs.logits, labels, 0);
  g.output(loss, "loss");
  const names = [...built.trainable.keys()];
  grad(loss, names.map((n) => g.inputs.find((v) => v.name === n)!)).forEach((gv, i) => g.output(gv, `grad::${names[i]}`));
  return { bytes: toOnnx(g), names, initial: built.trainable };
}

/** A training session for the LoRA adapter on the `quant` base; `keep` stops ORT from folding the dequantisation. */
async function probeSession(base: LoadedModel, quant: string, mode: string) {
  const scheme = QUANTS[quant] ?? null;
  const pm = PeftModel.create(scheme ? quantizeModel(base, scheme) : base, ADAPTERS["lora-qv-r8"], "default", { seed: SEED });
  const { bytes, names, initial } = trainingGraphBytes(pm);
  const extra: Record<string, Record<string, unknown>> = { session: { intra_op: { allow_spinning: "0" } } };
  // ONNX Runtime folds constant subgraphs up to 1 GiB at session creation; a small limit keeps
  // the dequantisation in the graph (the weights stay quantised in memory)
  if (mode === "keep") extra.optimization = { constant_folding_max_output_size_in_bytes: "16384" };
  const session = await ort.InferenceSession.create(bytes, { executionProviders: ["cpu"], graphOptimizationLevel: "all", intraOpNumThreads: 2, logSeverityLevel: 3, extra });
  const run = async (examples: readonly TokenizedExample[]) => {
    const batch = collate(examples, "seq-cls");
    const feeds: Record<string, ort.Tensor> = { input_ids: toOrtTensor(batch.inputIds), attention_mask: toOrtTensor(batch.attentionMask), labels: toOrtTensor(batch.labels) };
    for (const n of names) feeds[n] = toOrtTensor(initial.get(n)!);
    const t0 = performance.now();
    await session.run(feeds);
    return (performance.now() - t0) / 1000;
  };
  return { session, run, onnxBytes: bytes.length };
}

/**
 * Child processes of the qlora part. `time <mode>`: the fp32, int8 and NF4 sessions in one
 * process, stepped in turn (so load on the machine affects all three alike); median step time.
 * `memory <quant> <mode>`: one session alone, its process's resident memory after 3 steps.
 */
async function probe(kind: string, args: readonly string[]): Promise<void> {
  const base = sentimentBase(2, SEED);
  const task = loadSentimentTask(base.tokenizer);
  const batches = Array.from({ length: 30 }, (_, s) => task.train.slice((s * 16) % 560, ((s * 16) % 560) + 16));
  if (kind === "memory") {
    const [quant = "none", mode = "fold"] = args;
    const p = await probeSession(base, quant, mode);
    for (const b of batches.slice(0, 3)) await p.run(b);
    console.log(JSON.stringify({ quant, mode, rssMiB: process.memoryUsage().rss / 2 ** 20, onnxBytes: p.onnxBytes }));
    await p.session.release();
    return;
  }
  const mode = args[0] ?? "fold";
  const probes = await Promise.all(Object.keys(QUANTS).map(async (q) => ({ q, p: await probeSession(base, q, mode) })));
  const times = new Map<string, number[]>(probes.map(({ q }) => [q, []]));
  for (const [s, b] of batches.entries()) {
    for (const { q, p } of probes) {
      const t = await p.run(b);
      if (s >= 5) times.get(q)!.push(t);
    }
  }
  for (const { p } of probes) await p.session.release();
  console.log(JSON.stringify(Object.fromEntries([...times].map(([q, t]) => [q, median(t)]))));
}

function child<T>(...args: string[]): T {
  const out = execFileSync(process.execPath, [fileURLToPath(import.meta.url), "qlora-probe", ...args], { encoding: "utf8", maxBuffer: 1 << 20 });
  return JSON.parse(out.trim().split("\n").at(-1)!) as T;
}

/** Part (b): LoRA on an int8 / NF4 base against the float32 base. */
async function measureQlora(): Promise<unknown> {
  const base = sentimentBase(2, SEED);
  const task = loadSentimentTask(base.tokenizer);
  const results = [];
  const linearParams = modelSizeReport(quantizeModel(base, { kind: "int8" })).quantizedParams;
  for (const [quant, scheme] of Object.entries(QUANTS)) {
    const model = scheme ? quantizeModel(base, scheme) : base;
    const size = modelSizeReport(model);
    log(`training lora-qv-r8 on the ${quant} base`);
    const t = await trainWithTrainer(model, "lora-qv-r8", task);
    t.pm.sessionOptions = SESSION;
    const validation = await accuracyOf(t.pm, task.validation);
    const test = await accuracyOf(t.pm, task.test);
    await t.pm.dispose();
    const memory = (["fold", "keep"] as const).map((mode) => child<{ rssMiB: number; onnxBytes: number }>("memory", quant, mode));
    results.push({ quant, scheme, size, trainerStepSeconds: t.stepSeconds, validation, test, memory });
    log(`  ${quant}: ${JSON.stringify(results.at(-1))}`);
  }
  const steps = { fold: child<Record<string, number>>("time", "fold"), keep: child<Record<string, number>>("time", "keep") };
  const lines = [
    "| base | linear weights | all parameters | training graph (ONNX) | step, folded | step, kept quantised | process RSS folded / kept | val acc | test acc |",
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
  ];
  for (const r of results) {
    const [f, k] = r.memory;
    const lin = kb(r.quant === "none" ? 4 * linearParams : r.size.quantizedBytes);
    const ms = (x: number | undefined) => `${(1000 * (x ?? NaN)).toFixed(0)} ms`;
    lines.push(
      `| ${r.quant === "none" ? "fp32" : r.quant} | ${lin} | ${kb(r.size.totalBytes)} | ${kb(f!.onnxBytes)} | ${ms(steps.fold[r.quant])} | ${ms(steps.keep[r.quant])} | ${f!.rssMiB.toFixed(0)} / ${k!.rssMiB.toFixed(0)} MiB | ${pct(r.validation)} | ${pct(r.test)} |`,
    );
  }
  console.log(lines.join("\n"));
  return { results, stepSeconds: steps };
}

/** Part (c): AdamW8bit against AdamW, same loop and batches. */
async function measureOptim8bit(): Promise<unknown> {
  const base = sentimentBase(2, SEED);
  const task = loadSentimentTask(base.tokenizer);
  const results = [];
  for (const name of Object.keys(ADAPTERS) as AdapterName[]) {
    for (const optimizer of ["adamw", "adamw8bit"] as const) {
      log(`training ${name} with ${optimizer}`);
      const pm = PeftModel.create(base, ADAPTERS[name], "default", { seed: SEED });
      pm.sessionOptions = SESSION;
      const r = await trainLoop(pm, task.train, { ...TRAIN, seed: SEED, optimizer, session: SESSION });
      const st = r.optimizer.stateDict();
      let stateBytes = 0;
      for (const t of st.tensors.values()) stateBytes += t.byteLength;
      const memory = r.optimizer instanceof AdamW8bit ? r.optimizer.stateBytes() : { total: stateBytes, adamW32: stateBytes };
      const validation = await accuracyOf(pm, task.validation);
      const test = await accuracyOf(pm, task.test);
      await pm.dispose();
      results.push({ adapter: name, optimizer, params: r.optimizer.params.reduce((s, p) => s + p.data.length, 0), stateBytes: memory.total, adamW32Bytes: memory.adamW32, checkpointStateBytes: stateBytes, optimizerStepSeconds: median(r.optimizerSeconds), runStepSeconds: median(r.runSeconds), finalLoss: r.finalLoss, validation, test });
      log(`  ${JSON.stringify(results.at(-1))}`);
    }
  }
  const lines = ["| adapter | optimizer | trainable params | optimizer state | vs 32-bit | optimizer step | final train loss | val acc | test acc |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"];
  for (const r of results) {
    lines.push(`| ${r.adapter} | ${r.optimizer} | ${r.params} | ${kb(r.stateBytes)} | ${(r.adamW32Bytes / r.stateBytes).toFixed(2)}× smaller | ${(1000 * r.optimizerStepSeconds).toFixed(1)} ms | ${r.finalLoss.toFixed(4)} | ${pct(r.validation)} | ${pct(r.test)} |`);
  }
  console.log(lines.join("\n"));
  return results;
}

async function main(argv: readonly string[]): Promise<void> {
  const [part, ...rest] = argv;
  if (part === "qlora-probe") return probe(rest[0] ?? "time", rest.slice(1));
  const outIdx = rest.indexOf("--out");
  const out = outIdx >= 0 ? rest[outIdx + 1]! : "runs/compression";
  mkdirSync(out, { recursive: true });
  const parts: Record<string, (o: string) => Promise<unknown>> = { compeft: measureCompeft, qlora: measureQlora, optim8bit: measureOptim8bit };
  const run = parts[part ?? ""];
  if (!run) {
    process.stderr.write(`usage: measure.js <${Object.keys(parts).join("|")}> [--out dir]\n`);
    process.exitCode = 2;
    return;
  }
  const t0 = performance.now();
  const results = await run(out);
  const file = join(out, `${part}.json`);
  writeFileSync(file, JSON.stringify({ part, seconds: (performance.now() - t0) / 1000, node: process.version, results }, null, 2));
  log(`wrote ${file} (${((performance.now() - t0) / 1000).toFixed(0)} s)`);
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) await main(process.argv.slice(2));
