/**
 * `peft search` as a library: multi-objective Bayesian optimisation over a search space, each
 * trial a low-fidelity training run executed by a {@link TrialExecutor} (in this process, or as
 * BullMQ jobs on `peft worker`s). The search folder holds its whole state — `search.json`, one
 * `trials/NNN/trial.json` per proposed trial (written before it runs) — so a restarted search
 * continues where it stopped: finished trials are read back, unfinished ones run again (and
 * resume from their checkpoints), nothing finished is run twice. Outputs: `pareto.json`,
 * `pareto.svg`/`pareto.png`, and `pareto/<trial>/adapter_config.json` for each Pareto config.
 */
import { existsSync, mkdirSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { ConfigError } from "../errors.js";
import { writeFileAtomic } from "../io/atomic.js";
import { readJsonObject } from "../io/json-file.js";
import { randomHex } from "../platform/crypto.js";
import { renderVegaLite } from "../runs/plot.js";
import type { RunReporter } from "../runs/reporter.js";
import { writeJsonAtomic } from "../runs/run-dir.js";
import { type Observation, initialDesignSize, proposeNext } from "./mobo.js";
import { hypervolume, paretoIndices } from "./pareto.js";
import { type SearchObjective, type SearchSpace, type TrialConfig, decodePoint, describeConfig, spaceDims } from "./space.js";
import { type SearchTrialResult, type SearchTrialSpec, runSearchTrial } from "./trial.js";

/** Runs trials: in this process ({@link InProcessTrialExecutor}) or on queue workers. */
export interface TrialExecutor {
  run(spec: SearchTrialSpec): Promise<SearchTrialResult>;
  close(): Promise<void>;
}

/** Trials in this process, one run folder per trial under `<out>/trials/NNN/run`. */
export class InProcessTrialExecutor implements TrialExecutor {
  constructor(
    private readonly out: string,
    private readonly reporter?: (index: number) => RunReporter,
  ) {}
  run(spec: SearchTrialSpec): Promise<SearchTrialResult> {
    return runSearchTrial(spec, join(trialDir(this.out, spec.index), "run"), this.reporter?.(spec.index));
  }
  async close(): Promise<void> {}
}

export interface SearchOptions {
  readonly space: SearchSpace;
  readonly model: string;
  readonly data: string;
  readonly out: string;
  /** Trials in all (finished ones of an earlier run of the same search count). */
  readonly trials: number;
  /** Sobol' initial design size (default max(4, 2·(dims+1)), at most `trials`). */
  readonly initial?: number;
  /** Seed of the design and the optimiser (default: the space's train seed). */
  readonly seed?: number;
  /** Trials in flight at once (default 1; the number of workers with a queue). */
  readonly parallel?: number;
  /** Stop proposing trials after this many seconds (default: no limit). */
  readonly timeBudgetSeconds?: number | null;
  readonly threads?: number | null;
}

export interface TrialRecord {
  readonly index: number;
  readonly x: readonly number[];
  readonly config: TrialConfig;
  readonly label: string;
  status: "pending" | "done" | "failed";
  result?: SearchTrialResult;
  error?: string;
}

export interface SearchEvents {
  /** A trial was proposed (and written) and starts. */
  proposed?(t: TrialRecord): void;
  /** A trial finished (or failed). */
  finished?(t: TrialRecord): void;
}

export interface ParetoEntry {
  readonly trial: number;
  readonly label: string;
  readonly config: TrialConfig;
  readonly metrics: Record<string, number | null>;
  /** The exported adapter config, relative to the search folder. */
  readonly adapterConfig: string;
}

export interface SearchResult {
  readonly out: string;
  readonly trials: readonly TrialRecord[];
  readonly pareto: readonly ParetoEntry[];
  /** Hypervolume of the normalised objectives (reference point 1.1 per objective, see pareto.json). */
  readonly hypervolume: number;
  /** Trials this call ran (not read back from an earlier run). */
  readonly ran: number;
  readonly files: readonly string[];
}

const pad = (i: number) => String(i).padStart(3, "0");
export const trialDir = (out: string, index: number) => join(out, "trials", pad(index));

/** The minimised value of an objective. */
function objectiveValue(o: SearchObjective, r: SearchTrialResult): number {
  switch (o) {
    case "accuracy":
      return 1 - (r.accuracy ?? 0);
    case "loss":
      return r.loss;
    case "trainable_params":
      return Math.log10(Math.max(1, r.trainableParams));
    case "step_time":
      return r.stepSeconds;
  }
}

function reportedValue(o: SearchObjective, r: SearchTrialResult): number | null {
  return o === "accuracy" ? r.accuracy : o === "loss" ? r.loss : o === "trainable_params" ? r.trainableParams : r.stepSeconds;
}

function loadTrials(out: string): TrialRecord[] {
  const dir = join(out, "trials");
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .filter((n) => /^\d{3,}$/.test(n) && existsSync(join(dir, n, "trial.json")))
    .map((n) => readJsonObject(join(dir, n, "trial.json")) as unknown as TrialRecord)
    .sort((a, b) => a.index - b.index);
}

const saveTrial = (out: string, t: TrialRecord) => {
  mkdirSync(trialDir(out, t.index), { recursive: true });
  writeJsonAtomic(join(trialDir(out, t.index), "trial.json"), t);
};

/** Runs (or continues) the search in `opts.out`. */
export async function runSearch(opts: SearchOptions, executor: TrialExecutor, events: SearchEvents = {}): Promise<SearchResult> {
  const { space } = opts;
  const dims = spaceDims(space).length;
  const seed = opts.seed ?? space.train.seed;
  const identity = { model: opts.model, data: opts.data, space, seed };
  const stateFile = join(opts.out, "search.json");
  let id: string;
  if (existsSync(stateFile)) {
    const saved = readJsonObject(stateFile);
    if (JSON.stringify(saved.identity) !== JSON.stringify(identity)) throw new ConfigError(stateFile, "identity", `${opts.out} holds a search with another model, data, space or seed; continue it with the same ones or choose another --out`);
    id = String(saved.id);
  } else {
    id = randomHex(6);
    mkdirSync(opts.out, { recursive: true });
    writeJsonAtomic(stateFile, { id, identity, created: new Date().toISOString() });
  }
  if (dims === 0) throw new ConfigError("search space", "", "has nothing to search (one method, fixed ranks, layers and learning rate)");
  const mobo = { dims, objectives: space.objectives.length, seed, initial: Math.min(opts.trials, initialDesignSize({ dims, ...(opts.initial !== undefined ? { initial: opts.initial } : {}) })) };
  const trials = loadTrials(opts.out);
  const t0 = performance.now();
  const parallel = Math.max(1, opts.parallel ?? 1);
  const inflight = new Map<number, Promise<void>>();
  let ran = 0;

  const history = (): Observation[] => trials.filter((t) => t.status === "done" && t.result).map((t) => ({ x: t.x, y: space.objectives.map((o) => objectiveValue(o, t.result!)) }));
  const launch = (t: TrialRecord) => {
    const spec: SearchTrialSpec = { search: id, index: t.index, model: opts.model, data: opts.data, space, config: t.config, threads: opts.threads ?? null };
    events.proposed?.(t);
    const p = executor.run(spec).then(
      (result) => {
        t.status = "done";
        t.result = result;
      },
      (e: unknown) => {
        t.status = "failed";
        t.error = e instanceof Error ? e.message : String(e);
      },
    );
    inflight.set(
      t.index,
      p.then(() => {
        ran++;
        saveTrial(opts.out, t);
        writeOutputs(opts.out, space, trials, false);
        events.finished?.(t);
        inflight.delete(t.index);
      }),
    );
  };

  // trials an earlier run proposed but did not finish run again (resuming from their checkpoints)
  for (const t of trials) if (t.status === "pending") launch(t);
  const outOfTime = () => opts.timeBudgetSeconds != null && (performance.now() - t0) / 1000 >= opts.timeBudgetSeconds;
  for (;;) {
    while (inflight.size < parallel && trials.length < opts.trials && !outOfTime()) {
      const pending = trials.filter((t) => t.status === "pending").map((t) => t.x);
      const x = proposeNext(history(), pending, mobo, trials.length);
      const config = decodePoint(space, x);
      const t: TrialRecord = { index: trials.length, x, config, label: describeConfig(config), status: "pending" };
      trials.push(t);
      saveTrial(opts.out, t);
      launch(t);
    }
    if (inflight.size === 0) break;
    await Promise.race(inflight.values());
  }
  const { pareto, hv, files } = await writeOutputs(opts.out, space, trials, true);
  return { out: opts.out, trials, pareto, hypervolume: hv, ran, files };
}

function writeOutputs(out: string, space: SearchSpace, trials: readonly TrialRecord[], plot: false): { pareto: ParetoEntry[]; hv: number; files: string[] };
function writeOutputs(out: string, space: SearchSpace, trials: readonly TrialRecord[], plot: true): Promise<{ pareto: ParetoEntry[]; hv: number; files: string[] }>;
function writeOutputs(out: string, space: SearchSpace, trials: readonly TrialRecord[], plot: boolean) {
  const done = trials.filter((t) => t.status === "done" && t.result);
  const ys = done.map((t) => space.objectives.map((o) => objectiveValue(o, t.result!)));
  const front = paretoIndices(ys).map((i) => done[i]!);
  const k = space.objectives.length;
  const lo = Array.from({ length: k }, (_, j) => Math.min(...ys.map((y) => y[j]!)));
  const hi = Array.from({ length: k }, (_, j) => Math.max(...ys.map((y) => y[j]!)));
  const norm = (y: readonly number[]) => y.map((v, j) => (hi[j]! > lo[j]! ? (v - lo[j]!) / (hi[j]! - lo[j]!) : 0));
  const hv = ys.length > 0 ? hypervolume(ys.map(norm), Array.from({ length: k }, () => 1.1)) : 0;
  const pareto: ParetoEntry[] = front.map((t) => {
    const rel = join("pareto", `trial-${pad(t.index)}`, "adapter_config.json");
    return { trial: t.index, label: t.label, config: t.config, metrics: Object.fromEntries(space.objectives.map((o) => [o, reportedValue(o, t.result!)])), adapterConfig: rel };
  });
  for (const p of pareto) {
    const t = trials[p.trial]!;
    const dir = join(out, "pareto", `trial-${pad(p.trial)}`);
    mkdirSync(dir, { recursive: true });
    writeJsonAtomic(join(dir, "adapter_config.json"), t.result!.adapterConfig);
    writeFileAtomic(join(dir, "train.txt"), `# the Pareto config of trial ${p.trial} (${t.label}); the search trained it at low fidelity (${space.fidelity.epochs} epoch(s)${space.fidelity.maxExamples ? `, ${space.fidelity.maxExamples} examples` : ""}), lr ${t.config.lr.toPrecision(3)}\n`);
  }
  const summary = {
    objectives: space.objectives,
    trials: { proposed: trials.length, done: done.length, failed: trials.filter((t) => t.status === "failed").length },
    hypervolume: { value: hv, note: "objectives minimised (1 − accuracy, log10 trainable params, …), scaled to [0, 1] over the finished trials, reference point 1.1 each" },
    pareto,
    all: done.map((t) => ({ trial: t.index, label: t.label, metrics: Object.fromEntries(space.objectives.map((o) => [o, reportedValue(o, t.result!)])) })),
  };
  writeJsonAtomic(join(out, "pareto.json"), summary);
  const files = ["search.json", "pareto.json", ...pareto.map((p) => p.adapterConfig)];
  if (!plot) return { pareto, hv, files };
  return (async () => {
    if (done.length > 0) {
      const { svg, png } = await renderVegaLite(paretoSpec(space, done, new Set(front.map((t) => t.index))));
      writeFileAtomic(join(out, "pareto.svg"), svg);
      writeFileAtomic(join(out, "pareto.png"), png);
      files.push("pareto.svg", "pareto.png");
    }
    return { pareto, hv, files };
  })();
}

/** Scatter of every finished trial (x: trainable parameters, log scale; y: accuracy or loss), the Pareto front as a step line. */
export function paretoSpec(space: SearchSpace, done: readonly TrialRecord[], front: ReadonlySet<number>) {
  const yObj: SearchObjective = space.objectives.includes("accuracy") ? "accuracy" : "loss";
  const values = done.map((t) => ({ trial: t.index, label: t.label, method: t.config.method, params: t.result!.trainableParams, y: reportedValue(yObj, t.result!), pareto: front.has(t.index) }));
  const frontValues = values.filter((v) => v.pareto).sort((a, b) => a.params - b.params);
  return {
    $schema: "https://vega.github.io/schema/vega-lite/v6.json",
    title: `peft search: ${done.length} trials, ${frontValues.length} on the Pareto front`,
    width: 560,
    height: 320,
    layer: [
      { data: { values: frontValues }, mark: { type: "line", interpolate: yObj === "accuracy" ? "step-after" : "step-after", color: "#888" }, encoding: { x: { field: "params", type: "quantitative", scale: { type: "log" } }, y: { field: "y", type: "quantitative" } } },
      {
        data: { values },
        mark: { type: "point", filled: true, size: 70 },
        encoding: {
          x: { field: "params", type: "quantitative", title: "trainable parameters", scale: { type: "log" } },
          y: { field: "y", type: "quantitative", title: `validation ${yObj}`, scale: { zero: false } },
          color: { field: "method", type: "nominal" },
          shape: { field: "pareto", type: "nominal", title: "Pareto" },
          tooltip: [{ field: "label" }, { field: "trial" }],
        },
      },
    ],
  };
}
