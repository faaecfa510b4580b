/** Reductions (ReduceSum takes axes as an input since opset 13; ReduceMean/Max as an attribute until 18). */
import type { OpName } from "./names.js";
import * as G from "../api.js";
import type { OpDef } from "../op-def.js";
import { normAxis } from "../shape.js";
import type { Dim, Node, Value, ValueInfo } from "../types.js";
import { arity, constInts } from "./common.js";

function reducedInfo(x: Value, axes: number[] | null, keepdims: boolean): ValueInfo {
  const all = axes === null || axes.length === 0;
  const set = new Set(all ? [...Array(x.rank).keys()] : axes.map((a) => normAxis("Reduce", a, x.rank)));
  const shape: Dim[] = [];
  x.shape.forEach((d, i) => {
    if (!set.has(i)) shape.push(d);
    else if (keepdims) shape.push(1);
  });
  return { dtype: x.dtype, shape };
}

function axesOf(n: Node): number[] {
  const x = n.inputs[0]!;
  const raw = n.op === "ReduceSum" ? constInts(n.inputs[1]) : ((n.attrs.axes as number[] | undefined) ?? null);
  if (raw === null || raw.length === 0) return [...Array(x.rank).keys()];
  return raw.map((a) => normAxis(n.op, a, x.rank)).sort((a, b) => a - b);
}

/** dy of a reduction, broadcast back to the input's shape. */
function spread(n: Node, dy: Value): Value {
  const x = n.inputs[0]!;
  const keep = (n.attrs.keepdims as number | undefined) ?? 1;
  const g = keep ? dy : G.unsqueeze(dy, axesOf(n));
  return G.expand(g, G.shapeTensor(x));
}

/** Number of elements reduced, as a scalar of x's dtype. */
function countOf(n: Node): Value {
  const x = n.inputs[0]!;
  const axes = axesOf(n);
  const dims = axes.map((a) => x.shape[a]!);
  if (dims.every((d): d is number => typeof d === "number")) return x.graph.scalar(dims.reduce((p, d) => p * d, 1), x.dtype);
  return G.div(G.cast(G.size(x), x.dtype), G.cast(G.size(n.outputs[0]!), x.dtype));
}

export const reduceOps = {
  ReduceSum: {
    type: "ReduceSum",
    attrs: { keepdims: "int" },
    infer: (inputs, attrs) => {
      arity("ReduceSum", inputs, 1, 2);
      return [reducedInfo(inputs[0]!, inputs[1] ? constInts(inputs[1]) : null, ((attrs.keepdims as number | undefined) ?? 1) === 1)];
    },
    vjp: (_g, n, [dy]) => [spread(n, dy!), null],
  },
  ReduceMean: {
    type: "ReduceMean",
    attrs: { axes: "ints", keepdims: "int" },
    infer: (inputs, attrs) => {
      arity("ReduceMean", inputs, 1);
      return [reducedInfo(inputs[0]!, (attrs.axes as number[] | undefined) ?? null, ((attrs.keepdims as number | undefined) ?? 1) === 1)];
    },
    vjp: (_g, n, [dy]) => [G.div(spread(n, dy!), countOf(n))],
  },
  ReduceMax: {
    type: "ReduceMax",
    attrs: { axes: "ints", keepdims: "int" },
    infer: (inputs, attrs) => {
      arity("ReduceMax", inputs, 1);
      return [reducedInfo(inputs[0]!, (attrs.axes as number[] | undefined) ?? null, ((attrs.keepdims as number | undefined) ?? 1) === 1)];
    },
    // the gradient goes to every position equal to the maximum
    vjp: (_g, n, [dy]) => {
      const x = n.inputs[0]!;
      const keep = (n.attrs.keepdims as number | undefined) ?? 1;
      const y = keep ? n.outputs[0]! : G.unsqueeze(n.outputs[0]!, axesOf(n));
      return [G.where(G.equal(x, y), spread(n, dy!), 0)];
    },
  },
} satisfies Partial<Record<OpName, OpDef>>;
