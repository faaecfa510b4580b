/** Markdown tables of the aTLAS experiment's results.json (pasted into docs/atlas.md). */

type Summary = { perTask: Record<string, number>; avg: number; normAvg: number | null; lambda?: number; seconds?: number; selection?: { before: { pairs: number; parameters: number }; after: { pairs: number; parameters: number } } | null };

const pct = (x: number | null | undefined): string => (x === null || x === undefined || Number.isNaN(x) ? "–" : (100 * x).toFixed(1));

function mean(xs: readonly number[]): number {
  return xs.reduce((s, x) => s + x, 0) / xs.length;
}

function std(xs: readonly number[]): number {
  const m = mean(xs);
  return Math.sqrt(xs.reduce((s, x) => s + (x - m) ** 2, 0) / Math.max(1, xs.length - 1));
}

const LABELS: Record<string, string> = {
  zeroshot: "zero-shot heads (λ = 0)",
  finetuned: "fine-tuned, each task alone (LoRA → ΔW)",
  task_arithmetic: "task arithmetic",
  ties: "TIES (density 0.2)",
  pcb: "PCB (ratio 0.1)",
  atlas_isotropic: "aTLAS isotropic (λ ∈ R^T)",
  atlas_anisotropic: "aTLAS anisotropic (λ ∈ R^{T×B})",
  atlas_anisotropic_25pct_blocks: "aTLAS anisotropic, 25 % of blocks (gradient selection)",
};

export function formatReport(results: Record<string, unknown>): string {
  const lines: string[] = [];
  const mt = results.multitask as Record<string, Summary> | undefined;
  if (mt) {
    const tasks = Object.keys(mt.finetuned?.perTask ?? mt.zeroshot?.perTask ?? {});
    lines.push("| method | " + tasks.join(" | ") + " | avg | normalised avg | λ / notes |");
    lines.push("|---|" + tasks.map(() => "---:").join("|") + "|---:|---:|---|");
    for (const [k, label] of Object.entries(LABELS)) {
      const s = mt[k];
      if (!s) continue;
      const note = s.lambda !== undefined ? `λ = ${s.lambda}` : s.selection ? `${s.selection.after.pairs}/${s.selection.before.pairs} pairs, ${(s.selection.after.parameters / 1e6).toFixed(2)}M/${(s.selection.before.parameters / 1e6).toFixed(2)}M τ params` : "";
      lines.push(`| ${label} | ${tasks.map((t) => pct(s.perTask[t])).join(" | ")} | ${pct(s.avg)} | ${pct(s.normAvg)} | ${note} |`);
    }
    lines.push("");
  }
  const fs = results.fewshot as Record<string, Record<string, { atlas: number[]; lora: number[]; zeroshot: number }>> | undefined;
  if (fs) {
    const ks = [...new Set(Object.values(fs).flatMap((v) => Object.keys(v)))].sort((a, b) => Number(a) - Number(b));
    lines.push("| target task | zero-shot | " + ks.map((k) => `aTLAS k=${k} | LoRA k=${k}`).join(" | ") + " |");
    lines.push("|---|---:|" + ks.map(() => "---:|---:").join("|") + "|");
    const rows = Object.entries(fs);
    for (const [task, byK] of rows) {
      const cells = ks.map((k) => {
        const e = byK[k];
        return e ? `${pct(mean(e.atlas))} ± ${pct(std(e.atlas))} | ${pct(mean(e.lora))} ± ${pct(std(e.lora))}` : "– | –";
      });
      const zs = Object.values(byK)[0]?.zeroshot;
      lines.push(`| ${task} | ${pct(zs)} | ${cells.join(" | ")} |`);
    }
    const avgCells = ks.map((k) => {
      const a = rows.flatMap(([, v]) => (v[k] ? [mean(v[k].atlas)] : []));
      const l = rows.flatMap(([, v]) => (v[k] ? [mean(v[k].lora)] : []));
      return `**${pct(mean(a))}** | **${pct(mean(l))}**`;
    });
    const zsAvg = mean(rows.flatMap(([, v]) => (Object.values(v)[0] ? [Object.values(v)[0]!.zeroshot] : [])));
    lines.push(`| **mean** | ${pct(zsAvg)} | ${avgCells.join(" | ")} |`);
    lines.push("");
  }
  const tta = results.tta as Record<string, { before: number; after: number; entropyBefore: number; entropyAfter: number }> | undefined;
  if (tta) {
    lines.push("| target task | zero-shot | after TTA | gain | mean entropy before → after |");
    lines.push("|---|---:|---:|---:|---|");
    for (const [task, r] of Object.entries(tta)) lines.push(`| ${task} | ${pct(r.before)} | ${pct(r.after)} | ${(100 * (r.after - r.before)).toFixed(1)} | ${r.entropyBefore.toFixed(3)} → ${r.entropyAfter.toFixed(3)} |`);
    const v = Object.values(tta);
    lines.push(`| **mean** | ${pct(mean(v.map((r) => r.before)))} | ${pct(mean(v.map((r) => r.after)))} | ${(100 * mean(v.map((r) => r.after - r.before))).toFixed(1)} | |`);
    lines.push("");
  }
  return `${lines.join("\n")}\n`;
}
