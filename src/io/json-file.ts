/** Reading JSON files with typed errors (missing file, invalid JSON, not an object). */
import { existsSync, readFileSync, statSync } from "../platform/fs.js";
import { ConfigError, MissingFileError } from "../errors.js";

/** A JSON object (not null, not an array). */
export function isJsonObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** Reads and parses a JSON file. Missing → `MissingFileError`; unparsable → `ConfigError`. */
export function readJsonFile(file: string, hint = ""): unknown {
  if (!existsSync(file) || !statSync(file).isFile()) throw new MissingFileError(file, hint);
  return parseJsonText(readFileSync(file, "utf8"), file);
}

/** Parses JSON text (a leading BOM is skipped); unparsable → `ConfigError` naming `file`. */
export function parseJsonText(text: string, file: string): unknown {
  try {
    return JSON.parse(text.charCodeAt(0) === 0xfeff ? text.slice(1) : text) as unknown;
  } catch (e) {
    throw new ConfigError(file, "", `not valid JSON (${(e as Error).message}); fix the file or write it again`, { cause: e });
  }
}

/** Like {@link readJsonFile} but the top level must be a JSON object. */
export function readJsonObject(file: string, hint = ""): Record<string, unknown> {
  return asJsonObject(readJsonFile(file, hint), file);
}

/** Like {@link parseJsonText} but the top level must be a JSON object. */
export function parseJsonObjectText(text: string, file: string): Record<string, unknown> {
  return asJsonObject(parseJsonText(text, file), file);
}

function asJsonObject(v: unknown, file: string): Record<string, unknown> {
  if (typeof v !== "object" || v === null || Array.isArray(v)) {
    throw new ConfigError(file, "", `the top level must be a JSON object, got ${Array.isArray(v) ? "an array" : v === null ? "null" : typeof v}`);
  }
  return v as Record<string, unknown>;
}
