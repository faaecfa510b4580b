/**
 * The aTLAS experiment on USE-lite (results in docs/atlas.md). Run after building:
 *
 *     npx tsc -p tsconfig.json --outDir dist-atlas --tsBuildInfoFile dist-atlas/.tsbuildinfo
 *     node dist-atlas/bench/atlas/experiment.js --out runs/atlas [--threads 2] [--stages all]
 *
 * Stages (each result is stored in <out>/results.json as soon as it is done, and a stage whose
 * result is there is skipped, so an interrupted run resumes): `finetune` (LoRA per task, adapters
 * in <out>/adapters/<task>), `multitask` (zero-shot, fine-tuned, task arithmetic, TIES, PCB, aTLAS
 * isotropic / anisotropic / anisotropic on 25 % of the blocks), `fewshot` (aTLAS vs LoRA, k = 1, 4,
 * 16 per class), `tta` (entropy minimisation on unlabelled test data). `--report` prints the
 * markdown tables from results.json.
 */
import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { Command } from "commander";
import { AtlasComposer, type AtlasTaskData } from "../../src/compose/atlas/composer.js";
import { type AtlasTaskVector, atlasTaskVectorFromLoraDir } from "../../src/compose/atlas/task-vectors.js";
import { mergeTaskTensors } from "../../src/compose/methods.js";
import { writeFileAtomic } from "../../src/io/atomic.js";
import { saveAdapterDir } from "../../src/peft/adapter-io.js";
import { PeftModel } from "../../src/peft/peft-model.js";
import { tensor } from "../../src/tensor.js";
import { Trainer } from "../../src/train/trainer.js";
import type { UseLiteModel } from "../../src/models/use-lite/convert.js";
import { formatReport } from "./report.js";
import { MAX_TOKENS, SPLIT_SEED, type Task, type TaskName, kShot, loadBase, loadTasks, modelWithHead } from "./tasks.js";

export const HYPER = {
  lora: { r: 8, alpha: 16, targets: ["query", "key", "value", "dense"], epochs: 3, batchSize: 32, lr: 2e-3, seed: 0 },
  merge: { taGrid: [0.2, 0.4, 0.6, 0.8, 1.0], tiesDensity: 0.2, pcbRatio: 0.1, scaledGrid: [0.6, 0.8, 1.0, 1.2, 1.4] },
  atlasMultitask: { epochs: 3, batchSize: 16, lr: 0.05, weightDecay: 0.1, seed: 0, selectKeep: 0.25 },
  fewshot: { ks: [1, 4, 16], seeds: [0, 1], steps: 25, atlasLr: 0.1, loraLr: 2e-3, maxBatch: 32 },
  tta: { epochs: 2, batchSize: 32, lr: 0.02, seed: 0 },
} as const;

type Results = Record<string, unknown>;

