/**
 * `npm run bench -- variants`: the LoRA variants of issue 17 against LoRA (docs/lora-variants.md).
 * For each dataset, method and seed one `peft train` run (`runTraining`) on USE-lite at the same
 * step budget, recording test accuracy and trainable parameters; then each method's own
 * measurement (`VARIANTS[method].after`): DyLoRA's test accuracy at every rank of `--ranks` from
 * its one run (exported with `peft export-lora`'s code and evaluated with `peft eval`'s), next to
 * LoRAs trained separately at those ranks; SoRA's kept rank per layer (and a plot with `--plot`).
 * Prints one JSON line: every run, per dataset and method the mean test accuracy with its
 * standard error over the seeds, and the methods' extra results.
 *
 *   npm run bench -- variants --data uci-sentiment,uci-imdb --seeds 0,1,2 --max-steps 100 --lr 0.01 --threads 1
 *
 * Adding a method: one entry in `VARIANTS` (its `peft train` options at the shared budget and,
 * optionally, an `after` step that measures its own claim from the trained run).
 */
import { cpSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type Command, InvalidArgumentError } from "commander";
import { saveAsLora } from "../src/peft/export-lora.js";
import { renderVegaLite, vegaLiteSvg } from "../src/runs/plot.js";
import { soraRanks } from "../src/tuners/sora/index.js";
import { DEFAULT_SPLIT } from "../src/runs/data.js";
import { runEvaluation } from "../src/runs/evaluate.js";
import { RUN_FILES } from "../src/runs/run-dir.js";
import { TRAIN_DEFAULTS, type TrainRunOptions, type TrainRunResult, runTraining } from "../src/runs/train.js";
import { benchEnvironment, emitResult, positiveInt, progress } from "./env.js";

export interface VariantContext {
  readonly data: string;
  readonly seed: number;
  /** The run's options (its folder is `opts.out`). */
  readonly opts: TrainRunOptions;
  readonly run: TrainRunResult;
  /** `--ranks`: the ranks DyLoRA is evaluated at. */
  readonly ranks: readonly number[];
  /** `--plot-dir`: where methods that allocate ranks write their rank-per-layer plot, or null. */
  readonly plotDir: string | null;
  /** Train one more run with `extra` options on top of this run's (same data, seed and budget). */
  readonly train: (label: string, extra: Partial<TrainRunOptions>) => Promise<TrainRunResult>;
}

export interface VariantSpec {
  /** `peft train` options at the shared budget (r chosen so the trainable parameters are close to LoRA's r 8). */
  readonly options: Partial<TrainRunOptions>;
  /** The method's own measurement from its trained run, stored under `extra[method]`. */
  readonly after?: (ctx: VariantContext) => Promise<Record<string, unknown>>;
}

/** Test accuracy of the run folder `dir`'s adapter evaluated on the run's own test split. */
async function testAccuracy(dir: string, ctx: VariantContext): Promise<number> {
  const r = await runEvaluation({ adapter: dir, data: ctx.data, split: "test", batchSize: ctx.opts.batchSize, ...(ctx.opts.threads !== null ? { threads: ctx.opts.threads } : {}) });
  return r.accuracy ?? Number.NaN;
}

/** DyLoRA: its one run cut to every rank of `--ranks` (plain LoRA exports), vs LoRAs trained at those ranks. */
async function dyloraRanks(ctx: VariantContext): Promise<Record<string, unknown>> {
  const perRank: { rank: number; dylora: number; lora: number; loraParams: number }[] = [];
  for (const b of ctx.ranks) {
    const dir = join(ctx.opts.out, `rank-${b}`);
    saveAsLora(ctx.run.model, "default", dir, { rank: b });
    cpSync(join(ctx.opts.out, RUN_FILES.config), join(dir, RUN_FILES.config)); // the run's split, model and label ids
    const dy = await testAccuracy(dir, ctx);
    const lora = await ctx.train(`lora-r${b}`, { method: "lora", r: b, alpha: 2 * b, lr: ctx.opts.lr });
    perRank.push({ rank: b, dylora: dy, lora: lora.metrics.test?.accuracy ?? Number.NaN, loraParams: lora.metrics.trainableParams });
    progress(`${ctx.data} seed ${ctx.seed} rank ${b}: DyLoRA (one run) ${dy.toFixed(4)}, LoRA trained at r ${b} ${(lora.metrics.test?.accuracy ?? Number.NaN).toFixed(4)}`);
    await lora.model.dispose();
  }
  return { perRank };
}

