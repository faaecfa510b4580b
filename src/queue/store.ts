/**
 * The shared adapter store: one folder that every worker and server sees (a network file system
 * in a cluster), holding one PEFT adapter folder per finished job. A folder is published in one
 * `rename` of a complete temporary folder, so readers never see half an adapter, and a second
 * publish of the same name (a job that was, against all precautions, run to completion twice)
 * finds the first one there and keeps it: every adapter is present once.
 */
import { copyFileSync, existsSync, mkdirSync, readdirSync, renameSync, rmSync, statSync } from "node:fs";
import { join } from "node:path";
import { AdapterNameError } from "../errors.js";
import { randomHex } from "../platform/crypto.js";

/** Folder names in the store: a plain name (letters, digits, `.`, `_`, `-`, `:`), never hidden. */
const NAME = /^[A-Za-z0-9_][A-Za-z0-9._:-]{0,199}$/;

/** Checks a store entry name (a job id or adapter name). */
export function checkStoreName(name: string): string {
  if (!NAME.test(name) || name.includes("..")) throw new AdapterNameError(name, "a store folder name is letters, digits, '.', '_', '-' or ':' (no '..', not hidden)");
  return name;
}

/** Where `name` lives in the store. */
export function storePath(store: string, name: string): string {
  return join(store, checkStoreName(name));
}

/**
 * Publishes the files `files` (names inside `from`) as `<store>/<name>/`. Returns `true` when this
 * call published it, `false` when `<store>/<name>` was already there (it is left as it was).
 */
export function publishToStore(store: string, name: string, from: string, files: readonly string[]): boolean {
  const dest = storePath(store, name);
  if (existsSync(dest)) return false;
  mkdirSync(store, { recursive: true });
  const tmp = join(store, `.${name}.tmp-${process.pid}-${randomHex(6)}`);
  mkdirSync(tmp);
  try {
    for (const f of files) copyFileSync(join(from, f), join(tmp, f));
    try {
      renameSync(tmp, dest);
      return true;
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if ((code === "ENOTEMPTY" || code === "EEXIST") && statSync(dest).isDirectory()) return false;
      throw e;
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

/** Names of the adapters in the store (folders holding an adapter_config.json), sorted. */
export function listStore(store: string): string[] {
  if (!existsSync(store)) return [];
  return readdirSync(store)
    .filter((n) => !n.startsWith(".") && existsSync(join(store, n, "adapter_config.json")))
    .sort();
}
