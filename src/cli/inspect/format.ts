/** Plain-text rendering of `peft inspect` reports (the `--json` flag prints the report object instead). */
import type { AdapterReport } from "./adapter.js";
import type { InspectReport } from "./inspect.js";
import type { ModelReport, SafetensorsReport } from "./model.js";
import type { DtypeStats, GroupStats, TensorEntry } from "./tensors.js";

export function formatCount(n: number): string {
  return n.toLocaleString("en-US");
}

/** Bytes in binary units: `512 B`, `97.6 KiB`, `1.2 GiB`. */
export function formatBytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return u === 0 ? `${n} B` : `${v.toFixed(1)} ${units[u]}`;
}

function plural(n: number, word: string): string {
  return `${formatCount(n)} ${word}${n === 1 ? "" : "s"}`;
}

function percent(part: number, total: number): string {
  return total > 0 ? `${((100 * part) / total).toFixed(1)}%` : "-";
}

/** Left-aligns the first column and right-aligns the others, two spaces apart, indented. */
export function table(rows: readonly (readonly string[])[], indent = "  "): string[] {
  const widths: number[] = [];
  for (const r of rows) r.forEach((c, i) => (widths[i] = Math.max(widths[i] ?? 0, c.length)));
  return rows.map((r) => indent + r.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join("  ").trimEnd());
}

function value(v: unknown): string {
  return typeof v === "string" ? v : JSON.stringify(v);
}

function keyValues(entries: readonly (readonly [string, unknown])[], indent = "  "): string[] {
  const w = Math.max(0, ...entries.map(([k]) => k.length));
  return entries.map(([k, v]) => `${indent}${k.padEnd(w)}  ${value(v)}`);
}

function groupTable(title: string, groups: Readonly<Record<string, GroupStats>>, total: number): string[] {
  const rows = Object.entries(groups).map(([k, s]) => [k, formatCount(s.params), percent(s.params, total), plural(s.tensors, "tensor")]);
  return [title, ...table(rows)];
}

function dtypeTable(d: Readonly<Record<string, DtypeStats>>): string[] {
  const rows = Object.entries(d).map(([k, s]) => [k, plural(s.tensors, "tensor"), `${formatCount(s.params)} params`, formatBytes(s.bytes)]);
  return ["dtypes", ...table(rows)];
}

function tensorTable(list: readonly TensorEntry[] | undefined): string[] {
  if (!list) return [];
  return ["tensors", ...table(list.map((e) => [e.name, e.dtype, `[${e.shape.join(", ")}]`, formatCount(e.params)]))];
}

function formatModel(r: ModelReport): string[] {
  const lines = [
    `model       ${r.dir}`,
    `type        ${r.modelType ?? "(no model_type)"}${r.architectures.length ? `  (${r.architectures.join(", ")})` : ""}`,
    `peft-ts     ${r.support.supported ? "supported" : `not supported: ${r.support.problems.join("; ")}`}`,
    `parameters  ${formatCount(r.parameters)} in ${plural(r.tensors, "tensor")} (${formatBytes(r.bytes)})`,
  ];
  for (const t of r.tied) lines.push(`tied        ${t.name} → ${t.source} (not stored, counted once)`);
  for (const [k, n] of Object.entries(r.blocks)) lines.push(`blocks      ${k} × ${n}`);
  lines.push(`files       ${r.files.map((f) => `${f.name} (${plural(f.tensors, "tensor")}, ${formatBytes(f.bytes)})`).join(", ")}`);
  lines.push("config", ...keyValues(Object.entries(r.config)));
  const roles = Object.fromEntries(Object.entries(r.byRole).filter(([, s]) => s.tensors > 0));
  lines.push(...groupTable("by role", roles, r.parameters), ...groupTable("by module", r.byModule, r.parameters), ...dtypeTable(r.dtypes));
  return [...lines, ...tensorTable(r.tensorList)];
}

/** `  (written by peft-ts 0.1.0, PEFT 0.21.0 format)` / `  (written by PEFT 0.21.0)`: the writer the files record. */
function writtenBy(r: AdapterReport): string {
  if (r.peftTsVersion) return `  (written by peft-ts ${r.peftTsVersion}${r.peftVersion ? `, PEFT ${r.peftVersion} format` : ""})`;
  return r.peftVersion ? `  (written by PEFT ${r.peftVersion})` : "";
}

function formatAdapter(r: AdapterReport): string[] {
  const p = r.parameters;
  const parts: string[] = [];
  if (p.adapter || (!p.savedModules && !p.prompt)) parts.push(`${formatCount(p.adapter)} adapter`);
  if (p.savedModules) parts.push(`${formatCount(p.savedModules)} in saved modules`);
  if (p.prompt) parts.push(`${formatCount(p.prompt)} prompt`);
  const lines = [
    `adapter     ${r.dir}`,
    `method      ${r.peftType}${writtenBy(r)}`,
    `parameters  ${formatCount(p.total)} trainable = ${parts.join(" + ")}; ${plural(r.tensors, "tensor")} (${formatBytes(r.bytes)})`,
  ];
  if (r.adaptedModules.length > 0) {
    const types = Object.entries(r.adaptedByType).map(([k, n]) => `${k} ×${n}`).join(", ");
    lines.push(`adapted     ${r.adaptedModules.length} modules: ${types}`);
  }
  if (r.savedModules.length > 0) lines.push(`saved       ${r.savedModules.join(", ")} (full trainable copies)`);
  if (r.scaling !== null) lines.push(`scaling     ${+r.scaling.toPrecision(6)} (lora_alpha / ${r.config["use_rslora"] === true ? "√r" : "r"})`);
  if (r.ranks.length > 0) lines.push(`ranks       ${r.ranks.join(", ")}`);
  if (r.virtualTokens !== null) lines.push(`virtual     ${r.virtualTokens} tokens`);
  lines.push("config", ...keyValues(Object.entries(r.config)));
  if (Object.keys(r.otherSettings).length > 0) lines.push("other settings", ...keyValues(Object.entries(r.otherSettings)));
  lines.push(...dtypeTable(r.dtypes));
  lines.push("shapes", ...table(r.shapes.map((s) => [s.param, `[${s.shape.join(", ")}]`, s.dtype, `×${s.count}`])));
  return [...lines, ...tensorTable(r.tensorList)];
}

function formatFile(r: SafetensorsReport): string[] {
  const lines = [`file        ${r.file}`, `parameters  ${formatCount(r.parameters)} in ${plural(r.tensors, "tensor")} (${formatBytes(r.bytes)})`];
  if (Object.keys(r.metadata).length > 0) lines.push("metadata", ...keyValues(Object.entries(r.metadata)));
  lines.push(...groupTable("by module", r.byModule, r.parameters), ...dtypeTable(r.dtypes));
  return [...lines, ...tensorTable(r.tensorList)];
}

/** The report as the lines `peft inspect` prints. */
export function formatInspectReport(r: InspectReport): string {
  const lines = r.kind === "model" ? formatModel(r) : r.kind === "adapter" ? formatAdapter(r) : formatFile(r);
  return lines.join("\n");
}
