/**
 * Data for a run: load a dataset by name or file, optionally keep a stratified subset
 * (`--max-examples`), split it (seeded, stratified) and tokenise each split for a model.
 */
import { ConfigError } from "../errors.js";
import { loadDataset } from "../data/registry.js";
import { type DatasetSplit, type SplitName, splitDataset } from "../data/split.js";
import type { Dataset, Example } from "../data/types.js";
import type { TokenizedExample } from "../train/trainer.js";

/** Train / validation / test fractions (they add up to 1). */
export interface SplitFractions {
  readonly train: number;
  readonly validation: number;
  readonly test: number;
}

export const DEFAULT_SPLIT: SplitFractions = { train: 0.8, validation: 0.1, test: 0.1 };

export interface RunData {
  readonly dataset: Dataset;
  /** The examples the run uses (all of the dataset, or the `maxExamples` subset). */
  readonly examples: readonly Example[];
  /** Indices into `examples`. */
  readonly split: DatasetSplit;
  /** Size of the whole dataset, before any subset. */
  readonly totalExamples: number;
}

export interface RunDataOptions {
  readonly data: string;
  readonly seed: number;
  readonly fractions?: SplitFractions;
  /** Keep a stratified, seeded subset of this many examples before splitting. */
  readonly maxExamples?: number;
  /** Fix the label vocabulary (an evaluation file gets the training run's label ids). */
  readonly labelNames?: readonly string[];
  readonly command?: string;
}

/** Parses `0.8,0.1,0.1` (train, validation, test; validation and test may be omitted). */
export function parseSplitFractions(spec: string, command = "peft train", option = "--split"): SplitFractions {
  const parts = spec.split(",").map((s) => s.trim());
  const nums = parts.map(Number);
  if (parts.length < 1 || parts.length > 3 || nums.some((x, i) => parts[i] === "" || !Number.isFinite(x) || x < 0 || x > 1)) {
    throw new ConfigError(command, option, `expected up to three fractions 'train,validation,test' in [0, 1] such as 0.8,0.1,0.1, got '${spec}'`);
  }
  const [train = 0, validation = 0, test = 0] = nums;
  const sum = train + validation + test;
  if (Math.abs(sum - 1) > 1e-6) throw new ConfigError(command, option, `the fractions must add up to 1, got ${sum} from '${spec}'`);
  if (train <= 0) throw new ConfigError(command, option, `the train fraction must be positive, got '${spec}'`);
  return { train, validation, test };
}

/** Loads, subsets and splits the data of a run. */
export function loadRunData(opts: RunDataOptions): RunData {
  const command = opts.command ?? "peft train";
  const dataset = loadDataset(opts.data, opts.labelNames ? { labelNames: opts.labelNames } : {});
  let examples: readonly Example[] = dataset.examples;
  if (opts.maxExamples !== undefined && opts.maxExamples < examples.length) {
    if (opts.maxExamples < 2) throw new ConfigError(command, "--max-examples", `must be at least 2, got ${opts.maxExamples}`);
    const keep = opts.maxExamples / examples.length;
    const sub = splitDataset(examples, { seed: opts.seed, train: keep, validation: 1 - keep });
    examples = sub.train.map((i) => examples[i]!);
  }
  const f = opts.fractions ?? DEFAULT_SPLIT;
  const split = splitDataset(examples, { seed: opts.seed, train: f.train, validation: f.validation, test: f.test });
  if (split.train.length === 0) throw new ConfigError(command, "--split", `the train split of ${opts.data} is empty (${examples.length} examples)`);
  return { dataset, examples, split, totalExamples: dataset.examples.length };
}

/** Token ids (and labels) of some examples. */
export function tokenizeExamples(examples: readonly Example[], indices: readonly number[], encode: (text: string) => number[]): TokenizedExample[] {
  return indices.map((i) => {
    const e = examples[i]!;
    return { ids: encode(e.text), label: e.label };
  });
}

/** The three splits tokenised. */
export function tokenizeSplits(data: RunData, encode: (text: string) => number[]): Record<SplitName, TokenizedExample[]> {
  return {
    train: tokenizeExamples(data.examples, data.split.train, encode),
    validation: tokenizeExamples(data.examples, data.split.validation, encode),
    test: tokenizeExamples(data.examples, data.split.test, encode),
  };
}

/** Real (unpadded) tokens in some examples. */
export function countTokens(examples: readonly TokenizedExample[]): number {
  return examples.reduce((s, e) => s + e.ids.length, 0);
}