function log(msg: string): void {
  process.stderr.write(`[atlas ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
}

const loraConfig = () => ({
  peft_type: "LORA",
  r: HYPER.lora.r,
  lora_alpha: HYPER.lora.alpha,
  lora_dropout: 0,
  target_modules: [...HYPER.lora.targets],
  init_lora_weights: true,
});

interface Ctx {
  readonly m: UseLiteModel;
  readonly tasks: Task[];
  readonly out: string;
  readonly threads: number;
  readonly results: Results;
  save(): void;
}

function taskData(t: Task, split: "train" | "val" | "test"): AtlasTaskData {
  return { name: t.name, examples: t[split], head: t.head };
}

/** Test (or val) accuracy of every task with the composer's current λ, heads fed per task. */
async function evalAll(c: AtlasComposer, tasks: readonly Task[], split: "val" | "test"): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const t of tasks) out[t.name] = (await c.evaluate(t[split], { head: t.head })).accuracy;
  return out;
}

function summary(acc: Record<string, number>, ft: Record<string, number> | null): { perTask: Record<string, number>; avg: number; normAvg: number | null } {
  const names = Object.keys(acc);
  const avg = names.reduce((s, n) => s + acc[n]!, 0) / names.length;
  const normAvg = ft ? names.reduce((s, n) => s + acc[n]! / ft[n]!, 0) / names.length : null;
  return { perTask: acc, avg, normAvg };
}

async function stageFinetune(ctx: Ctx): Promise<void> {
  const res: Record<string, unknown> = {};
  for (const t of ctx.tasks) {
    const dir = join(ctx.out, "adapters", t.name);
    const pm = PeftModel.create(modelWithHead(ctx.m, t.head), loraConfig(), t.name, { seed: HYPER.lora.seed });
    const h = HYPER.lora;
    const trainer = new Trainer(pm, { task: "seq-cls", epochs: h.epochs, batchSize: h.batchSize, lr: h.lr, seed: h.seed, dropout: false, maxLength: MAX_TOKENS, session: { threads: ctx.threads } }, t.train, t.val);
    const r = await trainer.fit();
    saveAdapterDir(dir, pm.adapter(t.name));
    res[t.name] = { seconds: r.seconds, steps: r.steps, val: r.history.evals.map((e) => e.accuracy) };
    log(`finetune ${t.name}: ${r.steps} steps in ${r.seconds.toFixed(0)} s, val ${r.history.evals.map((e) => e.accuracy!.toFixed(3)).join(" ")}`);
    await pm.dispose();
  }
  ctx.results.finetune = res;
  ctx.save();
}

function taskVectors(ctx: Ctx, names: readonly TaskName[]): AtlasTaskVector[] {
  const base = modelWithHead(ctx.m, 3);
  return names.map((n) => atlasTaskVectorFromLoraDir(n, join(ctx.out, "adapters", n), base, { include: /^(?!classifier\.)/ }));
}

/** One task vector made by a merge method over the four (λ = 1). */
function mergedVector(name: string, tvs: readonly AtlasTaskVector[], method: string, perModel: Record<string, number>, params: Record<string, number>): AtlasTaskVector {
  const blocks = new Map<string, Float32Array>();
  for (const k of tvs[0]!.blocks.keys()) {
    const taus = tvs.map((tv) => tensor("float32", [tv.blocks.get(k)!.length], tv.blocks.get(k)!));
    blocks.set(k, mergeTaskTensors(method, taus, { perModel: taus.map(() => perModel), params, key: k }).data);
  }
  return { name, ref: { kind: "memory" }, blocks };
}

async function stageMultitask(ctx: Ctx): Promise<void> {
  const names = ctx.tasks.map((t) => t.name);
  const tvs = taskVectors(ctx, names);
  const base = modelWithHead(ctx.m, 3);
  const fed = { fedParams: ["classifier.weight", "classifier.bias"], session: { threads: ctx.threads }, maxLength: MAX_TOKENS };
  const res: Record<string, unknown> = (ctx.results.multitask as Record<string, unknown>) ?? {};
  const done = (k: string) => k in res;
  const store = (k: string, v: unknown) => {
    res[k] = v;
    ctx.results.multitask = res;
    ctx.save();
  };
  // zero-shot and per-task fine-tuned accuracies (each task with its own task vector at λ = 1)
  if (!done("zeroshot") || !done("finetuned")) {
    const iso = AtlasComposer.create(base, tvs, { ...fed, mode: "isotropic" });
    const zs = await evalAll(iso, ctx.tasks, "test");
    const ft: Record<string, number> = {};
    for (let t = 0; t < tvs.length; t++) {
      iso.coefficients.fill(0);
      iso.coefficients[t] = 1;
      ft[names[t]!] = (await iso.evaluate(ctx.tasks[t]!.test, { head: ctx.tasks[t]!.head })).accuracy;
    }
    await iso.release();
    store("zeroshot", summary(zs, ft));
    store("finetuned", summary(ft, ft));
    log(`zero-shot ${JSON.stringify(zs)}; fine-tuned ${JSON.stringify(ft)}`);
  }
  const ft = (res.finetuned as { perTask: Record<string, number> }).perTask;
  // merging baselines: λ chosen on the validation sets (mean normalised accuracy), then test
  const baselines: [string, AtlasTaskVector, readonly number[]][] = [];
  if (!done("task_arithmetic")) baselines.push(["task_arithmetic", mergedVector("ta", tvs, "task_arithmetic", { weight: 1 }, {}), HYPER.merge.taGrid]);
  if (!done("ties")) baselines.push(["ties", mergedVector("ties", tvs, "ties", { weight: 1, density: HYPER.merge.tiesDensity }, {}), HYPER.merge.scaledGrid]);
  if (!done("pcb")) baselines.push(["pcb", mergedVector("pcb", tvs, "pcb", { weight: 1 }, { ratio: HYPER.merge.pcbRatio }), HYPER.merge.scaledGrid]);
  for (const [name, tv, grid] of baselines) {
    const t0 = performance.now();
    const c = AtlasComposer.create(base, [tv], { ...fed, mode: "isotropic" });
    let best = { lambda: grid[0]!, score: -1 };
    const sweep: Record<string, number> = {};
    for (const l of grid) {
      c.coefficients[0] = l;
      const s = summary(await evalAll(c, ctx.tasks, "val"), null).avg;
      sweep[String(l)] = s;
      if (s > best.score) best = { lambda: l, score: s };
    }
    c.coefficients[0] = best.lambda;
    const test = await evalAll(c, ctx.tasks, "test");
    await c.release();
    store(name, { ...summary(test, ft), lambda: best.lambda, valSweep: sweep, seconds: (performance.now() - t0) / 1000 });
    log(`${name}: λ=${best.lambda} test ${JSON.stringify(test)}`);
  }
  // aTLAS: λ learned on the validation sets (supervised, losses summed over tasks), best epoch on val
  for (const [name, mode, select] of [
    ["atlas_isotropic", "isotropic", false],
    ["atlas_anisotropic", "anisotropic", false],
    ["atlas_anisotropic_25pct_blocks", "anisotropic", true],
  ] as const) {
    if (done(name)) continue;
    const h = HYPER.atlasMultitask;
    const t0 = performance.now();
    const c = AtlasComposer.create(base, tvs, { ...fed, mode });
    const val = ctx.tasks.map((t) => taskData(t, "val"));
    let selection = null;
    if (select) selection = await c.selectBlocks({ criterion: "gradient", keep: h.selectKeep, data: val, batchSize: 32, batches: 2 });
    const r = await c.fit(val, { epochs: h.epochs, batchSize: h.batchSize, lr: h.lr, weightDecay: h.weightDecay, seed: h.seed, validation: val });
    const test = await evalAll(c, ctx.tasks, "test");
    const coef = Array.from(c.coefficients);
    await c.release();
    store(name, { ...summary(test, ft), steps: r.steps, bestEpoch: r.bestEpoch, val: r.validation.map((v) => v.accuracy), coefficients: coef, selection, seconds: (performance.now() - t0) / 1000 });
    log(`${name}: ${r.steps} steps, best epoch ${r.bestEpoch}, test ${JSON.stringify(test)} (${((performance.now() - t0) / 1000).toFixed(0)} s)`);
  }
}

async function stageFewshot(ctx: Ctx): Promise<void> {
  const res = (ctx.results.fewshot as Record<string, Record<string, { atlas: number[]; lora: number[]; zeroshot: number }>>) ?? {};
  const h = HYPER.fewshot;
  for (const target of ctx.tasks) {
    const pool = ctx.tasks.filter((t) => t.name !== target.name).map((t) => t.name);
    const tvs = taskVectors(ctx, pool);
    const model = modelWithHead(ctx.m, target.head);
    const byK = res[target.name] ?? {};
    for (const k of h.ks) {
      if (byK[String(k)]) continue;
      const entry = { atlas: [] as number[], lora: [] as number[], zeroshot: 0 };
      for (const seed of h.seeds) {
        const shots = kShot(target.train, k, target.labels.length, 100 + seed);
        const batch = Math.min(h.maxBatch, shots.length);
        const epochs = h.steps / Math.ceil(shots.length / batch);
        const c = AtlasComposer.create(model, tvs, { mode: "anisotropic", session: { threads: ctx.threads }, maxLength: MAX_TOKENS });
        if (seed === h.seeds[0]) entry.zeroshot = (await c.evaluate(target.test)).accuracy;
        await c.fit([{ name: target.name, examples: shots }], { epochs, batchSize: batch, lr: h.atlasLr, seed, maxSteps: h.steps });
        entry.atlas.push((await c.evaluate(target.test)).accuracy);
        await c.release();
        const pm = PeftModel.create(model, loraConfig(), "fewshot", { seed });
        const trainer = new Trainer(pm, { task: "seq-cls", epochs, batchSize: batch, lr: h.loraLr, seed, dropout: false, maxLength: MAX_TOKENS, maxSteps: h.steps, session: { threads: ctx.threads } }, shots);
        await trainer.fit();
        entry.lora.push((await trainer.evaluate(target.test)).accuracy!);
        await trainer.release();
        await pm.dispose();
        log(`fewshot ${target.name} k=${k} seed=${seed}: aTLAS ${entry.atlas.at(-1)!.toFixed(3)} LoRA ${entry.lora.at(-1)!.toFixed(3)} (zero-shot ${entry.zeroshot.toFixed(3)})`);
      }
      byK[String(k)] = entry;
      res[target.name] = byK;
      ctx.results.fewshot = res;
      ctx.save();
    }
  }
}

async function stageTta(ctx: Ctx): Promise<void> {
  const res = (ctx.results.tta as Record<string, unknown>) ?? {};
  const h = HYPER.tta;
  for (const target of ctx.tasks) {
    if (res[target.name]) continue;
    const pool = ctx.tasks.filter((t) => t.name !== target.name).map((t) => t.name);
    const c = AtlasComposer.create(modelWithHead(ctx.m, target.head), taskVectors(ctx, pool), { mode: "anisotropic", session: { threads: ctx.threads }, maxLength: MAX_TOKENS });
    const t0 = performance.now();
    const before = await c.evaluate(target.test);
    const unlabelled = target.test.map((e) => ({ ids: e.ids }));
    await c.fit([{ name: target.name, examples: unlabelled, objective: "entropy" }], { epochs: h.epochs, batchSize: h.batchSize, lr: h.lr, seed: h.seed });
    const after = await c.evaluate(target.test);
    await c.release();
    res[target.name] = { before: before.accuracy, after: after.accuracy, entropyBefore: before.entropy, entropyAfter: after.entropy, seconds: (performance.now() - t0) / 1000 };
    log(`tta ${target.name}: ${before.accuracy.toFixed(3)} → ${after.accuracy.toFixed(3)} (entropy ${before.entropy.toFixed(3)} → ${after.entropy.toFixed(3)})`);
    ctx.results.tta = res;
    ctx.save();
  }
}

const STAGES = { finetune: stageFinetune, multitask: stageMultitask, fewshot: stageFewshot, tta: stageTta } as const;

export async function runExperiment(argv: string[]): Promise<void> {
  const program = new Command("atlas-experiment")
    .option("--out <dir>", "output folder (adapters, results.json)", "runs/atlas")
    .option("--threads <n>", "onnxruntime threads", (v) => Number(v), 2)
    .option("--stages <list>", "comma-separated: finetune, multitask, fewshot, tta, or all", "all")
    .option("--report", "print the markdown tables of <out>/results.json and exit")
    .parse(argv, { from: "node" });
  const o = program.opts<{ out: string; threads: number; stages: string; report?: boolean }>();
  const file = join(o.out, "results.json");
  const results: Results = existsSync(file) ? (JSON.parse(readFileSync(file, "utf8")) as Results) : {};
  if (o.report) {
    process.stdout.write(formatReport(results));
    return;
  }
  mkdirSync(o.out, { recursive: true });
  const m = loadBase();
  const tasks = await loadTasks(m, o.threads);
  results.setup = {
    splitSeed: SPLIT_SEED,
    maxTokens: MAX_TOKENS,
    hyper: HYPER,
    sizes: Object.fromEntries(tasks.map((t) => [t.name, { train: t.train.length, val: t.val.length, test: t.test.length }])),
  };
  const ctx: Ctx = { m, tasks, out: o.out, threads: o.threads, results, save: () => writeFileAtomic(file, `${JSON.stringify(results, null, 2)}\n`) };
  const wanted = o.stages === "all" ? Object.keys(STAGES) : o.stages.split(",");
  for (const s of wanted) {
    if (!(s in STAGES)) throw new Error(`unknown stage '${s}'; use ${Object.keys(STAGES).join(", ")}`);
    if (s === "finetune" && results.finetune) continue;
    log(`stage ${s}`);
    await STAGES[s as keyof typeof STAGES](ctx);
  }
  process.stdout.write(formatReport(results));
}

await runExperiment(process.argv);
