/**
 * User datasets from disk: JSONL (one `{"text": ..., "label": ...}` object per line) and CSV
 * (a header row naming `text` and `label` columns, in any order, other columns ignored).
 * A bad row raises `DatasetError` with the file and 1-based line. Labels map to ids as
 * described in `labels.ts` (integers as-is, strings in sorted order, or a fixed `labelNames`).
 */
import { readFileSync } from "../platform/fs.js";
import { DatasetError } from "../errors.js";
import { parseCsv } from "./csv.js";
import { buildLabelVocabulary, type RawLabel } from "./labels.js";
import type { Dataset, LoadDatasetOptions } from "./types.js";

function readText(file: string): string {
  try {
    return readFileSync(file, "utf8");
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    const why = code === "ENOENT" ? "file not found" : code === "EISDIR" ? "is a directory, not a file" : "cannot be read";
    throw new DatasetError(file, null, `${why}; pass the path of a .jsonl or .csv dataset`, { cause: e });
  }
}

function describe(v: unknown): string {
  return v === null ? "null" : Array.isArray(v) ? "an array" : `a ${typeof v}`;
}

function checkText(file: string, line: number, text: unknown): string {
  if (text === undefined || text === null) throw new DatasetError(file, line, "missing 'text'");
  if (typeof text !== "string") throw new DatasetError(file, line, `'text' must be a string, got ${describe(text)}`);
  if (text.length === 0) throw new DatasetError(file, line, "'text' is empty");
  return text;
}

function finish(file: string, texts: string[], raws: RawLabel[], options: LoadDatasetOptions): Dataset {
  if (texts.length === 0) throw new DatasetError(file, null, "the file holds no examples");
  const vocab = buildLabelVocabulary(file, raws, options.labelNames);
  return {
    name: file,
    numLabels: vocab.labelNames.length,
    labelNames: vocab.labelNames,
    examples: texts.map((text, i) => ({ text, label: vocab.ids[i]! })),
  };
}

/** Parses JSONL text (exported for tests and for in-memory data); `file` names it in errors. */
export function parseJsonlDataset(file: string, content: string, options: LoadDatasetOptions = {}): Dataset {
  const texts: string[] = [];
  const raws: RawLabel[] = [];
  const lines = content.replace(/^\ufeff/, "").split("\n");
  for (let k = 0; k < lines.length; k++) {
    const line = k + 1;
    const src = lines[k]!.replace(/\r$/, "");
    if (src.trim() === "") continue;
    let row: unknown;
    try {
      row = JSON.parse(src);
    } catch (e) {
      throw new DatasetError(file, line, `invalid JSON: ${(e as Error).message}`, { cause: e });
    }
    if (typeof row !== "object" || row === null || Array.isArray(row)) {
      throw new DatasetError(file, line, `each line must be a JSON object with 'text' and 'label', got ${describe(row)}`);
    }
    const obj = row as Record<string, unknown>;
    texts.push(checkText(file, line, obj.text));
    const label = obj.label;
    if (label === undefined || label === null) throw new DatasetError(file, line, "missing 'label'");
    if (typeof label === "string") {
      if (label.length === 0) throw new DatasetError(file, line, "'label' is empty");
    } else if (typeof label !== "number") {
      throw new DatasetError(file, line, `'label' must be an integer or a string, got ${describe(label)}`);
    }
    raws.push({ value: label, line, fromText: false });
  }
  return finish(file, texts, raws, options);
}

/** Parses CSV text (RFC 4180) with a header naming `text` and `label`. */
export function parseCsvDataset(file: string, content: string, options: LoadDatasetOptions = {}): Dataset {
  const records = parseCsv(file, content);
  const header = records[0];
  if (!header) throw new DatasetError(file, null, "the file is empty; expected a header row with 'text' and 'label'");
  const names = header.fields.map((f) => f.trim());
  const seen = new Set<string>();
  for (const name of names) {
    if (seen.has(name)) throw new DatasetError(file, header.line, `column '${name}' appears twice in the header`);
    seen.add(name);
  }
  const textCol = names.indexOf("text");
  const labelCol = names.indexOf("label");
  if (textCol < 0 || labelCol < 0) {
    throw new DatasetError(
      file,
      header.line,
      `the header must name a 'text' and a 'label' column, got ${names.map((n) => `'${n}'`).join(", ")}`,
    );
  }
  const texts: string[] = [];
  const raws: RawLabel[] = [];
  for (const rec of records.slice(1)) {
    if (rec.fields.length !== names.length) {
      throw new DatasetError(file, rec.line, `expected ${names.length} columns (as in the header), got ${rec.fields.length}`);
    }
    texts.push(checkText(file, rec.line, rec.fields[textCol]));
    const label = rec.fields[labelCol]!.trim();
    if (label === "") throw new DatasetError(file, rec.line, "missing 'label'");
    raws.push({ value: label, line: rec.line, fromText: true });
  }
  return finish(file, texts, raws, options);
}

export function loadJsonlDataset(file: string, options: LoadDatasetOptions = {}): Dataset {
  return parseJsonlDataset(file, readText(file), options);
}

export function loadCsvDataset(file: string, options: LoadDatasetOptions = {}): Dataset {
  return parseCsvDataset(file, readText(file), options);
}
