/**
 * Symbolic dimensions as expressions. A `Dim` in a shape is a number, a string or null (unknown);
 * the string is the ONNX `dim_param` spelling of a small expression over named sizes: `"batch"`,
 * `"batch*seq"`, `"seq+4"`, `"(seq+4)*batch"`. This file is the one place that reads and writes
 * that spelling (`parseDim`, `formatDim`) and the one evaluator (`foldDim`): shape inference
 * builds shape tensors with it (`graph/api.ts`), shape ops divide products with it
 * (`ops/shape-ops.ts`), FLOP counting (`graph/flops.ts`) and the memory estimate
 * (`bench/memory.ts`) turn it into numbers.
 */
import type { Dim } from "./types.js";

/** A dimension expression: a number, a named size, or a sum / product of expressions. */
export type DimExpr =
  | { readonly kind: "num"; readonly value: number }
  | { readonly kind: "sym"; readonly name: string }
  | { readonly kind: "sum"; readonly terms: readonly DimExpr[] }
  | { readonly kind: "product"; readonly factors: readonly DimExpr[] };

export const dimNum = (value: number): DimExpr => ({ kind: "num", value });
export const dimSym = (name: string): DimExpr => ({ kind: "sym", name });

/** The operations `foldDim` maps an expression onto (numbers, graph values, …). */
export interface DimAlgebra<T> {
  num(value: number): T;
  /** The value of a named size; null: unknown (the whole expression is then unknown). */
  sym(name: string): T | null;
  add(a: T, b: T): T;
  mul(a: T, b: T): T;
}

/** Evaluates `e` in `alg`; null when a named size is unknown. */
export function foldDim<T>(e: DimExpr, alg: DimAlgebra<T>): T | null {
  switch (e.kind) {
    case "num":
      return alg.num(e.value);
    case "sym":
      return alg.sym(e.name);
    case "sum":
    case "product": {
      const parts = (e.kind === "sum" ? e.terms : e.factors).map((p) => foldDim(p, alg));
      if (parts.some((p) => p === null)) return null;
      const op = e.kind === "sum" ? alg.add : alg.mul;
      return (parts as T[]).reduce((acc, p) => op(acc, p));
    }
  }
}

const NUMBERS: Omit<DimAlgebra<number>, "sym"> = { num: (v) => v, add: (a, b) => a + b, mul: (a, b) => a * b };

/** The size of `d` given the named sizes (`symbols` maps a name to its size); null if unknown. */
export function evalDim(d: Dim | DimExpr, symbols: Readonly<Record<string, number>> | ((name: string) => number | undefined)): number | null {
  const e = typeof d === "object" && d !== null ? d : parseDim(d);
  if (e === null) return null;
  const lookup = typeof symbols === "function" ? symbols : (n: string) => symbols[n];
  return foldDim(e, { ...NUMBERS, sym: (n) => lookup(n) ?? null });
}

/**
 * Reads a dim's spelling: numbers, names (`[A-Za-z_][\w.:-]*`), `+`, `*` and parentheses. A sum
 * and a product side by side need parentheses (`(a*b)+c`, `(a+b)*c`): older graphs spelled both as
 * `a*b+c`, so that spelling is ambiguous and reads as null, as do an unknown dim (null) and a
 * string that is no such expression (`parseDimOrName` takes those as one name).
 */
export function parseDim(d: Dim): DimExpr | null {
  if (d === null) return null;
  if (typeof d === "number") return dimNum(d);
  const tokens = d.match(/\d+|[A-Za-z_][\w.:-]*|[+*()]|\S/g) ?? [];
  let i = 0;
  const sum = (): DimExpr | null => {
    const terms: DimExpr[] = [];
    let bareProduct = false;
    for (;;) {
      const t = product();
      if (!t) return null;
      terms.push(t.expr);
      bareProduct ||= t.bare;
      if (tokens[i] !== "+") break;
      i++;
    }
    if (terms.length === 1) return terms[0]!;
    return bareProduct ? null : { kind: "sum", terms };
  };
  const product = (): { expr: DimExpr; bare: boolean } | null => {
    const factors: DimExpr[] = [];
    for (;;) {
      const f = atom();
      if (!f) return null;
      factors.push(f);
      if (tokens[i] !== "*") break;
      i++;
    }
    return factors.length === 1 ? { expr: factors[0]!, bare: false } : { expr: { kind: "product", factors }, bare: true };
  };
  const atom = (): DimExpr | null => {
    const t = tokens[i++];
    if (t === undefined) return null;
    if (t === "(") {
      const e = sum();
      return e && tokens[i++] === ")" ? e : null;
    }
    if (/^\d+$/.test(t)) return dimNum(Number(t));
    if (/^[A-Za-z_]/.test(t)) return dimSym(t);
    return null;
  };
  const e = sum();
  return e && i === tokens.length ? e : null;
}

/** `parseDim`, with any string that is not an expression taken as one name (ONNX allows any dim_param). */
export function parseDimOrName(d: Dim): DimExpr | null {
  return parseDim(d) ?? (typeof d === "string" ? dimSym(d) : null);
}

/** The spelling of `e`: a number when it is one, else `a*b*4`, `a+b`, `(a+4)*b`, `(a*b)+c`. */
export function formatDim(e: DimExpr): Dim {
  const str = (x: DimExpr, parent: "sum" | "product" | null): string => {
    switch (x.kind) {
      case "num":
        return String(x.value);
      case "sym":
        return x.name;
      case "sum":
      case "product": {
        const s = x.kind === "sum" ? x.terms.map((t) => str(t, "sum")).join("+") : x.factors.map((f) => str(f, "product")).join("*");
        return parent !== null && parent !== x.kind ? `(${s})` : s;
      }
    }
  };
  return e.kind === "num" ? e.value : str(e, null);
}

/** A product as its numeric factor and its other factors (`batch*seq*4` → 4, [batch, seq]). */
export function productFactors(e: DimExpr): { num: number; rest: DimExpr[] } {
  const parts = e.kind === "product" ? e.factors : [e];
  let num = 1;
  const rest: DimExpr[] = [];
  for (const p of parts) {
    if (p.kind === "num") num *= p.value;
    else rest.push(p);
  }
  return { num, rest };
}
