/**
 * `npm run bench -- methods`: the "Methods compared" table of docs/adapters.md. For each dataset,
 * row and seed, one `peft train` run (`runTraining`) on USE-lite with the same step budget and
 * batch, recording the test accuracy and the trainable parameters. Rows: every method at its own
 * learning rate (alpha: `peft train`'s default 16), and (on `--equal-lr-data`) the methods whose
 * rate differs again at LoRA's 1e-3.
 * Prints one JSON line with every run and, per dataset and row, the mean, standard deviation and
 * standard error of the test accuracy over the seeds, and the markdown table on stderr.
 *
 *   npm run bench -- methods --data uci-sentiment,uci-imdb --seeds 0,1,2 --max-steps 60 --threads 1
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Command } from "commander";
import { DEFAULT_SPLIT, loadRunData } from "../src/runs/data.js";
import { TRAIN_DEFAULTS, type TrainRunOptions, runTraining } from "../src/runs/train.js";
import { benchEnvironment, emitResult, positiveInt, progress } from "./env.js";

/** One row of the table: a `--method` with its options. */
export interface MethodVariant {
  /** Row name (`--methods` selects by it): the method, or `<method> (lr 1e-3)` for the equal-learning-rate runs. */
  readonly id: string;
  readonly method: string;
  readonly options: Partial<TrainRunOptions>;
}

/** The learning rate every method also runs at (LoRA's), next to its own tuned one. */
export const EQUAL_LR = 1e-3;

/**
 * Method → options at comparable trainable-parameter budgets on USE-lite (query/value targets,
 * 10–25k parameters for the methods whose budget is a free choice: LoRA r 4, LoHa r 2, AdaLoRA
 * r 4, OFT blocks of 16, P-tuning's encoder 32 wide; VeRA, FourierFT, LoKr, BOFT, (IA)³ and prompt
 * tuning at their usual settings, which are far smaller — the point of those methods), with the
 * learning rate of each paper's / PEFT's examples. Prefix tuning is not here: USE-lite's layers
 * have different widths (256, 512), which PEFT's one-`token_dim` prefix layout cannot describe.
 */
export const METHOD_OPTIONS: Readonly<Record<string, Partial<TrainRunOptions>>> = {
  lora: { r: 4, lr: 1e-3 },
  adalora: { r: 4, lr: 1e-3 },
  loha: { r: 2, lr: 1e-3 },
  lokr: { lr: 1e-3 },
  vera: { r: 64, lr: 1e-2 },
  oft: { lr: 1e-3, adapterConfig: { oft_block_size: 16 } },
  boft: { lr: 1e-3 },
  fourierft: { lr: 1e-2, adapterConfig: { n_frequency: 1000 } },
  // (IA)³'s USE-lite default targets: keys, values and the feed-forward outputs (BERT's choice)
  ia3: { lr: 1e-2 },
  "prompt-tuning": { lr: 3e-2 },
  "p-tuning": { lr: 1e-2, adapterConfig: { encoder_hidden_size: 32 } },
};

/** Every method at its tuned learning rate, then at {@link EQUAL_LR} those whose tuned rate differs. */
export function methodVariants(): MethodVariant[] {
  const tuned = Object.entries(METHOD_OPTIONS).map(([method, options]) => ({ id: method, method, options }));
  const equal = tuned.filter((v) => v.options.lr !== EQUAL_LR).map((v) => ({ id: `${v.method} (lr 1e-3)`, method: v.method, options: { ...v.options, lr: EQUAL_LR } }));
  return [...tuned, ...equal];
}

export interface MethodsRun {
  readonly data: string;
  readonly variant: string;
  readonly method: string;
  readonly lr: number;
  readonly seed: number;
  readonly testAccuracy: number | null;
  readonly trainableParams: number;
  readonly seconds: number;
}

export interface MethodsSummary {
  readonly data: string;
  readonly variant: string;
  readonly lr: number;
  readonly trainableParams: number;
  readonly seeds: number;
  readonly meanAccuracy: number;
  readonly sdAccuracy: number;
  /** Standard error of the mean over the seeds (sd / √seeds). */
  readonly seAccuracy: number;
}

