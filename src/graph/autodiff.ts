/**
 * Reverse-mode automatic differentiation on the graph. `grad(loss, wrt)` appends the backward
 * nodes (standard ONNX ops only, written by each op's `vjp` rule) and returns one gradient value
 * per `wrt` entry. This file owns the order of evaluation, accumulation of fan-out gradients,
 * and the reduction of broadcast gradients back to their input's shape.
 */
import { GraphBuildError, NoGradientError } from "../errors.js";
import * as G from "./api.js";
import type { Graph } from "./graph.js";
import { nonDifferentiable } from "./op-def.js";
import { isFloat } from "./ops/common.js";
import { OPS } from "./ops/index.js";
import type { OpName } from "./ops/names.js";
import { formatShape } from "./shape.js";
import type { Shape, Value } from "./types.js";

/** Sum `gv` over the axes along which a value of `target` shape was broadcast to gv's shape. */
export function unbroadcast(gv: Value, target: Shape): Value {
  let out = gv;
  const extra = out.rank - target.length;
  if (extra < 0) throw new GraphBuildError("unbroadcast", `gradient ${formatShape(gv.shape)} has lower rank than ${formatShape(target)}`);
  if (extra > 0) out = G.reduceSum(out, [...Array(extra).keys()], false);
  const axes: number[] = [];
  target.forEach((d, i) => {
    if (d === 1 && out.shape[i] !== 1) axes.push(i);
  });
  if (axes.length > 0) out = G.reduceSum(out, axes, true);
  return out;
}

export interface GradOptions {
  /** Gradient of the loss (default: ones, for a scalar loss). */
  seed?: Value;
}

/** Gradients of `loss` with respect to each value in `wrt` (zeros where `loss` does not depend on it). */
export function grad(loss: Value, wrt: readonly Value[], opts: GradOptions = {}): Value[] {
  const g: Graph = loss.graph;
  if (!isFloat(loss)) throw new GraphBuildError("grad", `loss must be floating point, got ${loss.dtype}`);
  for (const w of wrt) {
    if (w.graph !== g) throw new GraphBuildError("grad", `'${w}' belongs to another graph`);
    if (!isFloat(w)) throw new GraphBuildError("grad", `cannot differentiate with respect to ${w.dtype} value '${w}'`);
  }
  const nodes = [...g.nodes];
  // values that depend on some wrt entry
  const live = new Set<number>(wrt.map((w) => w.id));
  // a custom gradient's output depends on its declared inputs, whatever computes it
  const sources = (n: (typeof nodes)[number]) => g.customGradients.get(n.id)?.inputs ?? n.inputs;
  for (const n of nodes) {
    if (g.stopped.has(n.id)) continue;
    if (sources(n).some((i) => live.has(i.id))) for (const o of n.outputs) live.add(o.id);
  }
  if (!live.has(loss.id)) return wrt.map((w) => G.zerosLike(w));

  return g.withScope("grad", () => {
    const grads = new Map<number, Value>();
    const accumulate = (inp: Value, gi: Value | null): void => {
      if (!gi || !live.has(inp.id) || !isFloat(inp)) return;
      const reduced = unbroadcast(gi, inp.shape);
      const prev = grads.get(inp.id);
      grads.set(inp.id, prev ? G.add(prev, reduced) : reduced);
    };
    const seed = opts.seed ?? g.scalar(1, loss.dtype);
    grads.set(loss.id, loss.rank === 0 ? seed : G.expand(seed, G.shapeOf(loss)));
    for (let k = nodes.length - 1; k >= 0; k--) {
      const n = nodes[k]!;
      if (g.stopped.has(n.id)) continue;
      const gouts = n.outputs.map((o) => grads.get(o.id) ?? null);
      if (gouts.every((x) => x === null)) continue;
      if (!sources(n).some((i) => live.has(i.id) && isFloat(i))) continue;
      const custom = g.customGradients.get(n.id);
      if (custom) {
        const gins = custom.rule(gouts[0]!);
        if (gins.length !== custom.inputs.length) {
          throw new NoGradientError(n.op, `custom gradient returned ${gins.length} gradients for ${custom.inputs.length} inputs`);
        }
        custom.inputs.forEach((inp, i) => accumulate(inp, gins[i] ?? null));
        continue;
      }
      const rule = OPS[n.op as OpName].vjp;
      if (rule === nonDifferentiable) continue;
      const gins = rule(g, n, gouts);
      if (gins.length < n.inputs.length || gins.slice(n.inputs.length).some((x) => x !== null)) {
        throw new NoGradientError(n.op, `rule returned ${gins.length} gradients for ${n.inputs.length} inputs`);
      }
      n.inputs.forEach((inp, i) => accumulate(inp, gins[i] ?? null));
    }
    return wrt.map((w) => grads.get(w.id) ?? G.zerosLike(w));
  });
}
