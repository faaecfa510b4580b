/**
 * Argument checks at the public API's boundary: a JavaScript caller's mistake (a wrong field
 * name, a string where a number goes, ragged token rows) becomes an `ArgumentError`
 * (`PEFT_ERR_ARGUMENT`) naming the function, the argument (with the path inside it) and what was
 * expected, instead of a `TypeError` deep inside. Shapes are zod schemas; token ids are accepted
 * in the forms users naturally pass and normalised to an int64 `[batch, seq]` tensor.
 */
import { z } from "zod";
import { ArgumentError } from "../errors.js";
import type { Tensor } from "../tensor.js";

/** A short description of a value for messages: `undefined`, `a string`, `an array of 3`, `an object with keys a, b`. */
export function describeValue(v: unknown): string {
  if (v === null) return "null";
  if (v === undefined) return "undefined";
  if (Array.isArray(v)) return `an array of ${v.length}`;
  if (ArrayBuffer.isView(v)) return `a ${v.constructor.name}`;
  if (typeof v === "object") {
    const keys = Object.keys(v);
    return keys.length === 0 ? "an empty object" : `an object with keys ${keys.slice(0, 8).join(", ")}${keys.length > 8 ? ", …" : ""}`;
  }
  if (typeof v === "string") return `the string ${JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}…` : v)}`;
  return `${typeof v} ${String(v)}`;
}

function at(value: unknown, path: readonly PropertyKey[]): unknown {
  let v = value;
  for (const k of path) v = v !== null && typeof v === "object" ? (v as Record<PropertyKey, unknown>)[k] : undefined;
  return v;
}

function pathText(argument: string, path: readonly PropertyKey[]): string {
  return path.reduce<string>((s, k) => (typeof k === "number" ? `${s}[${k}]` : `${s}.${String(k)}`), argument);
}

/**
 * `schema.parse(value)`, with a failure thrown as an `ArgumentError`: `fn`, the argument and the
 * path of the first problem, what zod expected there, and what was given.
 */
export function checkArg<T>(fn: string, argument: string, schema: z.ZodType<T>, value: unknown): T {
  const r = schema.safeParse(value);
  if (r.success) return r.data;
  // a misspelt field shows as an unknown key and as a missing one: name the unknown key
  const issue = r.error.issues.find((i) => i.code === "unrecognized_keys") ?? r.error.issues[0]!;
  if (issue.code === "unrecognized_keys") {
    const keys = issue.keys.map((k) => `'${k}'`).join(", ");
    throw new ArgumentError(fn, pathText(argument, issue.path), "an object without unknown keys (a misspelt field?)", `the unknown key(s) ${keys}`);
  }
  throw new ArgumentError(fn, pathText(argument, issue.path), expectedOf(issue), describeValue(at(value, issue.path)));
}

const ARTICLE: Record<string, string> = { int: "an integer", object: "an object", array: "an array", undefined: "undefined (absent)" };

/** What a zod issue expected, in the words of an `ArgumentError` ("must be …"). */
function expectedOf(issue: z.core.$ZodIssue): string {
  switch (issue.code) {
    case "invalid_type":
      return ARTICLE[issue.expected] ?? `a ${issue.expected}`;
    case "too_small":
      return issue.origin === "array" || issue.origin === "string"
        ? `${issue.origin === "array" ? "an array" : "a string"} of at least ${String(issue.minimum)} ${issue.origin === "array" ? "items" : "characters"}`
        : `a number ${issue.inclusive ? "≥" : ">"} ${String(issue.minimum)}`;
    case "too_big":
      return issue.origin === "array" || issue.origin === "string"
        ? `${issue.origin === "array" ? "an array" : "a string"} of at most ${String(issue.maximum)} ${issue.origin === "array" ? "items" : "characters"}`
        : `a number ${issue.inclusive ? "≤" : "<"} ${String(issue.maximum)}`;
    case "invalid_value":
      return `one of ${issue.values.map((v) => JSON.stringify(v)).join(", ")}`;
    default:
      return issue.message;
  }
}

/** A non-negative safe integer. */
export const nonNegativeInt = z.number().int().nonnegative();
/** A positive safe integer. */
export const positiveInt = z.number().int().positive();
/** A finite number. */
export const finite = z.number().finite();
/** A non-empty string. */
export const nonEmptyString = z.string().min(1, "a non-empty string");

/** A list of token ids: an array of integers (numbers or bigints) or an integer typed array. */
export const tokenIdRow = z.custom<readonly number[] | ArrayLike<number | bigint>>(
  (v) => (Array.isArray(v) && v.every((x) => (typeof x === "number" && Number.isSafeInteger(x) && x >= 0) || (typeof x === "bigint" && x >= 0n))) || isIntegerTypedArray(v),
  { message: "a list of non-negative integer token ids (number[] or an integer typed array)" },
);

function isIntegerTypedArray(v: unknown): v is ArrayLike<number | bigint> {
  return (
    v instanceof Int32Array ||
    v instanceof Uint32Array ||
    v instanceof Int16Array ||
    v instanceof Uint16Array ||
    v instanceof Int8Array ||
    v instanceof Uint8Array ||
    v instanceof BigInt64Array ||
    v instanceof BigUint64Array
  );
}

function isTensorLike(v: unknown): v is Tensor {
  return v !== null && typeof v === "object" && "dtype" in v && "shape" in v && "data" in v && Array.isArray((v as Tensor).shape);
}

function toBigInt(x: number | bigint): bigint {
  return typeof x === "bigint" ? x : BigInt(x);
}

/**
 * Token ids as users pass them, as an int64 `[batch, seq]` tensor: an int64 or int32 tensor of
 * shape `[batch, seq]` (or `[seq]`), rows as nested arrays (`[[1, 5, 9]]`) or typed arrays, one row
 * as a flat array or typed array, or a tokenizer's output (`{ ids }` from `encode`, `{ inputIds }`
 * from `encodeBatch`, or a list of `encode` results). Ragged rows, negative or fractional ids, and
 * ids at or above `vocabSize` are `ArgumentError`s naming `fn` and `argument`.
 */
export function toTokenIdTensor(fn: string, argument: string, value: unknown, vocabSize?: number): Tensor<"int64"> {
  const fail = (expected: string, got: string = describeValue(value)): never => {
    throw new ArgumentError(fn, argument, expected, got);
  };
  const what = "token ids: an int64 tensor [batch, seq], rows of ids ([[1, 5, 9]]), one row ([1, 5, 9] or an Int32Array), or a tokenizer's output";
  let t: Tensor<"int64">;
  if (isTensorLike(value)) {
    const shape = value.shape.length === 1 ? [1, value.shape[0]!] : value.shape;
    if (shape.length !== 2) fail(what, `a tensor of shape [${value.shape.join(", ")}]`);
    if (value.dtype !== "int64" && value.dtype !== "int32") fail(what, `a ${value.dtype} tensor`);
    const n = shape[0]! * shape[1]!;
    if (value.data.length !== n) fail(what, `a tensor of shape [${value.shape.join(", ")}] with ${value.data.length} values`);
    t = { dtype: "int64", shape, data: value.dtype === "int64" ? (value.data as BigInt64Array) : BigInt64Array.from(value.data as Int32Array, (x) => BigInt(x)) };
  } else {
    let rows: unknown[];
    if (value !== null && typeof value === "object" && !Array.isArray(value) && !ArrayBuffer.isView(value)) {
      const o = value as Record<string, unknown>;
      if ("inputIds" in o) return toTokenIdTensor(fn, `${argument}.inputIds`, o.inputIds, vocabSize);
      if ("ids" in o) rows = [o.ids];
      else return fail(what);
    } else if (Array.isArray(value) && value.length > 0 && value.every((r) => r !== null && typeof r === "object" && !Array.isArray(r) && !ArrayBuffer.isView(r) && "ids" in r)) {
      rows = value.map((r) => (r as { ids: unknown }).ids);
    } else if (Array.isArray(value) && value.length > 0 && value.every((r) => Array.isArray(r) || ArrayBuffer.isView(r))) {
      rows = value;
    } else if ((Array.isArray(value) && value.length > 0) || isIntegerTypedArray(value)) {
      rows = [value];
    } else {
      return fail(what);
    }
    const first = rows[0] as ArrayLike<unknown>;
    const seq = first.length;
    const data = new BigInt64Array(rows.length * seq);
    rows.forEach((r, i) => {
      const ok = tokenIdRow.safeParse(r);
      if (!ok.success) fail(`${what}; row ${i} is not a list of non-negative integer ids`, describeValue(r));
      const row = r as ArrayLike<number | bigint>;
      if (row.length !== seq) fail(`rows of equal length (pad them, and pass an attentionMask); row 0 has ${seq} ids, row ${i} has ${row.length}`, describeValue(r));
      for (let j = 0; j < seq; j++) data[i * seq + j] = toBigInt(row[j]!);
    });
    t = { dtype: "int64", shape: [rows.length, seq], data };
  }
  if (t.shape[1] === 0) fail(`${what}, with at least one id per row`, "rows of 0 ids");
  if (vocabSize !== undefined) {
    const d = t.data as BigInt64Array;
    const v = BigInt(vocabSize);
    for (let i = 0; i < d.length; i++) {
      if (d[i]! < 0n || d[i]! >= v) fail(`ids in [0, ${vocabSize}) (the model's vocabulary)`, `id ${d[i]} at row ${Math.floor(i / t.shape[1]!)}, position ${i % t.shape[1]!}`);
    }
  }
  return t;
}

/** An attention mask given like token ids (see `toTokenIdTensor`), of the ids' shape, with values 0 or 1. */
export function toMaskTensor(fn: string, argument: string, value: unknown, shape: readonly number[]): Tensor<"int64"> {
  const m = toTokenIdTensor(fn, argument, value);
  if (m.shape[0] !== shape[0] || m.shape[1] !== shape[1]) {
    throw new ArgumentError(fn, argument, `a mask of the token ids' shape [${shape.join(", ")}]`, `shape [${m.shape.join(", ")}]`);
  }
  const d = m.data as BigInt64Array;
  for (let i = 0; i < d.length; i++) if (d[i] !== 0n && d[i] !== 1n) throw new ArgumentError(fn, argument, "a mask of 0s and 1s", `${d[i]} at index ${i}`);
  return m;
}
