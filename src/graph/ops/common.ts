import { GraphBuildError } from "../../errors.js";
import type { DType } from "../../tensor.js";
import { broadcastShapes } from "../shape.js";
import type { Value, ValueInfo } from "../types.js";

export const FLOAT_DTYPES: ReadonlySet<DType> = new Set(["float32", "float64", "float16", "bfloat16"]);

export function isFloat(v: { dtype: DType }): boolean {
  return FLOAT_DTYPES.has(v.dtype);
}

export function arity(op: string, inputs: readonly Value[], min: number, max = min): void {
  if (inputs.length < min || inputs.length > max) {
    throw new GraphBuildError(op, `expects ${min === max ? min : `${min}–${max}`} inputs, got ${inputs.length}`);
  }
}

export function sameDtype(op: string, inputs: readonly Value[]): DType {
  const d = inputs[0]!.dtype;
  for (const v of inputs) {
    if (v.dtype !== d) throw new GraphBuildError(op, `input dtypes differ: ${inputs.map((i) => i.dtype).join(" vs ")}`);
  }
  return d;
}

/** Output of an elementwise unary op: same dtype and shape. */
export function unaryInfer(op: string) {
  return (inputs: readonly Value[]): ValueInfo[] => {
    arity(op, inputs, 1);
    return [{ dtype: inputs[0]!.dtype, shape: inputs[0]!.shape }];
  };
}

/** Output of a broadcasting op; `outDtype` overrides (comparisons give bool). */
export function broadcastInfer(op: string, outDtype?: DType, n = 2) {
  return (inputs: readonly Value[]): ValueInfo[] => {
    arity(op, inputs, n);
    const dtype = sameDtype(op, inputs);
    let shape = inputs[0]!.shape;
    for (const v of inputs.slice(1)) shape = broadcastShapes(op, shape, v.shape);
    return [{ dtype: outDtype ?? dtype, shape }];
  };
}

/** The values of a constant int64 input (an initializer), or null if it is computed at run time. */
export function constInts(v: Value | undefined): number[] | null {
  if (!v || v.kind !== "initializer" || !v.data || v.data.dtype !== "int64") return null;
  return Array.from(v.data.data as BigInt64Array, (x) => Number(x));
}

export function requireConstInts(op: string, v: Value | undefined, what: string): number[] {
  const c = constInts(v);
  if (!c) throw new GraphBuildError(op, `${what} must be a constant int64 tensor`);
  return c;
}
