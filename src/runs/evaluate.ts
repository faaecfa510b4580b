/**
 * `peft eval`: an adapter's loss and accuracy / macro-F1 (classification) or loss and perplexity
 * (causal LM) on one split of a dataset. When the adapter folder is a `peft train` run, its
 * config.json supplies the model, the label ids, the truncation and the split (seed and
 * fractions), so `--split test` is exactly the run's held-out test set (checked by the split hash).
 */
import { existsSync } from "node:fs";
import { join } from "node:path";
import { ConfigError, MissingFileError } from "../errors.js";
import type { SplitName } from "../data/split.js";
import { readJsonObject } from "../io/json-file.js";
import { PeftModel } from "../peft/peft-model.js";
import { evaluateModel } from "../train/evaluate.js";
import { DEFAULT_SPLIT, type SplitFractions, loadRunData, tokenizeExamples } from "./data.js";
import { openModelSource } from "./model-source.js";
import { RUN_FILES } from "./run-dir.js";

export type EvalSplit = SplitName | "all";

export interface EvalRunOptions {
  readonly adapter: string;
  readonly data: string;
  /** Default: the run's model (from the adapter folder's config.json). */
  readonly model?: string;
  readonly split: EvalSplit;
  readonly batchSize: number;
  readonly threads?: number;
  readonly maxLength?: number;
  /** Split seed and fractions when the folder is not a run of this dataset (defaults 0 and 0.8/0.1/0.1). */
  readonly seed?: number;
  readonly fractions?: SplitFractions;
}

export interface EvalReport {
  readonly adapter: string;
  readonly model: string;
  readonly data: string;
  readonly split: EvalSplit;
  readonly task: "seq-cls" | "causal-lm";
  readonly examples: number;
  readonly loss: number;
  readonly accuracy?: number;
  readonly f1?: number;
  readonly perplexity?: number;
  /** SHA-256 of the split's index lists (equal to the run's when it is the run's split). */
  readonly splitHash: string;
  readonly seconds: number;
}

/** What a `peft train` run folder's config.json records (options, label names, split). */
export interface SavedRun {
  readonly options: Record<string, unknown>;
  readonly labelNames?: string[];
  readonly splitHash?: string;
  readonly dataName?: string;
}

/** The run recorded in `dir/config.json`, or null when `dir` is not a `peft train` run folder. */
export function readRun(adapter: string): SavedRun | null {
  const file = join(adapter, RUN_FILES.config);
  if (!existsSync(file)) return null;
  const raw = readJsonObject(file);
  const options = raw.options;
  if (typeof options !== "object" || options === null) return null; // a model config.json, not a run
  const ds = raw.dataset as { labelNames?: unknown; name?: unknown } | undefined;
  const split = raw.split as { hash?: unknown } | undefined;
  return {
    options: options as Record<string, unknown>,
    ...(Array.isArray(ds?.labelNames) ? { labelNames: ds.labelNames as string[] } : {}),
    ...(typeof ds?.name === "string" ? { dataName: ds.name } : {}),
    ...(typeof split?.hash === "string" ? { splitHash: split.hash } : {}),
  };
}

const num = (v: unknown): number | undefined => (typeof v === "number" ? v : undefined);

/** Runs `peft eval`: the adapter's loss and metrics on one split (the run's own split when the folder is a run of this dataset). */
export async function runEvaluation(opts: EvalRunOptions): Promise<EvalReport> {
  const t0 = performance.now();
  const command = "peft eval";
  if (!existsSync(join(opts.adapter, RUN_FILES.adapterConfig))) {
    throw new MissingFileError(join(opts.adapter, RUN_FILES.adapterConfig), "--adapter takes a PEFT adapter folder (adapter_config.json + adapter_model.safetensors), e.g. the --out of peft train");
  }
  const run = readRun(opts.adapter);
  const model = opts.model ?? (typeof run?.options.model === "string" ? run.options.model : undefined);
  if (!model) throw new ConfigError(command, "--model", `${opts.adapter} is not a peft train run folder, so the base model is unknown; pass --model`);
  const sameData = run !== null && run.options.data === opts.data;
  const seed = opts.seed ?? (sameData ? num(run.options.seed) : undefined) ?? 0;
  const savedSplit = sameData ? (run.options.split as SplitFractions | undefined) : undefined;
  const fractions = opts.fractions ?? savedSplit ?? DEFAULT_SPLIT;
  const maxExamples = sameData ? num(run.options.maxExamples) : undefined;
  const data = loadRunData({
    data: opts.data,
    seed,
    fractions,
    command,
    ...(maxExamples !== undefined ? { maxExamples } : {}),
    ...(run?.labelNames ? { labelNames: run.labelNames } : {}),
  });
  if (sameData && opts.seed === undefined && opts.fractions === undefined && run.splitHash && run.splitHash !== data.split.info.hash) {
    throw new ConfigError(command, "--data", `${opts.data} no longer gives the run's split (hash ${run.splitHash} vs ${data.split.info.hash}): the dataset changed since training`);
  }
  const maxLength = opts.maxLength ?? num(run?.options.maxLength);
  const source = openModelSource(model, { numLabels: data.dataset.numLabels, seed, command, ...(maxLength !== undefined ? { maxLength } : {}) });
  const indices = opts.split === "all" ? data.examples.map((_, i) => i) : data.split[opts.split];
  if (indices.length === 0) throw new ConfigError(command, "--split", `the ${opts.split} split of ${opts.data} is empty; pick another split or 'all'`);
  const examples = tokenizeExamples(data.examples, indices, (t) => source.encode(t));
  // loaded as trainable so the adapter tensors are inputs of the (gradient-free) loss graph, as in training evaluation
  const pm = PeftModel.fromPretrained(source.model, opts.adapter, { isTrainable: true });
  try {
    const r = await evaluateModel(pm, examples, { task: source.task, batchSize: opts.batchSize, padId: source.padId, session: opts.threads !== undefined ? { threads: opts.threads } : {} });
    return {
      adapter: opts.adapter,
      model,
      data: opts.data,
      split: opts.split,
      task: source.task,
      examples: examples.length,
      ...r,
      splitHash: data.split.info.hash,
      seconds: (performance.now() - t0) / 1000,
    };
  } finally {
    await pm.dispose();
  }
}
