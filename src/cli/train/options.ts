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
