/**
 * Finite-difference gradient checking for graph code: builds `f` in float64 (or float32),
 * differentiates a random projection of its output with `grad`, and compares against central
 * differences computed by running the same ONNX graph on perturbed inputs.
 */
import { CompiledGraph } from "./session.js";
import type { DType, Tensor } from "../tensor.js";
import { grad } from "../graph/autodiff.js";
import * as G from "../graph/api.js";
import { Graph } from "../graph/graph.js";
import type { Value } from "../graph/types.js";

export interface GradCheckInput {
  readonly name: string;
  readonly shape: readonly number[];
  /** Initial values (default: seeded uniform in [-1, 1]). */
  readonly values?: ArrayLike<number>;
  /** Check the gradient of this input (default true). Non-checked inputs are still fed. */
  readonly check?: boolean;
  /** Integer inputs (indices): fed as int64 and never differentiated. */
  readonly int?: boolean;
}

export interface GradCheckResult {
  /** max |analytic − numeric| / max(1, |numeric|) over checked elements, per input. */
  readonly maxError: Record<string, number>;
  readonly worst: number;
  readonly analytic: Record<string, Float64Array>;
  readonly numeric: Record<string, Float64Array>;
}

export interface GradCheckOptions {
  dtype?: "float32" | "float64";
  eps?: number;
  seed?: number;
  /** At most this many elements per input are perturbed (chosen evenly). */
  maxElements?: number;
}

function lcg(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

function feedOf(dtype: DType, shape: readonly number[], vals: ArrayLike<number>, int: boolean): Tensor {
  if (int) return { dtype: "int64", shape, data: BigInt64Array.from(Array.from(vals, (v) => BigInt(Math.round(v)))) };
  return dtype === "float64"
    ? { dtype, shape, data: Float64Array.from(vals) }
    : { dtype: "float32", shape, data: Float32Array.from(vals) };
}

export async function gradCheck(
  inputs: readonly GradCheckInput[],
  f: (...xs: Value[]) => Value,
  opts: GradCheckOptions = {},
): Promise<GradCheckResult> {
  const dtype = opts.dtype ?? "float64";
  const eps = opts.eps ?? (dtype === "float64" ? 1e-6 : 1e-2);
  const rand = lcg(opts.seed ?? 7);
  const g = new Graph("gradcheck");
  const xs = inputs.map((i) => g.input(i.name, i.int ? "int64" : dtype, i.shape));
  const y = f(...xs);
  // random projection so every output element contributes with a distinct weight
  const n = y.shape.reduce<number>((p, d) => p * (d as number), 1);
  const w = Float64Array.from({ length: n }, () => rand() * 2 - 1);
  const proj = g.constant(feedOf(dtype, y.shape as number[], w, false));
  const loss = G.sumAll(G.mul(y, proj));
  g.output(loss, "loss");
  const checked = inputs.map((inp, k) => ({ inp, v: xs[k]! })).filter(({ inp }) => inp.check !== false && !inp.int);
  const grads = grad(loss, checked.map((c) => c.v));
  grads.forEach((gv, k) => g.output(gv, `grad_${checked[k]!.inp.name}`));
  const cg = await CompiledGraph.create(g, { threads: 1 });
  const values = inputs.map((i) => Float64Array.from(i.values ?? Array.from({ length: i.shape.reduce((p, d) => p * d, 1) }, () => rand() * 2 - 1)));
  const feeds = (): Record<string, Tensor> =>
    Object.fromEntries(inputs.map((i, k) => [i.name, feedOf(dtype, i.shape, values[k]!, !!i.int)]));
  const base = await cg.run(feeds());
  const analytic: Record<string, Float64Array> = {};
  const numeric: Record<string, Float64Array> = {};
  const maxError: Record<string, number> = {};
  const lossAt = async (): Promise<number> => Number((await cg.run(feeds(), ["loss"])).loss!.data[0]);
  for (const { inp } of checked) {
    const k = inputs.indexOf(inp);
    const a = Float64Array.from(base[`grad_${inp.name}`]!.data as ArrayLike<number>);
    const num = new Float64Array(a.length).fill(NaN);
    const total = values[k]!.length;
    const step = Math.max(1, Math.floor(total / (opts.maxElements ?? 64)));
    let worst = 0;
    for (let e = 0; e < total; e += step) {
      const orig = values[k]![e]!;
      values[k]![e] = orig + eps;
      const up = await lossAt();
      values[k]![e] = orig - eps;
      const down = await lossAt();
      values[k]![e] = orig;
      num[e] = (up - down) / (2 * eps);
      worst = Math.max(worst, Math.abs(a[e]! - num[e]!) / Math.max(1, Math.abs(num[e]!)));
    }
    analytic[inp.name] = a;
    numeric[inp.name] = num;
    maxError[inp.name] = worst;
  }
  await cg.release();
  return { maxError, worst: Math.max(0, ...Object.values(maxError)), analytic, numeric };
}