export async function benchMethods(o: { data: string[]; variants: MethodVariant[]; equalLrData: string[]; seeds: number[]; maxSteps: number; maxExamples: number | null; threads: number | null }) {
  const runs: MethodsRun[] = [];
  const root = mkdtempSync(join(tmpdir(), "peft-bench-methods-"));
  const plan = o.data.flatMap((data) => o.variants.filter((v) => v.id === v.method || o.equalLrData.includes(data)).map((v) => ({ data, v })));
  try {
    for (const { data, v } of plan) {
      for (const seed of o.seeds) {
        // the trainer's learning-rate schedule spans the epochs (max_steps only stops a run), so
        // the epochs are exactly max-steps: warm-up and decay then happen within the budget
        const train = loadRunData({ data, seed, ...(o.maxExamples !== null ? { maxExamples: o.maxExamples } : {}) }).split.train.length;
        const epochs = (o.maxSteps * TRAIN_DEFAULTS.batchSize) / train;
        const opts: TrainRunOptions = {
          ...TRAIN_DEFAULTS,
          model: "use-lite",
          data,
          out: join(root, `${data}-${v.id.replace(/[^a-z0-9-]/gu, "_")}-${seed}`),
          method: v.method,
          target: null,
          feedforward: null,
          epochs,
          seed,
          evalEvery: null,
          patience: null,
          maxLength: 64,
          threads: o.threads,
          maxExamples: o.maxExamples,
          maxSteps: o.maxSteps,
          split: DEFAULT_SPLIT,
          mode: "new",
          plot: false,
          ...v.options,
        };
        const r = await runTraining(opts);
        const m = r.metrics;
        runs.push({ data, variant: v.id, method: v.method, lr: opts.lr, seed, testAccuracy: m.test?.accuracy ?? null, trainableParams: m.trainableParams, seconds: m.seconds });
        progress(`${data} ${v.id} seed ${seed}: test accuracy ${m.test?.accuracy?.toFixed(4)} (${m.trainableParams} params, ${m.seconds.toFixed(1)} s)`);
        await r.model.dispose();
      }
    }
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
  const summary: MethodsSummary[] = plan.map(({ data, v }) => {
    const rs = runs.filter((x) => x.data === data && x.variant === v.id);
    const accs = rs.map((x) => x.testAccuracy ?? Number.NaN);
    const mean = accs.reduce((a, b) => a + b, 0) / accs.length;
    const sd = Math.sqrt(accs.reduce((a, b) => a + (b - mean) ** 2, 0) / Math.max(1, accs.length - 1));
    return { data, variant: v.id, lr: rs[0]!.lr, trainableParams: rs[0]!.trainableParams, seeds: accs.length, meanAccuracy: mean, sdAccuracy: sd, seAccuracy: sd / Math.sqrt(accs.length) };
  });
  return { runs, summary, table: markdownTable(o.data, summary) };
}

/** The summary as docs/adapters.md's table: one row per variant, accuracy ± standard error per dataset. */
export function markdownTable(data: readonly string[], summary: readonly MethodsSummary[]): string {
  const variants = [...new Set(summary.map((s) => s.variant))];
  const cell = (d: string, v: string) => {
    const s = summary.find((x) => x.data === d && x.variant === v);
    return s ? `${(100 * s.meanAccuracy).toFixed(1)} ± ${(100 * s.seAccuracy).toFixed(1)}` : "—";
  };
  const lines = [
    `| Method | lr | Trainable params (without the 1,026-parameter head) | ${data.map((d) => `${d} test acc. % (± s.e.)`).join(" | ")} |`,
    `|---|---|---|${data.map(() => "---|").join("")}`,
    ...variants.map((v) => {
      const s = summary.find((x) => x.variant === v)!;
      return `| ${v} | ${s.lr} | ${(s.trainableParams - 1026).toLocaleString("en-US")} | ${data.map((d) => cell(d, v)).join(" | ")} |`;
    }),
  ];
  return lines.join("\n");
}

const list = (v: string): string[] => v.split(",").map((s) => s.trim()).filter((s) => s.length > 0);

export function register(program: Command): void {
  program
    .command("methods")
    .description("PEFT methods on USE-lite at comparable budgets, several seeds: test accuracy (mean ± standard error) and trainable parameters (docs/adapters.md, Methods compared)")
    .option("--data <names>", "datasets, comma-separated", list, ["uci-sentiment", "uci-imdb"])
    .option("--methods <names>", "rows (method names, or '<method> (lr 1e-3)'), comma-separated", list, methodVariants().map((v) => v.id))
    .option("--equal-lr-data <names>", "datasets on which the equal-learning-rate rows run (default none)", list, [])
    .option("--seeds <list>", "seeds, comma-separated", (v: string) => list(v).map(Number), [0, 1, 2])
    .option("--max-steps <n>", "optimizer steps per run", positiveInt("--max-steps"), 60)
    .option("--max-examples <n>", "stratified subset of each dataset (quick runs)", positiveInt("--max-examples"))
    .option("--threads <n>", "onnxruntime threads", positiveInt("--threads"))
    .action(async (o: { data: string[]; methods: string[]; equalLrData: string[]; seeds: number[]; maxSteps: number; maxExamples?: number; threads?: number }) => {
      const all = methodVariants();
      const variants = o.methods.map((id) => {
        const v = all.find((x) => x.id === id);
        if (!v) throw new Error(`unknown row '${id}'; rows: ${all.map((x) => x.id).join(", ")}`);
        return v;
      });
      const r = await benchMethods({ data: o.data, variants, equalLrData: o.equalLrData, seeds: o.seeds, maxSteps: o.maxSteps, maxExamples: o.maxExamples ?? null, threads: o.threads ?? null });
      progress(`\n${r.table}\n`);
      emitResult({ bench: "methods", maxSteps: o.maxSteps, ...r, env: benchEnvironment({ threads: o.threads ?? 0, ep: "cpu" }) });
    });
}
