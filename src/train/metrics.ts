/**
 * Evaluation metrics with scikit-learn's definitions (what HF `evaluate` reports):
 * accuracy, per-class precision/recall/F1, macro F1, the confusion matrix, and perplexity.
 *
 * - Classes averaged by `macroF1` are, as in `sklearn.metrics.f1_score(average="macro")`, the
 *   labels that occur in the predictions or the references; with `numLabels` given, all of
 *   0..numLabels−1 (like passing `labels=range(numLabels)`).
 * - A precision, recall or F1 whose denominator is 0 counts as 0 (`zero_division=0`).
 * - F1 is 2·tp / (2·tp + fp + fn).
 */
import { ConfigError, ShapeMismatchError } from "../errors.js";

export interface ClassScores {
  readonly label: number;
  readonly precision: number;
  readonly recall: number;
  readonly f1: number;
  /** Number of references with this label. */
  readonly support: number;
}

export interface ClassificationReport {
  readonly accuracy: number;
  readonly macroF1: number;
  readonly perClass: readonly ClassScores[];
  /** `confusion[trueLabel][predictedLabel]`, numLabels × numLabels. */
  readonly confusion: number[][];
}

export interface MetricOptions {
  /** Number of classes; labels must be below it. Default: the largest label seen + 1. */
  readonly numLabels?: number;
}

function check(preds: ArrayLike<number>, labels: ArrayLike<number>, numLabels?: number): number {
  if (preds.length !== labels.length) {
    throw new ShapeMismatchError("predictions", [labels.length], [preds.length], "one prediction per reference label");
  }
  if (labels.length === 0) throw new ConfigError("metrics", "labels", "no examples to score");
  if (numLabels !== undefined && (!Number.isSafeInteger(numLabels) || numLabels < 1)) {
    throw new ConfigError("metrics", "numLabels", `must be a positive integer, got ${numLabels}`);
  }
  let max = -1;
  for (const [what, arr] of [
    ["predictions", preds],
    ["labels", labels],
  ] as const) {
    for (let i = 0; i < arr.length; i++) {
      const v = arr[i]!;
      if (!Number.isSafeInteger(v) || v < 0 || (numLabels !== undefined && v >= numLabels)) {
        const range = numLabels !== undefined ? ` below ${numLabels}` : "";
        throw new ConfigError("metrics", `${what}[${i}]`, `must be a non-negative integer class id${range}, got ${v}`);
      }
      if (v > max) max = v;
    }
  }
  return numLabels ?? max + 1;
}

/** Fraction of predictions equal to the reference. */
export function accuracy(preds: ArrayLike<number>, labels: ArrayLike<number>): number {
  check(preds, labels);
  let hit = 0;
  for (let i = 0; i < labels.length; i++) if (preds[i] === labels[i]) hit++;
  return hit / labels.length;
}

/** `confusion[trueLabel][predictedLabel]` counts. */
export function confusionMatrix(preds: ArrayLike<number>, labels: ArrayLike<number>, options: MetricOptions = {}): number[][] {
  const k = check(preds, labels, options.numLabels);
  const m = Array.from({ length: k }, () => new Array<number>(k).fill(0));
  for (let i = 0; i < labels.length; i++) m[labels[i]!]![preds[i]!]!++;
  return m;
}

function ratio(a: number, b: number): number {
  return b === 0 ? 0 : a / b;
}

function scoresFrom(confusion: number[][], classes: readonly number[]): ClassScores[] {
  const k = confusion.length;
  return classes.map((c) => {
    const tp = confusion[c]![c]!;
    let support = 0;
    let predicted = 0;
    for (let j = 0; j < k; j++) {
      support += confusion[c]![j]!;
      predicted += confusion[j]![c]!;
    }
    const fp = predicted - tp;
    const fn = support - tp;
    return { label: c, precision: ratio(tp, predicted), recall: ratio(tp, support), f1: ratio(2 * tp, 2 * tp + fp + fn), support };
  });
}

/** The classes `macroF1` averages over (see the module comment). */
function averagedClasses(confusion: number[][], numLabels: number | undefined): number[] {
  const k = confusion.length;
  const all = Array.from({ length: k }, (_, c) => c);
  if (numLabels !== undefined) return all;
  // In the references (row c) or in the predictions (column c).
  return all.filter((c) => confusion[c]!.some((v) => v > 0) || confusion.some((row) => row[c]! > 0));
}

/** Precision, recall, F1 and support of each averaged class, in label order. */
export function perClassScores(preds: ArrayLike<number>, labels: ArrayLike<number>, options: MetricOptions = {}): ClassScores[] {
  const confusion = confusionMatrix(preds, labels, options);
  return scoresFrom(confusion, averagedClasses(confusion, options.numLabels));
}

/** Unweighted mean of the per-class F1 scores. */
export function macroF1(preds: ArrayLike<number>, labels: ArrayLike<number>, options: MetricOptions = {}): number {
  const scores = perClassScores(preds, labels, options);
  return scores.reduce((s, c) => s + c.f1, 0) / scores.length;
}

/** Accuracy, macro F1, per-class scores and the confusion matrix in one pass. */
export function classificationReport(preds: ArrayLike<number>, labels: ArrayLike<number>, options: MetricOptions = {}): ClassificationReport {
  const confusion = confusionMatrix(preds, labels, options);
  const perClass = scoresFrom(confusion, averagedClasses(confusion, options.numLabels));
  let hit = 0;
  confusion.forEach((row, c) => (hit += row[c]!));
  return {
    accuracy: hit / labels.length,
    macroF1: perClass.reduce((s, c) => s + c.f1, 0) / perClass.length,
    perClass,
    confusion,
  };
}

/**
 * exp(mean cross-entropy in nats), as HF scripts compute it: Infinity when it overflows (their
 * `OverflowError` case), NaN for a NaN loss.
 */
export function perplexity(meanLoss: number): number {
  return Math.exp(meanLoss);
}

/** Row-wise argmax of `[n, numLabels]` logits (first maximum wins, as `torch.argmax`/`numpy.argmax`). */
export function argmaxRows(logits: ArrayLike<number>, numLabels: number): Int32Array {
  if (!Number.isSafeInteger(numLabels) || numLabels < 1 || logits.length % numLabels !== 0) {
    throw new ShapeMismatchError("logits", ["n", numLabels], [logits.length], "flat row-major logits");
  }
  const n = logits.length / numLabels;
  const out = new Int32Array(n);
  for (let r = 0; r < n; r++) {
    let best = 0;
    let bestV = logits[r * numLabels]!;
    for (let c = 1; c < numLabels; c++) {
      const v = logits[r * numLabels + c]!;
      if (v > bestV || (Number.isNaN(v) && !Number.isNaN(bestV))) {
        best = c;
        bestV = v;
      }
    }
    out[r] = best;
  }
  return out;
}
