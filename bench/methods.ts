/**
 * `npm run bench -- methods`: the "Methods compared" table of docs/adapters.md. For each dataset,
 * method and seed, one `peft train` run (`runTraining`) on USE-lite with the same budget (steps,
 * batch, learning rate per method), recording the test accuracy and the trainable parameters;
 * prints one JSON line with every run and, per dataset and method, the mean and standard
 * deviation of the test accuracy over the seeds.
 *
 *   npm run bench -- methods --data uci-sentiment,uci-imdb --seeds 0,1,2 --max-steps 150
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Command } from "commander";
import { DEFAULT_SPLIT } from "../src/runs/data.js";
import { TRAIN_DEFAULTS, type TrainRunOptions, runTraining } from "../src/runs/train.js";
import { benchEnvironment, emitResult, positiveInt, progress } from "./env.js";

/** Method → its options at a comparable budget (learning rates from each paper's / PEFT's usual range). */
export const METHOD_OPTIONS: Readonly<Record<string, Partial<TrainRunOptions>>> = {
  lora: { lr: 1e-3 },
  adalora: { lr: 1e-3 },
  loha: { lr: 1e-3 },
  lokr: { lr: 1e-3 },
  vera: { r: 64, lr: 1e-2 },
  oft: { lr: 1e-3 },
  boft: { lr: 1e-3 },
  fourierft: { lr: 1e-2, adapterConfig: { n_frequency: 1000 } },
  ia3: { lr: 1e-2 },
  "prompt-tuning": { lr: 3e-2 },
};

export interface MethodsRun {
  readonly data: string;
  readonly method: string;
  readonly seed: number;
  readonly testAccuracy: number | null;
  readonly trainableParams: number;
  readonly seconds: number;
}

export async function benchMethods(o: { data: string[]; methods: string[]; seeds: number[]; maxSteps: number; maxExamples: number | null; threads: number | null }) {
  const runs: MethodsRun[] = [];
  const root = mkdtempSync(join(tmpdir(), "peft-bench-methods-"));
  try {
    for (const data of o.data) {
      for (const method of o.methods) {
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
            split: DEFAULT_SPLIT,
            mode: "new",
            plot: false,
            ...METHOD_OPTIONS[method],
          };
          const r = await runTraining(opts);
          const m = r.metrics;
          runs.push({ data, method, seed, testAccuracy: m.test?.accuracy ?? null, trainableParams: m.trainableParams, seconds: m.seconds });
          progress(`${data} ${method} seed ${seed}: test accuracy ${m.test?.accuracy?.toFixed(4)} (${m.trainableParams} params, ${m.seconds.toFixed(1)} s)`);
          await r.model.dispose();
        }
      }
    }
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
  const summary = o.data.flatMap((data) =>
    o.methods.map((method) => {
      const accs = runs.filter((x) => x.data === data && x.method === method).map((x) => x.testAccuracy ?? Number.NaN);
      const mean = accs.reduce((a, b) => a + b, 0) / accs.length;
      const sd = Math.sqrt(accs.reduce((a, b) => a + (b - mean) ** 2, 0) / Math.max(1, accs.length - 1));
      const params = runs.find((x) => x.data === data && x.method === method)!.trainableParams;
      return { data, method, meanAccuracy: mean, sdAccuracy: sd, trainableParams: params };
    }),
  );
  return { runs, summary };
}

const list = (v: string): string[] => v.split(",").map((s) => s.trim()).filter((s) => s.length > 0);

export function register(program: Command): void {
  program
    .command("methods")
    .description("every PEFT method on USE-lite at the same step budget, several seeds: test accuracy and trainable parameters (docs/adapters.md, Methods compared)")
    .option("--data <names>", "datasets, comma-separated", list, ["uci-sentiment", "uci-imdb"])
    .option("--methods <names>", "methods (peft train --method names), comma-separated", list, Object.keys(METHOD_OPTIONS))
    .option("--seeds <list>", "seeds, comma-separated", (v: string) => list(v).map(Number), [0, 1, 2])
    .option("--max-steps <n>", "optimizer steps per run", positiveInt("--max-steps"), 150)
    .option("--max-examples <n>", "stratified subset of each dataset (quick runs)", positiveInt("--max-examples"))
    .option("--threads <n>", "onnxruntime threads", positiveInt("--threads"))
    .action(async (o: { data: string[]; methods: string[]; seeds: number[]; maxSteps: number; maxExamples?: number; threads?: number }) => {
      const r = await benchMethods({ data: o.data, methods: o.methods, seeds: o.seeds, maxSteps: o.maxSteps, maxExamples: o.maxExamples ?? null, threads: o.threads ?? null });
      emitResult({ bench: "methods", maxSteps: o.maxSteps, ...r, env: benchEnvironment({ threads: o.threads ?? 0, ep: "cpu" }) });
    });
}