/** SoRA: the kept rank per layer (non-zero gates) and the test accuracy of the pruned plain-LoRA export. */
async function soraRanksAfter(ctx: VariantContext): Promise<Record<string, unknown>> {
  const a = ctx.run.model.adapter("default");
  const ranks = Object.fromEntries(soraRanks(a.tensors));
  const dir = join(ctx.opts.out, "pruned-lora");
  const e = saveAsLora(ctx.run.model, "default", dir);
  cpSync(join(ctx.opts.out, RUN_FILES.config), join(dir, RUN_FILES.config));
  const pruned = await testAccuracy(dir, ctx);
  const count = (m: ReadonlyMap<string, { shape: readonly number[] }>, suffixes: readonly string[]) =>
    [...m].filter(([k]) => suffixes.some((x) => k.endsWith(x))).reduce((n, [, t]) => n + t.shape.reduce((p, d) => p * d, 1), 0);
  const before = count(a.tensors, [".sora_A", ".sora_B"]);
  const after = count(e.tensors, [".lora_A.weight", ".lora_B.weight"]);
  progress(`${ctx.data} seed ${ctx.seed} SoRA: kept ranks ${JSON.stringify(ranks)}, pruned LoRA ${pruned.toFixed(4)} with ${after}/${before} low-rank parameters`);
  return { ranks, prunedAccuracy: pruned, lowRankParams: before, prunedLowRankParams: after };
}

/**
 * IncreLoRA / TriAdaptLoRA: the rank each layer was allocated (`rank_pattern` after training),
 * the parameters the saved adapter keeps (the run's `trainableParams` counts the capacity and
 * IncreLoRA's training-only probes) and, with `--plot-dir`, a bar chart of the ranks.
 */
async function allocatedRanks(ctx: VariantContext): Promise<Record<string, unknown>> {
  const a = ctx.run.model.adapter("default");
  const ranks = { ...((a.config as unknown as { rankPattern: Record<string, number> | null }).rankPattern ?? {}) };
  const [savedParams] = ctx.run.model.getNbTrainableParameters();
  if (ctx.plotDir) {
    const rows = Object.entries(ranks).map(([module, rank]) => ({ module: module.replace(/^encoder\.layer\./u, "layer ").replace(/\.attention\.self\./u, " "), rank }));
    const spec = {
      $schema: "https://vega.github.io/schema/vega-lite/v5.json",
      title: `${ctx.opts.method}: rank per layer after training (${ctx.data}, seed ${ctx.seed}, budget ${ctx.opts.r} × ${rows.length})`,
      width: 40 * rows.length,
      height: 200,
      data: { values: rows },
      mark: "bar",
      encoding: { x: { field: "module", type: "nominal", sort: null, title: "module" }, y: { field: "rank", type: "quantitative", title: "allocated rank" } },
    };
    mkdirSync(ctx.plotDir, { recursive: true });
    writeFileSync(join(ctx.plotDir, `${ctx.opts.method}-ranks-${ctx.data}-seed${ctx.seed}.svg`), await vegaLiteSvg(spec));
  }
  progress(`${ctx.data} ${ctx.opts.method} seed ${ctx.seed}: ranks ${JSON.stringify(ranks)} (${savedParams} params saved)`);
  return { ranks, savedParams };
}

/**
 * Method → its options at the shared budget and its own measurement. Every method runs at the
 * bench's `--lr` (default 1e-2), the peak of a schedule that spans `--max-steps` (6 % warm-up, then
 * linear decay; it overrides the runs' `epochs: 100`), docs/lora-variants.md.
 */
