/** Plain-text summaries printed by `peft train` and `peft eval`. */
import type { SplitMetrics, TrainRunResult } from "../../runs/train.js";
import { formatSeconds } from "./progress.js";

/** `accuracy 0.9233  f1 0.9231  loss 0.2178  (300 examples)`, or loss/perplexity for LM. */
export function formatSplitMetrics(m: SplitMetrics): string {
  const parts: string[] = [];
  if (m.accuracy !== undefined) parts.push(`accuracy ${m.accuracy.toFixed(4)}`);
  if (m.f1 !== undefined) parts.push(`f1 ${m.f1.toFixed(4)}`);
  parts.push(`loss ${m.loss.toFixed(4)}`);
  if (m.perplexity !== undefined) parts.push(`perplexity ${m.perplexity.toFixed(3)}`);
  return `${parts.join("  ")}  (${m.examples} examples)`;
}

function pad(label: string): string {
  return label.padEnd(11);
}

export function formatTrainSummary(r: TrainRunResult): string {
  const m = r.metrics;
  const lines = [
    `${pad("run")}${r.out}`,
    `${pad("trainable")}${m.trainableParams.toLocaleString("en-US")} of ${m.allParams.toLocaleString("en-US")} params (${(100 * m.trainableFraction).toFixed(3)}%)`,
  ];
  if (m.validation) lines.push(`${pad("validation")}${formatSplitMetrics(m.validation)}`);
  if (m.test) lines.push(`${pad("test")}${formatSplitMetrics(m.test)}`);
  if (m.best) lines.push(`${pad("best")}step ${m.best.step}${m.stoppedEarly ? " (stopped early)" : ""}`);
  lines.push(
    `${pad("training")}${m.steps} steps (${m.epochs.toFixed(2)} epochs) in ${formatSeconds(m.fitSeconds)}; ${m.sentencesPerSecond.toFixed(1)} sentences/s, ${m.achievedGflops.toFixed(1)} GFLOP/s (matmul)`,
  );
  lines.push(`${pad("files")}${r.files.join(", ")}`);
  return lines.join("\n");
}
