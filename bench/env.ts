/** What every benchmark reports alongside its figures, and how it prints them (one JSON line). */
import { cpus, totalmem } from "node:os";
import { InvalidArgumentError } from "commander";
import * as ort from "onnxruntime-node";
import type { ExecutionProvider } from "../src/runtime/session.js";

export interface BenchEnvironment {
  readonly threads: number;
  readonly ep: ExecutionProvider;
  readonly node: string;
  readonly onnxruntime: string;
  readonly cpu: string;
  readonly cores: number;
  readonly memoryGiB: number;
  readonly platform: string;
  readonly date: string;
}

export function benchEnvironment(opts: { threads: number; ep: ExecutionProvider }): BenchEnvironment {
  const c = cpus();
  return {
    threads: opts.threads,
    ep: opts.ep,
    node: process.version,
    onnxruntime: ort.env.versions.node ?? ort.env.versions.common,
    cpu: c[0]?.model.trim() ?? "unknown",
    cores: c.length,
    memoryGiB: Math.round((totalmem() / 2 ** 30) * 10) / 10,
    platform: `${process.platform}/${process.arch}`,
    date: new Date().toISOString(),
  };
}

/** Writes one benchmark result as a single JSON line on stdout. */
export function emitResult(result: Readonly<Record<string, unknown>>): void {
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

/** Progress for humans, on stderr (stdout carries only the JSON line). */
export function progress(msg: string): void {
  process.stderr.write(`[bench] ${msg}\n`);
}

/** Parses a positive integer option; throws a message naming the option. */
export function positiveInt(name: string): (v: string) => number {
  return (v: string) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError(`${name} must be a positive integer, got '${v}'`);
    return n;
  };
}
