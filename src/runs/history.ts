/**
 * A run's history (history.json): the training loss per optimizer step and every evaluation.
 * Kept across `--resume` (entries past the checkpoint are replaced by the resumed run's) and
 * turned into the series of the curves chart.
 */
import { existsSync } from "node:fs";
import { ConfigError } from "../errors.js";
import { readJsonObject } from "../io/json-file.js";
import type { EvalResult } from "../train/trainer.js";
import type { CurveData, CurvePoint } from "./plot.js";

export interface HistoryStep {
  readonly step: number;
  readonly epoch: number;
  readonly loss: number;
  readonly lr: number;
}

/** One evaluation as the trainer reports it (`EvalResult` at a step and epoch). */
export type HistoryEval = EvalResult & { readonly step: number; readonly epoch: number };

export interface RunHistory {
  steps: HistoryStep[];
  evals: HistoryEval[];
}

/** Reads history.json (an absent file is an empty history: the run stopped before its first evaluation). */
export function readHistory(file: string): RunHistory {
  if (!existsSync(file)) return { steps: [], evals: [] };
  const raw = readJsonObject(file);
  if (!Array.isArray(raw.steps) || !Array.isArray(raw.evals)) throw new ConfigError(file, "steps/evals", "must be arrays; delete the file to start the history afresh");
  return { steps: raw.steps as HistoryStep[], evals: raw.evals as HistoryEval[] };
}

/**
 * Appends new entries. An entry at a step the history already has (or before it) means the run
 * was resumed from an earlier checkpoint: the old entries from that step on are dropped first.
 */
export function mergeHistory(h: RunHistory, add: { steps: readonly HistoryStep[]; evals: readonly HistoryEval[] }): void {
  for (const s of add.steps) {
    if (h.steps.length > 0 && h.steps[h.steps.length - 1]!.step >= s.step) {
      h.steps = h.steps.filter((x) => x.step < s.step);
      h.evals = h.evals.filter((x) => x.step < s.step);
    }
    h.steps.push(s);
  }
  for (const e of add.evals) {
    h.evals = h.evals.filter((x) => x.step !== e.step);
    h.evals.push(e);
  }
}

/** Centred moving average over `window` points (shorter at the ends). */
export function movingAverage(values: readonly number[], window: number): number[] {
  const half = Math.floor(window / 2);
  return values.map((_, i) => {
    const lo = Math.max(0, i - half);
    const hi = Math.min(values.length, i + half + 1);
    let s = 0;
    for (let j = lo; j < hi; j++) s += values[j]!;
    return s / (hi - lo);
  });
}

/**
 * The chart series: train loss per step and its moving average (window ≈ 1/40 of the run),
 * validation loss, and validation accuracy/F1 or perplexity.
 */
export function curveData(h: RunHistory, task: "seq-cls" | "causal-lm", title: string): CurveData {
  const loss: CurvePoint[] = h.steps.map((s) => ({ step: s.step, value: s.loss, series: "train loss" }));
  const smooth = movingAverage(
    h.steps.map((s) => s.loss),
    Math.max(1, Math.round(h.steps.length / 40)),
  );
  h.steps.forEach((s, i) => loss.push({ step: s.step, value: smooth[i]!, series: "train loss (smoothed)" }));
  for (const e of h.evals) loss.push({ step: e.step, value: e.loss, series: "validation loss" });
  const metrics: CurvePoint[] = [];
  for (const e of h.evals) {
    if (task === "seq-cls") {
      if (e.accuracy !== undefined) metrics.push({ step: e.step, value: e.accuracy, series: "accuracy" });
      if (e.f1 !== undefined) metrics.push({ step: e.step, value: e.f1, series: "macro F1" });
    } else if (e.perplexity !== undefined) metrics.push({ step: e.step, value: e.perplexity, series: "perplexity" });
  }
  return { loss, metrics, title };
}
