/**
 * The browser side of `fs.ts` (swapped in by the package.json `browser` field): there is no file
 * system, so every file operation throws `NoFileSystemError` naming the bytes-based function to
 * use instead; the path functions treat names as `/`-separated with `/` as the working folder.
 */
import { NoFileSystemError } from "../errors.js";
import type * as NodeFs from "./fs.js";

function noFs<K extends keyof typeof NodeFs>(name: K): (typeof NodeFs)[K] {
  return ((...args: unknown[]) => {
    throw new NoFileSystemError(name, typeof args[0] === "string" ? args[0] : "");
  }) as unknown as (typeof NodeFs)[K];
}

export const closeSync = noFs("closeSync");
export const existsSync = noFs("existsSync");
export const fstatSync = noFs("fstatSync");
export const fsyncSync = noFs("fsyncSync");
export const mkdirSync = noFs("mkdirSync");
export const openSync = noFs("openSync");
export const readFileSync = noFs("readFileSync");
export const readSync = noFs("readSync");
export const readdirSync = noFs("readdirSync");
export const renameSync = noFs("renameSync");
export const rmSync = noFs("rmSync");
export const statSync = noFs("statSync");
export const unlinkSync = noFs("unlinkSync");
export const writeSync = noFs("writeSync");

/** The browser side of `fs`: the same operations, each throwing `NoFileSystemError`. */
export const fs = { closeSync, existsSync, fstatSync, fsyncSync, mkdirSync, openSync, readFileSync, readSync, readdirSync, renameSync, rmSync, statSync, unlinkSync, writeSync };

export const HAS_FILE_SYSTEM = false;

export function packageDir(pkg: string): string {
  throw new NoFileSystemError("packageDir", pkg);
}

export const sep = "/";

function normalize(parts: readonly string[], absolute: boolean): string {
  const out: string[] = [];
  for (const p of parts) {
    if (p === "" || p === ".") continue;
    if (p === "..") {
      if (out.length > 0 && out[out.length - 1] !== "..") out.pop();
      else if (!absolute) out.push("..");
    } else out.push(p);
  }
  const s = out.join("/");
  return absolute ? `/${s}` : s || ".";
}

export function isAbsolute(p: string): boolean {
  return p.startsWith("/");
}

export function join(...parts: string[]): string {
  const all = parts.filter((p) => p !== "");
  if (all.length === 0) return ".";
  const joined = all.join("/");
  const n = normalize(joined.split("/"), isAbsolute(all[0]!));
  return joined.endsWith("/") && !n.endsWith("/") ? `${n}/` : n;
}

export function resolve(...parts: string[]): string {
  let acc = "/";
  for (const p of parts) acc = isAbsolute(p) ? p : `${acc}/${p}`;
  return normalize(acc.split("/"), true);
}

export function dirname(p: string): string {
  const t = p.replace(/\/+$/, "");
  if (t === "" && p.startsWith("/")) return "/";
  const i = t.lastIndexOf("/");
  if (i < 0) return ".";
  return i === 0 ? "/" : p.slice(0, i);
}

export function basename(p: string, ext = ""): string {
  const t = p.replace(/\/+$/, "");
  const base = t.slice(t.lastIndexOf("/") + 1);
  return ext && base.endsWith(ext) && base !== ext ? base.slice(0, -ext.length) : base;
}

export function extname(p: string): string {
  const base = p.slice(p.lastIndexOf("/") + 1);
  const i = base.lastIndexOf(".");
  return i <= 0 ? "" : base.slice(i);
}

export function relative(from: string, to: string): string {
  const a = resolve(from).split("/").filter(Boolean);
  const b = resolve(to).split("/").filter(Boolean);
  let k = 0;
  while (k < a.length && k < b.length && a[k] === b[k]) k++;
  return [...a.slice(k).map(() => ".."), ...b.slice(k)].join("/");
}
