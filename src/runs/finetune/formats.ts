/**
 * The training-file formats of the fine-tuning API (OpenAI's JSONL, one example per line) and
 * their line-by-line check:
 *
 * - `chat`: `{"messages": [{"role": "system"|"user"|"assistant"|"tool", "content": "…", "weight"?: 0|1}, …]}`
 *   — the loss falls on assistant turns only (`weight: 0` leaves one out);
 * - `prompt-completion`: `{"prompt": "…", "completion": "…"}` — the loss falls on the completion;
 * - `classification`: `{"text": "…", "label": "pos" | 3}` — for encoder models (a classification head).
 *
 * Files are read as a stream, one line at a time, so checking a large upload holds one line in
 * memory; every error names the line.
 */
import { createReadStream } from "node:fs";
import { createInterface } from "node:readline";
import { TrainingFileError } from "../../errors.js";

export type TrainingFormat = "chat" | "prompt-completion" | "classification";

export const TRAINING_FORMATS: readonly TrainingFormat[] = ["chat", "prompt-completion", "classification"];

export interface ChatTurn {
  readonly role: string;
  readonly content: string;
  /** 0: an assistant turn that is not trained on (OpenAI's `weight`); default 1. */
  readonly weight?: 0 | 1;
}

export type TrainingRow =
  | { readonly format: "chat"; readonly messages: readonly ChatTurn[] }
  | { readonly format: "prompt-completion"; readonly prompt: string; readonly completion: string }
  | { readonly format: "classification"; readonly text: string; readonly label: string };

export interface TrainingFileSummary {
  readonly format: TrainingFormat;
  /** Examples (non-blank lines). */
  readonly examples: number;
  /** Classification: the label names, sorted (their index is the class id). */
  readonly labels?: readonly string[];
}

const ROLES = new Set(["system", "user", "assistant", "tool", "developer"]);

/** Parses one non-blank line; `file` and `line` (1-based) name it in errors. */
export function parseTrainingLine(text: string, file: string, line: number): TrainingRow {
  const bad = (issue: string): never => {
    throw new TrainingFileError(file, line, issue);
  };
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    return bad(`not valid JSON (${(e as Error).message}); each line must be one JSON object`);
  }
  if (typeof v !== "object" || v === null || Array.isArray(v)) return bad("not a JSON object; each line must be one example object");
  const o = v as Record<string, unknown>;
  if ("messages" in o) {
    if (!Array.isArray(o.messages) || o.messages.length === 0) return bad("'messages' must be a non-empty array of {role, content}");
    const messages = o.messages.map((m: unknown, i): ChatTurn => {
      if (typeof m !== "object" || m === null || Array.isArray(m)) return bad(`messages[${i}] is not an object`);
      const mm = m as Record<string, unknown>;
      if (typeof mm.role !== "string" || !ROLES.has(mm.role)) return bad(`messages[${i}].role must be one of ${[...ROLES].join(", ")}, got ${JSON.stringify(mm.role)}`);
      if (typeof mm.content !== "string") return bad(`messages[${i}].content must be a string`);
      if (mm.weight !== undefined && mm.weight !== 0 && mm.weight !== 1) return bad(`messages[${i}].weight must be 0 or 1`);
      if (mm.weight !== undefined && mm.role !== "assistant") return bad(`messages[${i}].weight is only allowed on assistant messages`);
      return { role: mm.role, content: mm.content, ...(mm.weight !== undefined ? { weight: mm.weight } : {}) };
    });
    if (!messages.some((m) => m.role === "assistant" && m.weight !== 0)) return bad("the chat has no assistant message to train on");
    return { format: "chat", messages };
  }
  if ("prompt" in o || "completion" in o) {
    if (typeof o.prompt !== "string") return bad("'prompt' must be a string");
    if (typeof o.completion !== "string" || o.completion.length === 0) return bad("'completion' must be a non-empty string");
    return { format: "prompt-completion", prompt: o.prompt, completion: o.completion };
  }
  if ("text" in o || "label" in o) {
    if (typeof o.text !== "string" || o.text.length === 0) return bad("'text' must be a non-empty string");
    const l = o.label;
    if (!(typeof l === "string" && l.length > 0) && !(typeof l === "number" && Number.isInteger(l) && l >= 0)) return bad("'label' must be a non-empty string or a non-negative integer");
    return { format: "classification", text: o.text, label: String(l) };
  }
  return bad(`unknown example format (keys: ${Object.keys(o).join(", ") || "none"}); use {messages}, {prompt, completion} or {text, label}`);
}

/**
 * Reads a JSONL training file line by line: `onRow` gets each example. Blank lines are skipped;
 * every line must have the format of the first example. `name` is how errors name the file.
 */
export async function readTrainingFile(path: string, name: string, onRow?: (row: TrainingRow, line: number) => void): Promise<TrainingFileSummary> {
  const rl = createInterface({ input: createReadStream(path, { encoding: "utf8" }), crlfDelay: Infinity });
  let format: TrainingFormat | null = null;
  let examples = 0;
  let line = 0;
  const labels = new Set<string>();
  try {
    for await (const text of rl) {
      line++;
      if (text.trim() === "") continue;
      const row = parseTrainingLine(text, name, line);
      if (format === null) format = row.format;
      else if (row.format !== format) throw new TrainingFileError(name, line, `a ${row.format} example in a ${format} file; every line must have the format of the first`);
      if (row.format === "classification") labels.add(row.label);
      examples++;
      onRow?.(row, line);
    }
  } finally {
    rl.close();
  }
  if (format === null) throw new TrainingFileError(name, 0, "the file has no examples");
  if (format === "classification" && labels.size < 2) throw new TrainingFileError(name, 0, `classification needs at least 2 distinct labels, the file has ${labels.size}`);
  return { format, examples, ...(format === "classification" ? { labels: sortLabels([...labels]) } : {}) };
}

/** Label order: integers numerically when every label is one, else by string. */
export function sortLabels(labels: readonly string[]): string[] {
  const numeric = labels.every((l) => /^\d+$/u.test(l));
  return [...labels].sort(numeric ? (a, b) => Number(a) - Number(b) : (a, b) => (a < b ? -1 : a > b ? 1 : 0));
}
