/**
 * `npm run bench -- search-compare`: does a `peft search` front dominate hand-picked baselines,
 * and do its configurations transfer to other data? Each Pareto configuration of a finished
 * search (its `pareto.json`) and each baseline is trained again at the search's fidelity (its
 * space's epochs, example cap, batch size) for every data source and seed (the seed also draws
 * the split); prints one JSON line with every run and, per source and configuration, the mean and
 * standard error of the validation and test accuracy, the trainable parameters, and which
 * baselines each Pareto configuration dominates (mean test accuracy at least as high with no more
 * parameters, one of them strictly) and by how many standard errors of the difference.
 *
 *   npm run bench -- search-compare --search runs/search --data uci-yelp,uci-amazon,uci-imdb --seeds 0,1,2 --threads 1
 */
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Command } from "commander";
import { DEFAULT_SPLIT } from "../src/runs/data.js";
import { TRAIN_DEFAULTS, type TrainRunOptions, runTraining } from "../src/runs/train.js";
import { type SearchSpace, type TrialConfig, describeConfig, parseSearchSpace, searchSpaceToRaw } from "../src/search/space.js";
import { trialRunOptions } from "../src/search/trial.js";
import { benchEnvironment, emitResult, positiveInt, progress } from "./env.js";

/**
 * Hand-picked baselines (issue 18): LoRA r 8 on query/value (the PEFT default for BERT-like models)
 * and on every linear layer, (IA)³ on attention and feed-forward, prompt tuning with PEFT's 20
 * virtual tokens at the learning rate it needs (docs/adapters.md, "Methods compared").
 */
export const SEARCH_BASELINES: Readonly<Record<string, Partial<TrainRunOptions>>> = {
  "lora-r8-qv": { method: "lora", r: 8, alpha: 16, target: { kind: "names", names: ["query", "value"] }, feedforward: null, lr: 5e-3 },
  "ia3-qkv-ff": { method: "ia3", target: { kind: "names", names: ["query", "key", "value", "intermediate.dense"] }, feedforward: { kind: "names", names: ["intermediate.dense"] }, lr: 1e-2 },
  "lora-r8-all-linear": { method: "lora", r: 8, alpha: 16, target: { kind: "allLinear" }, feedforward: null, lr: 5e-3 },
  "prompt-tuning-20": { method: "prompt-tuning", numVirtualTokens: 20, target: null, feedforward: null, lr: 3e-2 },
};

interface Run {
  readonly data: string;
  readonly config: string;
  readonly seed: number;
  readonly validationAccuracy: number | null;
  readonly testAccuracy: number | null;
  readonly trainableParams: number;
  readonly seconds: number;
}

const meanSe = (xs: readonly number[]) => {
  const m = xs.reduce((a, b) => a + b, 0) / xs.length;
  const sd = Math.sqrt(xs.reduce((a, b) => a + (b - m) ** 2, 0) / Math.max(1, xs.length - 1));
  return { mean: m, se: sd / Math.sqrt(xs.length) };
};

