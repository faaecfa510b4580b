/**
 * Argument parsers shared by `peft train`, `peft eval` and `peft demo`. Each throws commander's
 * `InvalidArgumentError`, which commander prints as
 * `error: option '--r <n>' argument 'x' is invalid. <reason>` with exit status 1.
 */
import { InvalidArgumentError } from "commander";
import type { TargetSpec } from "../../tuners/common/target.js";

export function parsePositiveInt(value: string): number {
  const n = Number(value);
  if (!/^\s*\d+\s*$/.test(value) || !Number.isSafeInteger(n) || n < 1) throw new InvalidArgumentError("expected a positive integer.");
  return n;
}

export function parseNonNegativeInt(value: string): number {
  const n = Number(value);
  if (!/^\s*\d+\s*$/.test(value) || !Number.isSafeInteger(n)) throw new InvalidArgumentError("expected an integer ≥ 0.");
  return n;
}

export function parsePositiveNumber(value: string): number {
  const n = Number(value);
  if (value.trim() === "" || !Number.isFinite(n) || n <= 0) throw new InvalidArgumentError("expected a positive number (e.g. 3, 0.5, 2e-4).");
  return n;
}

export function parseNonNegativeNumber(value: string): number {
  const n = Number(value);
  if (value.trim() === "" || !Number.isFinite(n) || n < 0) throw new InvalidArgumentError("expected a number ≥ 0.");
  return n;
}

/** A fraction in [0, 1). */
export function parseFraction(value: string): number {
  const n = Number(value);
  if (value.trim() === "" || !Number.isFinite(n) || n < 0 || n >= 1) throw new InvalidArgumentError("expected a number in [0, 1).");
  return n;
}

/** `all-linear` or comma-separated module names (`query,value` or full names). */
export function parseTargetSpec(value: string): TargetSpec {
  const v = value.trim();
  if (v.toLowerCase() === "all-linear") return { kind: "allLinear" };
  const names = v.split(",").map((s) => s.trim());
  if (names.length === 0 || names.some((n) => n === "" || /\s/.test(n))) {
    throw new InvalidArgumentError("expected 'all-linear' or comma-separated module names such as 'query,value'.");
  }
  return { kind: "names", names };
}

/** `key=value` for `--adapter-config` (repeatable): value parsed as JSON, else kept as a string; accumulated into one object. */
export function parseConfigAssignment(value: string, previous: Record<string, unknown> | undefined): Record<string, unknown> {
  const eq = value.indexOf("=");
  const key = eq > 0 ? value.slice(0, eq).trim() : "";
  if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(key)) throw new InvalidArgumentError("expected key=value with a PEFT config field name, e.g. decompose_both=true.");
  const text = value.slice(eq + 1);
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    v = text;
  }
  return { ...(previous ?? {}), [key]: v };
}
