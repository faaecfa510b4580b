/**
 * Label vocabulary for user files.
 *
 * Rules (the same for JSONL and CSV):
 * - With `labelNames` given: a string label maps to its index in `labelNames`; an integer label
 *   must be in [0, labelNames.length). Anything else is an error.
 * - Otherwise, if every label is a non-negative integer (a JSON number, or in CSV a field of
 *   digits such as `0`, `12`), the integer is the class id, `numLabels` is max + 1 and the names
 *   are `"0"`, `"1"`, ….
 * - Otherwise every label must be a string; ids follow the **sorted** order of the distinct
 *   names (JavaScript code-unit order, the same as Python's `sorted()` for these strings and as
 *   HF `datasets` `class_encode_column`). Sorting, unlike first appearance, gives the same ids
 *   however the file's rows are ordered.
 * - Mixing JSON numbers and strings in one file is an error (at the first row that differs).
 * - Integer ids must be dense: every id from 0 to the largest must have an example (a stray
 *   `"label": 1000000` would otherwise make a million-way head); sparse ids are refused naming the
 *   line of the largest one. Use string labels, or `labelNames`, for other numberings.
 * - At most `MAX_LABELS` classes, checked before anything is allocated.
 */
import { DatasetError } from "../errors.js";

/** A label as read from a file: JSONL keeps its JSON type, CSV fields are strings. */
export interface RawLabel {
  readonly value: number | string;
  readonly line: number;
  /** true for CSV fields: a string of digits counts as an integer label. */
  readonly fromText: boolean;
}

export interface LabelVocabulary {
  readonly ids: number[];
  readonly labelNames: string[];
}

/** Most classes a dataset may have (a classifier head of this many rows is still small). */
export const MAX_LABELS = 10_000;

const DIGITS = /^(0|[1-9][0-9]*)$/;

function asInteger(raw: RawLabel): number | null {
  if (typeof raw.value === "number") return raw.value;
  if (raw.fromText && DIGITS.test(raw.value)) {
    const n = Number(raw.value);
    return Number.isSafeInteger(n) ? n : null;
  }
  return null;
}

function checkInteger(file: string, raw: RawLabel, n: number, limit: number | null): void {
  if (!Number.isSafeInteger(n) || n < 0) {
    throw new DatasetError(file, raw.line, `label ${JSON.stringify(raw.value)} must be a non-negative integer or a string`);
  }
  if (limit !== null && n >= limit) {
    throw new DatasetError(file, raw.line, `label ${n} is out of range: the given label names have ${limit} classes`);
  }
}

/** Maps raw labels to class ids (see the module comment for the rules). */
export function buildLabelVocabulary(file: string, raws: readonly RawLabel[], labelNames?: readonly string[]): LabelVocabulary {
  if (labelNames) {
    if (labelNames.length === 0 || new Set(labelNames).size !== labelNames.length) {
      throw new DatasetError(file, null, "labelNames must be a non-empty list of distinct names");
    }
    const index = new Map(labelNames.map((n, i) => [n, i] as const));
    const ids = raws.map((raw) => {
      const known = typeof raw.value === "string" ? index.get(raw.value) : undefined;
      if (known !== undefined) return known;
      const n = asInteger(raw);
      if (n === null) {
        throw new DatasetError(file, raw.line, `label ${JSON.stringify(raw.value)} is not one of the given label names (${labelNames.join(", ")})`);
      }
      checkInteger(file, raw, n, labelNames.length);
      return n;
    });
    return { ids, labelNames: [...labelNames] };
  }

  const first = raws[0];
  if (!first) return { ids: [], labelNames: [] };
  const allIntegers = raws.every((r) => asInteger(r) !== null);
  if (allIntegers) {
    const ids = raws.map((raw) => {
      const n = asInteger(raw)!;
      checkInteger(file, raw, n, null);
      return n;
    });
    let top = 0;
    for (let i = 1; i < ids.length; i++) if (ids[i]! > ids[top]!) top = i;
    const numLabels = ids[top]! + 1;
    const worst = raws[top]!;
    if (numLabels > MAX_LABELS) {
      throw new DatasetError(file, worst.line, `label ${ids[top]} would make ${numLabels} classes, more than the ${MAX_LABELS} peft-ts allows; integer labels are class ids 0…N-1`);
    }
    const seen = new Uint8Array(numLabels);
    for (const id of ids) seen[id] = 1;
    const missing = seen.indexOf(0);
    if (missing >= 0) {
      const gaps = numLabels - seen.reduce((s, v) => s + v, 0);
      throw new DatasetError(
        file,
        worst.line,
        `label ${ids[top]}: integer labels are class ids 0…${numLabels - 1} and must be dense, but ${gaps} of them (e.g. ${missing}) have no example; ` +
          "renumber the labels, or write them as strings (mapped to ids in sorted order)",
      );
    }
    return { ids, labelNames: Array.from({ length: numLabels }, (_, i) => String(i)) };
  }
  // JSON numbers and strings must not be mixed.
  const numberRow = raws.find((r) => typeof r.value === "number");
  if (numberRow) {
    const other = raws.find((r) => typeof r.value !== typeof first.value)!;
    throw new DatasetError(
      file,
      other.line,
      `label ${JSON.stringify(other.value)} is a ${typeof other.value} but line ${first.line} has a ${typeof first.value} label; ` +
        "use all integers or all strings",
    );
  }
  const names = [...new Set(raws.map((r) => r.value as string))].sort();
  if (names.length > MAX_LABELS) {
    const seen = new Set<string>();
    const over = raws.find((r) => (seen.add(r.value as string), seen.size > MAX_LABELS))!;
    throw new DatasetError(file, over.line, `label ${JSON.stringify(over.value)} is the ${MAX_LABELS + 1}th distinct label; peft-ts allows at most ${MAX_LABELS} classes`);
  }
  const index = new Map(names.map((n, i) => [n, i] as const));
  return { ids: raws.map((r) => index.get(r.value as string)!), labelNames: names };
}
