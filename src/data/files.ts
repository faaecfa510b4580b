/**
 * User datasets from disk: JSONL (one `{"text": ..., "label": ...}` object per line) and CSV
 * (a header row naming `text` and `label` columns, in any order, other columns ignored).
 * A bad row raises `DatasetError` with the file and 1-based line. Labels map to ids as
 * described in `labels.ts` (integers as-is, strings in sorted order, or a fixed `labelNames`).
 *
 * Files are read in chunks, one line at a time: a line longer than `maxLineBytes` (default
 * `MAX_LINE_BYTES`, 1 MiB) is refused as soon as the limit is passed, without holding the rest of
 * it, and a line that is not UTF-8 is refused naming the line (as Python's `open(…,
 * encoding="utf-8")` does; `datasets` refuses such files too).
 */
import { closeSync, openSync, readSync } from "../platform/fs.js";
import { DatasetError } from "../errors.js";
import { csvRecords } from "./csv.js";
import { buildLabelVocabulary, type RawLabel } from "./labels.js";
import type { Dataset, LoadDatasetOptions } from "./types.js";

/** Longest dataset line read (bytes, line break excluded) unless `maxLineBytes` says otherwise. */
export const MAX_LINE_BYTES = 1 << 20;

const CHUNK = 1 << 16;

function openError(file: string, e: unknown): DatasetError {
  const code = (e as NodeJS.ErrnoException).code;
  const why = code === "ENOENT" ? "file not found" : code === "EISDIR" ? "is a directory, not a file" : "cannot be read";
  return new DatasetError(file, null, `${why}; pass the path of a .jsonl or .csv dataset`, { cause: e });
}

function concat(parts: readonly Uint8Array[], length: number): Uint8Array {
  if (parts.length === 1) return parts[0]!;
  const out = new Uint8Array(length);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/**
 * The lines of `file` (without their `\n`; a `\r` before it is kept), decoded as UTF-8, read
 * 64 KiB at a time. Memory stays within one line of at most `maxLineBytes` plus one chunk.
 */
export function* readLines(file: string, maxLineBytes: number = MAX_LINE_BYTES): Generator<{ line: number; text: string }> {
  let fd: number;
  try {
    fd = openSync(file, "r");
  } catch (e) {
    throw openError(file, e);
  }
  const decoder = new TextDecoder("utf-8", { fatal: true });
  const buf = new Uint8Array(CHUNK);
  let parts: Uint8Array[] = [];
  let length = 0;
  let line = 1;
  const add = (bytes: Uint8Array) => {
    if (length + bytes.length > maxLineBytes) {
      throw new DatasetError(file, line, `the line is longer than ${maxLineBytes} bytes; shorten or split the text (texts are truncated to the model's length when tokenised), or raise maxLineBytes`);
    }
    if (bytes.length > 0) parts.push(bytes.slice());
    length += bytes.length;
  };
  const take = (): string => {
    const bytes = concat(parts, length);
    parts = [];
    length = 0;
    try {
      return decoder.decode(bytes);
    } catch (e) {
      throw new DatasetError(file, line, "the line is not valid UTF-8 text; save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)", { cause: e });
    }
  };
  try {
    for (;;) {
      let n: number;
      try {
        n = readSync(fd, buf, 0, CHUNK, null);
      } catch (e) {
        throw openError(file, e);
      }
      if (n === 0) break;
      let start = 0;
      for (;;) {
        const nl = buf.indexOf(10, start);
        if (nl < 0 || nl >= n) break;
        add(buf.subarray(start, nl));
        yield { line, text: take() };
        line++;
        start = nl + 1;
      }
      add(buf.subarray(start, n));
    }
    if (length > 0) yield { line, text: take() };
  } finally {
    closeSync(fd);
  }
}

/** The whole file as text, read line by line under the same limits (for CSV, whose quoted fields may span lines). */
function readText(file: string, maxLineBytes: number): string {
  const lines: string[] = [];
  for (const l of readLines(file, maxLineBytes)) lines.push(l.text);
  return lines.join("\n");
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
  return jsonlDataset(file, content.replace(/^\ufeff/, "").split("\n").map((text, k) => ({ line: k + 1, text })), options);
}

function jsonlDataset(file: string, lines: Iterable<{ line: number; text: string }>, options: LoadDatasetOptions): Dataset {
  const texts: string[] = [];
  const raws: RawLabel[] = [];
  for (const { line, text } of lines) {
    const src = text.replace(/^\ufeff/, "").replace(/\r$/, "");
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
  const records = csvRecords(file, content);
  const first = records.next();
  const header = first.done ? undefined : first.value;
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
  for (const rec of records) {
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
  return jsonlDataset(file, readLines(file, options.maxLineBytes ?? MAX_LINE_BYTES), options);
}

export function loadCsvDataset(file: string, options: LoadDatasetOptions = {}): Dataset {
  return parseCsvDataset(file, readText(file, options.maxLineBytes ?? MAX_LINE_BYTES), options);
}
