/** Header-only statistics over safetensors files: parameter counts, dtypes, grouping helpers. */
import { basename } from "node:path";
import { ConfigError } from "../../errors.js";
import type { SafetensorsFile } from "../../io/safetensors.js";
import { type DType, numel } from "../../tensor.js";

export interface TensorEntry {
  readonly name: string;
  readonly dtype: DType;
  readonly shape: readonly number[];
  readonly params: number;
  readonly bytes: number;
  /** File name (no folder) the tensor is stored in. */
  readonly file: string;
}

export interface GroupStats {
  tensors: number;
  params: number;
}

export interface DtypeStats extends GroupStats {
  bytes: number;
}

export interface FileStats {
  readonly name: string;
  readonly tensors: number;
  readonly bytes: number;
}

/** Every tensor of the files, by header only. A name stored in two files is a `ConfigError` naming both. */
export function tensorEntries(files: readonly SafetensorsFile[], context: string): TensorEntry[] {
  const seen = new Map<string, string>();
  const out: TensorEntry[] = [];
  for (const f of files) {
    const file = basename(f.path);
    for (const name of f.keys()) {
      const prev = seen.get(name);
      if (prev !== undefined) {
        throw new ConfigError(context, name, `tensor is stored twice (in ${prev} and ${file}); remove one copy`);
      }
      seen.set(name, file);
      const info = f.info(name);
      out.push({ name, dtype: info.dtype, shape: [...info.shape], params: numel(info.shape), bytes: info.end - info.begin, file });
    }
  }
  return out;
}

export function sumParams(entries: readonly TensorEntry[]): number {
  let s = 0;
  for (const e of entries) s += e.params;
  return s;
}

export function sumBytes(entries: readonly TensorEntry[]): number {
  let s = 0;
  for (const e of entries) s += e.bytes;
  return s;
}

/** Tensor, parameter and byte counts per dtype, dtypes ordered by parameter count (largest first). */
export function dtypeStats(entries: readonly TensorEntry[]): Record<string, DtypeStats> {
  const m = new Map<string, DtypeStats>();
  for (const e of entries) {
    const s = m.get(e.dtype) ?? { tensors: 0, params: 0, bytes: 0 };
    s.tensors++;
    s.params += e.params;
    s.bytes += e.bytes;
    m.set(e.dtype, s);
  }
  return Object.fromEntries([...m].sort((a, b) => b[1].params - a[1].params));
}

/** Groups entries by `keyOf`, groups ordered by parameter count (largest first, then name). */
export function groupStats<T extends { readonly params: number }>(items: readonly T[], keyOf: (x: T) => string): Record<string, GroupStats> {
  const m = new Map<string, GroupStats>();
  for (const x of items) {
    const k = keyOf(x);
    const s = m.get(k) ?? { tensors: 0, params: 0 };
    s.tensors++;
    s.params += x.params;
    m.set(k, s);
  }
  return Object.fromEntries([...m].sort((a, b) => b[1].params - a[1].params || (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0)));
}

/** Per-file tensor counts and sizes (bytes of tensor data, headers excluded). */
export function fileStats(entries: readonly TensorEntry[], fileOrder: readonly string[]): FileStats[] {
  return fileOrder.map((name) => {
    const mine = entries.filter((e) => e.file === name);
    return { name, tensors: mine.length, bytes: sumBytes(mine) };
  });
}

/** `a.b.c.weight` → `a.b.c` (the module holding the parameter); a bare name is its own module. */
export function modulePath(paramName: string): string {
  const i = paramName.lastIndexOf(".");
  return i < 0 ? paramName : paramName.slice(0, i);
}

/** The last component of a module path: `bert.encoder.layer.0.attention.self.query` → `query`. */
export function lastComponent(path: string): string {
  const i = path.lastIndexOf(".");
  return i < 0 ? path : path.slice(i + 1);
}

/**
 * Repeated blocks found in parameter names: `bert.encoder.layer.3.…` → `{ "bert.encoder.layer": 4 }`
 * (highest index + 1 for each list of numbered modules, outermost list only).
 */
export function repeatedBlocks(names: readonly string[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const n of names) {
    const m = /^(.*?)\.(\d+)(?:\.|$)/.exec(n);
    if (!m) continue;
    const prefix = m[1]!;
    const count = Number(m[2]) + 1;
    if ((out[prefix] ?? 0) < count) out[prefix] = count;
  }
  return out;
}
