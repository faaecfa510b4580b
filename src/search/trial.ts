/**
 * One search trial: a low-fidelity `peft train` run of a decoded configuration (the space's
 * epochs and example cap), returning the objectives. A trial folder that already holds a finished
 * run gives its result without training again; one with a checkpoint resumes from it.
 */
import { existsSync } from "node:fs";
import { join } from "node:path";
import { readJsonObject } from "../io/json-file.js";
import { DEFAULT_SPLIT } from "../runs/data.js";
import type { RunReporter } from "../runs/reporter.js";
import { RUN_FILES } from "../runs/run-dir.js";
import { TRAIN_DEFAULTS, type TrainMetrics, type TrainRunOptions, runTraining } from "../runs/train.js";
import type { TargetSpec } from "../tuners/common/target.js";
import { type SearchSpace, type TrialConfig, trialTraining } from "./space.js";

/** Everything a trial needs (JSON: it travels as a queue job's data). */
export interface SearchTrialSpec {
  /** The search's id (names its queue jobs). */
  readonly search: string;
  readonly index: number;
  readonly model: string;
  readonly data: string;
  readonly space: SearchSpace;
  readonly config: TrialConfig;
  readonly threads: number | null;
}

export interface SearchTrialResult {
  readonly index: number;
  /** Validation accuracy (null for language-model tasks). */
  readonly accuracy: number | null;
  readonly loss: number;
  readonly trainableParams: number;
  readonly allParams: number;
  /** Seconds per optimizer step. */
  readonly stepSeconds: number;
  readonly steps: number;
  /** The trained adapter's adapter_config.json (ready to train again at full fidelity). */
  readonly adapterConfig: Record<string, unknown>;
}

export function trialRunOptions(spec: SearchTrialSpec, out: string): TrainRunOptions {
  const t = trialTraining(spec.space, spec.config);
  const spec_ = (xs: readonly string[] | string | null): TargetSpec | null => (typeof xs === "string" ? { kind: "regex", pattern: xs } : xs && xs.length > 0 ? { kind: "names", names: xs } : null);
  return {
    model: spec.model,
    data: spec.data,
    out,
    method: t.method,
    r: t.r,
    alpha: t.alpha,
    dropout: 0,
    target: spec_(t.target),
    feedforward: t.method === "ia3" ? (spec_(t.feedforward) ?? { kind: "names", names: [] }) : null,
    numVirtualTokens: t.numVirtualTokens,
    adapterConfig: t.adapterConfig,
    epochs: spec.space.fidelity.epochs,
    lr: spec.config.lr,
    batchSize: spec.space.train.batchSize,
    seed: spec.space.train.seed,
    weightDecay: TRAIN_DEFAULTS.weightDecay,
    warmupRatio: TRAIN_DEFAULTS.warmupRatio,
    schedule: TRAIN_DEFAULTS.schedule,
    gradAccum: 1,
    maxGradNorm: TRAIN_DEFAULTS.maxGradNorm,
    evalEvery: null,
    patience: null,
    maxLength: spec.space.train.maxLength,
    threads: spec.threads,
    maxExamples: spec.space.fidelity.maxExamples,
    maxSteps: null,
    split: DEFAULT_SPLIT,
    mode: existsSync(join(out, RUN_FILES.config)) ? "resume" : "new",
    plot: false,
  };
}

function resultOf(index: number, out: string, m: TrainMetrics): SearchTrialResult {
  const v = m.validation ?? m.test;
  return {
    index,
    accuracy: v?.accuracy ?? null,
    loss: v?.loss ?? Number.NaN,
    trainableParams: m.trainableParams,
    allParams: m.allParams,
    stepSeconds: m.steps > 0 ? m.trainSeconds / m.steps : 0,
    steps: m.steps,
    adapterConfig: readJsonObject(join(out, RUN_FILES.adapterConfig)),
  };
}

/** Runs (or resumes, or reads back) the trial in the run folder `out`. */
export async function runSearchTrial(spec: SearchTrialSpec, out: string, reporter?: RunReporter): Promise<SearchTrialResult> {
  const metricsFile = join(out, RUN_FILES.metrics);
  if (existsSync(metricsFile) && existsSync(join(out, RUN_FILES.adapterConfig))) return resultOf(spec.index, out, readJsonObject(metricsFile) as unknown as TrainMetrics);
  const r = await runTraining(trialRunOptions(spec, out), reporter);
  await r.model.dispose();
  return resultOf(spec.index, out, r.metrics);
}
