/** The plain-text summary `peft atlas` prints. */
import { formatSeconds } from "../train/progress.js";
import type { AtlasRunResult, AtlasSplitMetrics } from "../../runs/atlas/run.js";

function pad(label: string): string {
  return label.padEnd(13);
}

function change(before: AtlasSplitMetrics | null, after: AtlasSplitMetrics | null): string | null {
  if (!before || !after) return null;
  return `accuracy ${before.accuracy.toFixed(4)} → ${after.accuracy.toFixed(4)}  loss ${before.loss.toFixed(4)} → ${after.loss.toFixed(4)}  (${after.examples} examples; λ = 0 → fitted)`;
}

export function formatAtlasSummary(r: AtlasRunResult): string {
  const m = r.metrics;
  const lines = [`${pad("run")}${r.out}`, `${pad("aTLAS")}${m.mode}, ${m.objective}: ${m.coefficientCount} coefficients over ${m.taskVectorParams.toLocaleString("en-US")} task-vector parameters`];
  const v = change(m.base.validation, m.fitted.validation);
  if (v) lines.push(`${pad("validation")}${v}`);
  const t = change(m.base.test, m.fitted.test);
  if (t) lines.push(`${pad("test")}${t}`);
  for (const c of m.coefficients) {
    const range = c.blocks > 1 ? ` (min ${c.min.toFixed(3)}, max ${c.max.toFixed(3)} over ${c.blocks} blocks)` : "";
    lines.push(`${pad("λ")}${c.name}: mean ${c.mean.toFixed(3)}${range}`);
  }
  lines.push(`${pad("fit")}${m.steps} steps on ${m.trainExamples} examples in ${formatSeconds(m.fitSeconds)}${m.bestEpoch !== null ? `; best epoch ${m.bestEpoch}` : ""}`);
  lines.push(`${pad("files")}${r.files.join(", ")}`);
  return lines.join("\n");
}