export const VARIANTS: Readonly<Record<string, VariantSpec>> = {
  // the control: LoRA with lora_alpha 0 (ΔW ≡ 0, A and B get no gradient), so only the classifier head learns
  "head-only": { options: { method: "lora", r: 8, alpha: 16, adapterConfig: { lora_alpha: 0 } } },
  lora: { options: { r: 8, alpha: 16 } },
  dylora: { options: { r: 8, alpha: 16 }, after: dyloraRanks },
  // the paper's frozen mode: only the sampled rank's row of A / column of B is updated per step
  "dylora-frozen": { options: { method: "dylora", r: 8, alpha: 16, adapterConfig: { frozen: true } } },
  // ξ 0.005 per step: a gate shrinks by at most 0.5 in 100 steps, so sparsity shows at this scale
  sora: { options: { r: 8, alpha: 16, adapterConfig: { sparse_lambda: 0.005 } }, after: soraRanksAfter },
  // the paper's rank rule: per module the singular values holding 99% of the spectrum's energy (USE-lite: 177/199/382/396, 1,154 trainable)
  svfit: { options: { r: 8, adapterConfig: { spectrum_threshold: 0.99 } } },
  // n 4 blocks; r 13 gives 24,960 low-rank parameters against LoRA r 8's 24,576
  "block-lora": { options: { r: 13, alpha: 26, adapterConfig: { block_num: 4 } } },
  // budget target_r 8 × layers: the same saved rank in total as LoRA r 8, allocated by importance
  increlora: { options: { r: 8, alpha: 16 }, after: allocatedRanks },
  triadaptlora: { options: { r: 8, alpha: 16 }, after: allocatedRanks },
  // core 8 × 8 (scale alpha/r = 2): r(in + out) + r² per layer, LoRA r 8's parameters plus 64
  flora: { options: { r: 8, alpha: 16 } },
};

export interface VariantRun {
  readonly data: string;
  readonly method: string;
  readonly seed: number;
  readonly lr: number;
  readonly testAccuracy: number | null;
  readonly validationAccuracy: number | null;
  readonly trainableParams: number;
  readonly seconds: number;
}

/** Mean and standard error of the mean. */
export function meanSe(xs: readonly number[]): { mean: number; se: number } {
  const mean = xs.reduce((a, b) => a + b, 0) / xs.length;
  const sd = Math.sqrt(xs.reduce((a, b) => a + (b - mean) ** 2, 0) / Math.max(1, xs.length - 1));
  return { mean, se: sd / Math.sqrt(xs.length) };
}

