/**
 * Seeded, stratified train/validation/test split.
 *
 * Algorithm (`stratified-swrr-v1`, fully determined by the labels, the seed and the fractions):
 * 1. Split sizes: `floor(N·f)` per split, then the few left-over examples go to the splits
 *    with the largest fractional remainders (ties: train, validation, test), so the sizes add
 *    up to N exactly.
 * 2. The indices of each class (classes in ascending label order) are shuffled with one
 *    `Rng(seed)` (Fisher–Yates, class 0 first) and concatenated.
 * 3. Walking that list, position i goes to the split chosen by smooth weighted round-robin with
 *    the split sizes as weights. That spreads every split evenly over the list, so each class
 *    gets its share of each split within one example, and the split sizes are exact.
 * 4. Each split's indices are returned in ascending order (a trainer shuffles per epoch).
 *
 * `SplitInfo` (seed, fractions, counts, per-class counts and a SHA-256 of the index lists) goes
 * into a run's metadata so a resumed or repeated run can check it sees the same split.
 */
import { sha256Hex } from "../platform/crypto.js";
import { ConfigError } from "../errors.js";
import { Rng } from "../util/rng.js";

export const SPLIT_NAMES = ["train", "validation", "test"] as const;
export type SplitName = (typeof SPLIT_NAMES)[number];

export interface SplitOptions {
  readonly seed: number;
  readonly train: number;
  /** Default 0. */
  readonly validation?: number;
  /** Default 0. The three fractions must add up to 1. */
  readonly test?: number;
}

export interface SplitInfo {
  readonly algorithm: "stratified-swrr-v1";
  readonly seed: number;
  readonly numExamples: number;
  readonly fractions: Record<SplitName, number>;
  readonly counts: Record<SplitName, number>;
  /** `labelCounts.train[c]`: examples of class c in the train split. */
  readonly labelCounts: Record<SplitName, number[]>;
  /** `hashSplit(train, validation, test)`: SHA-256 hex of the three index lists. */
  readonly hash: string;
}

export interface DatasetSplit {
  readonly train: number[];
  readonly validation: number[];
  readonly test: number[];
  readonly info: SplitInfo;
}

/** SHA-256 (hex) of the index lists, as the UTF-8 of `train:i,j,…;validation:…;test:…`. */
export function hashSplit(train: readonly number[], validation: readonly number[], test: readonly number[]): string {
  return sha256Hex(`train:${train.join(",")};validation:${validation.join(",")};test:${test.join(",")}`);
}

function splitSizes(n: number, fractions: readonly number[]): number[] {
  const raw = fractions.map((f) => n * f);
  const sizes = raw.map((r) => Math.floor(r + 1e-9));
  let left = n - sizes.reduce((a, b) => a + b, 0);
  const order = [0, 1, 2]
    .filter((s) => fractions[s]! > 0)
    .sort((a, b) => raw[b]! - sizes[b]! - (raw[a]! - sizes[a]!) || a - b);
  for (let k = 0; left > 0 && order.length > 0; k = (k + 1) % order.length, left--) sizes[order[k]!]!++;
  // Floating error could overshoot by one at most; take it back from the largest split.
  while (left < 0) {
    const big = sizes.indexOf(Math.max(...sizes));
    sizes[big]!--;
    left++;
  }
  return sizes;
}

export function splitDataset(examples: readonly { readonly label: number }[], options: SplitOptions): DatasetSplit {
  const where = "splitDataset options";
  const fractions = [options.train, options.validation ?? 0, options.test ?? 0];
  fractions.forEach((f, s) => {
    if (!Number.isFinite(f) || f < 0 || f > 1) {
      throw new ConfigError(where, SPLIT_NAMES[s]!, `fraction must be a number in [0, 1], got ${f}`);
    }
  });
  const total = fractions[0]! + fractions[1]! + fractions[2]!;
  if (Math.abs(total - 1) > 1e-6) {
    throw new ConfigError(where, "train", `train + validation + test must be 1, got ${total}`);
  }
  if (!Number.isSafeInteger(options.seed) || options.seed < 0) {
    throw new ConfigError(where, "seed", `seed must be a non-negative integer, got ${options.seed}`);
  }

  const byClass = new Map<number, number[]>();
  examples.forEach((ex, i) => {
    if (!Number.isSafeInteger(ex.label) || ex.label < 0) {
      throw new ConfigError(where, `examples[${i}].label`, `label must be a non-negative integer class id, got ${ex.label}`);
    }
    const list = byClass.get(ex.label);
    if (list) list.push(i);
    else byClass.set(ex.label, [i]);
  });
  const rng = new Rng(options.seed);
  const ordered: number[] = [];
  for (const label of [...byClass.keys()].sort((a, b) => a - b)) ordered.push(...rng.shuffle(byClass.get(label)!));

  const n = examples.length;
  const sizes = splitSizes(n, fractions);
  const out: number[][] = [[], [], []];
  const current = [0, 0, 0];
  for (const idx of ordered) {
    let pick = 0;
    for (let s = 0; s < 3; s++) {
      current[s]! += sizes[s]!;
      if (current[s]! > current[pick]!) pick = s;
    }
    current[pick]! -= n;
    out[pick]!.push(idx);
  }
  const [train, validation, test] = out.map((l) => l.sort((a, b) => a - b)) as [number[], number[], number[]];

  const numLabels = byClass.size === 0 ? 0 : Math.max(...byClass.keys()) + 1;
  const labelCounts = (list: number[]): number[] => {
    const c = new Array<number>(numLabels).fill(0);
    for (const i of list) c[examples[i]!.label]!++;
    return c;
  };
  const info: SplitInfo = {
    algorithm: "stratified-swrr-v1",
    seed: options.seed,
    numExamples: n,
    fractions: { train: fractions[0]!, validation: fractions[1]!, test: fractions[2]! },
    counts: { train: train.length, validation: validation.length, test: test.length },
    labelCounts: { train: labelCounts(train), validation: labelCounts(validation), test: labelCounts(test) },
    hash: hashSplit(train, validation, test),
  };
  return { train, validation, test, info };
}