export async function benchSearchCompare(o: { search: string; data: string[]; seeds: number[]; threads: number | null; configs?: readonly string[] | null }) {
  const state = JSON.parse(readFileSync(join(o.search, "search.json"), "utf8")) as { identity: { model: string; space: SearchSpace } };
  const space = parseSearchSpace(searchSpaceToRaw(state.identity.space));
  const pareto = (JSON.parse(readFileSync(join(o.search, "pareto.json"), "utf8")) as { pareto: { trial: number; config: TrialConfig }[] }).pareto;
  const configs: { name: string; options: (data: string, seed: number, out: string) => TrainRunOptions }[] = [
    ...pareto.map((p) => ({
      name: `trial ${p.trial}: ${describeConfig(p.config)}, lr ${p.config.lr.toPrecision(3)}`,
      options: (data: string, seed: number, out: string) =>
        trialRunOptions({ search: "compare", index: p.trial, model: state.identity.model, data, space: { ...space, train: { ...space.train, seed } }, config: p.config, threads: o.threads }, out),
    })),
    ...Object.entries(SEARCH_BASELINES).map(([name, b]) => ({
      name,
      options: (data: string, seed: number, out: string): TrainRunOptions => ({
        ...TRAIN_DEFAULTS,
        model: state.identity.model,
        data,
        out,
        method: "lora",
        target: null,
        feedforward: null,
        dropout: 0,
        epochs: space.fidelity.epochs,
        batchSize: space.train.batchSize,
        seed,
        evalEvery: null,
        patience: null,
        maxLength: space.train.maxLength,
        threads: o.threads,
        maxExamples: space.fidelity.maxExamples,
        maxSteps: null,
        split: DEFAULT_SPLIT,
        mode: "new",
        plot: false,
        ...b,
      }),
    })),
  ];
  // --configs: only the named configurations (baseline names, or `trial N`)
  const wanted = o.configs ?? null;
  if (wanted) {
    const unknown = wanted.filter((w) => !configs.some((c) => c.name === w || c.name.startsWith(`${w}:`)));
    if (unknown.length > 0) throw new Error(`search-compare --configs: no configuration named ${unknown.join(", ")} (baselines: ${Object.keys(SEARCH_BASELINES).join(", ")}; Pareto trials as 'trial N')`);
    configs.splice(0, configs.length, ...configs.filter((c) => wanted.some((w) => c.name === w || c.name.startsWith(`${w}:`))));
  }
  const runs: Run[] = [];
  const root = mkdtempSync(join(tmpdir(), "peft-bench-search-"));
  try {
    let k = 0;
    for (const data of o.data) {
      for (const c of configs) {
        for (const seed of o.seeds) {
          const r = await runTraining(c.options(data, seed, join(root, String(k++))));
          const m = r.metrics;
          runs.push({ data, config: c.name, seed, validationAccuracy: m.validation?.accuracy ?? null, testAccuracy: m.test?.accuracy ?? null, trainableParams: m.trainableParams, seconds: m.seconds });
          progress(`${data} ${c.name} seed ${seed}: validation ${m.validation?.accuracy?.toFixed(4)} test ${m.test?.accuracy?.toFixed(4)} (${m.trainableParams} params, ${m.seconds.toFixed(1)} s)`);
          await r.model.dispose();
        }
      }
    }
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
  const summary = o.data.flatMap((data) =>
    configs.map((c) => {
      const rs = runs.filter((x) => x.data === data && x.config === c.name);
      return {
        data,
        config: c.name,
        baseline: c.name in SEARCH_BASELINES,
        trainableParams: rs[0]!.trainableParams,
        validation: meanSe(rs.map((x) => x.validationAccuracy ?? Number.NaN)),
        test: meanSe(rs.map((x) => x.testAccuracy ?? Number.NaN)),
      };
    }),
  );
  const dominance = summary
    .filter((s) => !s.baseline)
    .flatMap((s) =>
      summary
        .filter((b) => b.baseline && b.data === s.data)
        .map((b) => {
          const diff = s.test.mean - b.test.mean;
          const se = Math.sqrt(s.test.se ** 2 + b.test.se ** 2);
          const dominates = diff >= 0 && s.trainableParams <= b.trainableParams && (diff > 0 || s.trainableParams < b.trainableParams);
          return { data: s.data, config: s.config, baseline: b.config, testDiff: diff, diffSe: se, dominates, standardErrors: se > 0 ? diff / se : null };
        }),
    );
  return { runs, summary, dominance };
}

const list = (v: string): string[] => v.split(",").map((s) => s.trim()).filter((s) => s.length > 0);

export function register(program: Command): void {
  program
    .command("search-compare")
    .description("a finished peft search's Pareto configurations vs hand-picked baselines (LoRA r8 q/v and all-linear, (IA)³, prompt tuning), retrained over seeds and data sources: mean ± standard error, dominance, transfer (docs/search.md)")
    .requiredOption("--search <dir>", "the search folder (search.json, pareto.json)")
    .option("--data <names>", "data sources, comma-separated (the first is usually the search's own)", list, ["uci-yelp", "uci-amazon", "uci-imdb"])
    .option("--seeds <list>", "seeds, comma-separated", (v: string) => list(v).map(Number), [0, 1, 2])
    .option("--threads <n>", "onnxruntime threads", positiveInt("--threads"))
    .option("--configs <names>", "only these configurations, comma-separated: baseline names or 'trial N' (default: every Pareto trial and baseline)", list)
    .action(async (o: { search: string; data: string[]; seeds: number[]; threads?: number; configs?: string[] }) => {
      const r = await benchSearchCompare({ search: o.search, data: o.data, seeds: o.seeds, threads: o.threads ?? null, configs: o.configs ?? null });
      emitResult({ bench: "search-compare", search: o.search, ...r, env: benchEnvironment({ threads: o.threads ?? 0, ep: "cpu" }) });
    });
}