export async function benchVariants(o: { data: string[]; methods: string[]; seeds: number[]; maxSteps: number; lr: number; maxExamples: number | null; threads: number | null; ranks: number[]; plotDir?: string | null }) {
  const runs: VariantRun[] = [];
  const extra: { data: string; method: string; seed: number; result: Record<string, unknown> }[] = [];
  const root = mkdtempSync(join(tmpdir(), "peft-bench-variants-"));
  try {
    for (const data of o.data) {
      for (const method of o.methods) {
        const spec = VARIANTS[method];
        if (!spec) throw new Error(`variants: unknown method '${method}' (known: ${Object.keys(VARIANTS).join(", ")})`);
        for (const seed of o.seeds) {
          const opts: TrainRunOptions = {
            ...TRAIN_DEFAULTS,
            model: "use-lite",
            data,
            out: join(root, `${data}-${method}-${seed}`),
            method,
            target: null,
            feedforward: null,
            epochs: 100,
            seed,
            evalEvery: null,
            patience: null,
            maxLength: 64,
            threads: o.threads,
            maxExamples: o.maxExamples,
            maxSteps: o.maxSteps,
            lr: o.lr,
            split: DEFAULT_SPLIT,
            mode: "new",
            plot: false,
            ...spec.options,
          };
          const run = await runTraining(opts);
          const m = run.metrics;
          runs.push({ data, method, seed, lr: opts.lr, testAccuracy: m.test?.accuracy ?? null, validationAccuracy: m.validation?.accuracy ?? null, trainableParams: m.trainableParams, seconds: m.seconds });
          progress(`${data} ${method} seed ${seed}: test accuracy ${m.test?.accuracy?.toFixed(4)} (${m.trainableParams} params, ${m.seconds.toFixed(1)} s)`);
          if (spec.after) {
            const train = (label: string, more: Partial<TrainRunOptions>) => runTraining({ ...opts, ...more, out: join(root, `${data}-${method}-${seed}-${label}`) });
            extra.push({ data, method, seed, result: await spec.after({ data, seed, opts, run, ranks: o.ranks, plotDir: o.plotDir ?? null, train }) });
          }
          await run.model.dispose();
        }
      }
    }
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
  const summary = o.data.flatMap((data) =>
    o.methods.map((method) => {
      const { mean, se } = meanSe(runs.filter((x) => x.data === data && x.method === method).map((x) => x.testAccuracy ?? Number.NaN));
      const params = runs.find((x) => x.data === data && x.method === method)!.trainableParams;
      return { data, method, meanAccuracy: mean, seAccuracy: se, trainableParams: params };
    }),
  );
  return { runs, summary, extra };
}

function positiveLr(v: string): number {
  const x = Number(v);
  if (!(Number.isFinite(x) && x > 0)) throw new InvalidArgumentError(`--lr must be a positive number, got '${v}'`);
  return x;
}

const list = (v: string): string[] => v.split(",").map((s) => s.trim()).filter((s) => s.length > 0);

export function register(program: Command): void {
  program
    .command("variants")
    .description("the LoRA variants (DyLoRA, SoRA, SVFit, Block-LoRA, …) vs LoRA on USE-lite, several seeds: test accuracy, trainable parameters and each method's own claim (docs/lora-variants.md)")
    .option("--data <names>", "datasets, comma-separated", list, ["uci-sentiment", "uci-imdb"])
    .option("--methods <names>", "methods (peft train --method names), comma-separated", list, Object.keys(VARIANTS))
    .option("--seeds <list>", "seeds, comma-separated", (v: string) => list(v).map(Number), [0, 1, 2])
    .option("--max-steps <n>", "optimizer steps per run", positiveInt("--max-steps"), 100)
    .option("--lr <x>", "learning rate of every method", positiveLr, 1e-2)
    .option("--max-examples <n>", "stratified subset of each dataset (quick runs)", positiveInt("--max-examples"))
    .option("--ranks <list>", "ranks DyLoRA is evaluated at (and separate LoRAs trained at)", (v: string) => list(v).map(Number), [1, 2, 4])
    .option("--threads <n>", "onnxruntime threads", positiveInt("--threads"))
    .option("--plot <file>", "write SoRA's kept rank per layer and seed as an SVG bar chart")
    .option("--plot-dir <dir>", "write the rank-per-layer plots of IncreLoRA / TriAdaptLoRA runs here (SVG)")
    .action(async (o: { data: string[]; methods: string[]; seeds: number[]; maxSteps: number; lr: number; maxExamples?: number; threads?: number; ranks: number[]; plot?: string; plotDir?: string }) => {
      const t0 = performance.now();
      const r = await benchVariants({ data: o.data, methods: o.methods, seeds: o.seeds, maxSteps: o.maxSteps, lr: o.lr, maxExamples: o.maxExamples ?? null, threads: o.threads ?? null, ranks: o.ranks, plotDir: o.plotDir ?? null });
      if (o.plot !== undefined) writeFileSync(o.plot, (await renderVegaLite(soraRankSpec(r.extra))).svg);
      emitResult({ bench: "variants", maxSteps: o.maxSteps, lr: o.lr, maxExamples: o.maxExamples ?? null, wallSeconds: (performance.now() - t0) / 1000, ...r, env: benchEnvironment({ threads: o.threads ?? 0, ep: "cpu" }) });
    });
}


/** Vega-Lite bars: SoRA's kept rank per adapted layer, one bar per seed, one panel per dataset. */
export function soraRankSpec(extra: readonly { data: string; method: string; seed: number; result: Record<string, unknown> }[]): object {
  const values = extra
    .filter((e) => e.method === "sora")
    .flatMap((e) => Object.entries(e.result.ranks as Record<string, number>).map(([module, rank]) => ({ data: e.data, seed: String(e.seed), layer: module.replace(/^encoder\.layer\.(\d+)\.attention\.self\./u, "layer $1 "), rank })));
  return {
    $schema: "https://vega.github.io/schema/vega-lite/v5.json",
    title: "SoRA: kept rank per layer (r 8, non-zero gates after training)",
    data: { values },
    mark: "bar",
    encoding: {
      row: { field: "data", type: "nominal", title: null },
      y: { field: "layer", type: "nominal", title: null },
      yOffset: { field: "seed" },
      x: { field: "rank", type: "quantitative", title: "kept rank", scale: { domain: [0, 8] } },
      color: { field: "seed", type: "nominal", title: "seed" },
    },
  };
}
