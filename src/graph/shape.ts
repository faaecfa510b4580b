import { GraphBuildError } from "../errors.js";
import { type DimExpr, dimNum, formatDim, parseDimOrName } from "./dim.js";
import type { Dim, Shape } from "./types.js";

/** Broadcast two shapes with numpy rules; symbolic dims must match exactly or be 1. */
export function broadcastShapes(op: string, a: Shape, b: Shape): Dim[] {
  const n = Math.max(a.length, b.length);
  const out: Dim[] = [];
  for (let i = 0; i < n; i++) {
    const x = i - (n - a.length) >= 0 ? a[i - (n - a.length)]! : 1;
    const y = i - (n - b.length) >= 0 ? b[i - (n - b.length)]! : 1;
    if (x === 1) out.push(y);
    else if (y === 1) out.push(x);
    else if (x === y) out.push(x);
    else if (x === null) out.push(y);
    else if (y === null) out.push(x);
    else if (typeof x === "number" && typeof y === "number") {
      throw new GraphBuildError(op, `shapes [${a.join(", ")}] and [${b.join(", ")}] do not broadcast`);
    } else out.push(typeof x === "number" ? x : typeof y === "number" ? y : null);
  }
  return out;
}

export function normAxis(op: string, axis: number, rank: number): number {
  const a = axis < 0 ? axis + rank : axis;
  if (a < 0 || a >= rank) throw new GraphBuildError(op, `axis ${axis} out of range for rank ${rank}`);
  return a;
}

/** Product of dims, symbolic when any dim is a symbol (`"batch*seq"`), null when any is unknown. */
export function dimProduct(dims: readonly Dim[]): Dim {
  let num = 1;
  const syms: DimExpr[] = [];
  for (const d of dims) {
    if (d === null) return null;
    if (typeof d === "number") num *= d;
    else syms.push(parseDimOrName(d)!);
  }
  if (syms.length === 0) return num;
  if (num === 0) return 0;
  const factors = num === 1 ? syms : [...syms, dimNum(num)];
  return formatDim(factors.length === 1 ? factors[0]! : { kind: "product", factors });
}

/** Sum of dims (for Concat). */
export function dimSum(dims: readonly Dim[]): Dim {
  if (dims.every((d): d is number => typeof d === "number")) return dims.reduce((s, d) => s + d, 0);
  if (dims.some((d) => d === null)) return null;
  return formatDim({ kind: "sum", terms: dims.map((d) => parseDimOrName(d)!) });
}

export function sameDim(a: Dim, b: Dim): boolean {
  return a !== null && b !== null && a === b;
}

export function formatShape(s: Shape): string {
  return `[${s.map((d) => (d === null ? "?" : String(d))).join(", ")}]`;
}
