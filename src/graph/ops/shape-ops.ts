/** Shape manipulation: reshape, transpose, concat, slice, split, (un)squeeze, expand, pad, cast. */
import type { OpName } from "./names.js";
import { GraphBuildError, NoGradientError } from "../../errors.js";
import * as G from "../api.js";
import { nonDifferentiable, type OpDef } from "../op-def.js";
import { formatDim, parseDimOrName, productFactors } from "../dim.js";
import { broadcastShapes, dimProduct, dimSum, normAxis } from "../shape.js";
import type { Dim, Value } from "../types.js";
import { arity, constInts, isFloat, requireConstInts } from "./common.js";

const BIG = 2 ** 53 - 1;

/** Split a dim into its numeric factor and its other factors (`"batch*seq*4"` → 4, [batch, seq]). */
function factors(d: Dim): { num: number; syms: Dim[] } | null {
  const e = parseDimOrName(d);
  if (!e) return null;
  const { num, rest } = productFactors(e);
  return { num, syms: rest.map(formatDim) };
}

function divideDims(total: Dim, known: Dim): Dim {
  const t = factors(total);
  const k = factors(known);
  if (!t || !k || k.num === 0 || t.num % k.num !== 0) return null;
  const syms = [...t.syms];
  for (const s of k.syms) {
    const i = syms.indexOf(s);
    if (i < 0) return null;
    syms.splice(i, 1);
  }
  return dimProduct([t.num / k.num, ...syms]);
}

function reshapeInfer(x: Value, target: number[]): Dim[] {
  const out: Dim[] = target.map((t, i) => (t === 0 ? (x.shape[i] ?? null) : t === -1 ? null : t));
  const neg = target.indexOf(-1);
  if (target.filter((t) => t === -1).length > 1) throw new GraphBuildError("Reshape", "at most one -1 in the target shape");
  if (neg >= 0) out[neg] = divideDims(dimProduct(x.shape), dimProduct(out.filter((_, i) => i !== neg)));
  return out;
}

/**
 * The shape a runtime shape tensor stands for, when it can be traced to a constant, a Shape node,
 * unit-step 1-D Slices of those, products and sums of one-element ones, and Concats of all these
 * (`[...shape(x)[:-1], n]`, `G.shapeTensor`).
 */
function shapeValueDims(s: Value): Dim[] | null {
  const c = constInts(s);
  if (c) return c;
  const p = s.producer;
  if (!p || s.rank !== 1) return null;
  if (p.op === "Shape") return [...p.inputs[0]!.shape];
  if (p.op === "Concat") {
    const parts = p.inputs.map(shapeValueDims);
    return parts.every((d): d is Dim[] => d !== null) ? parts.flat() : null;
  }
  if ((p.op === "Mul" || p.op === "Add") && p.inputs.every((i) => i.rank === 1)) {
    const [a, b] = p.inputs.map(shapeValueDims);
    if (!a || !b || a.length !== 1 || b.length !== 1) return null;
    return [p.op === "Mul" ? dimProduct([a[0]!, b[0]!]) : dimSum([a[0]!, b[0]!])];
  }
  if (p.op === "Slice") {
    const base = shapeValueDims(p.inputs[0]!);
    const [st, en] = [constInts(p.inputs[1]), constInts(p.inputs[2])];
    const steps = p.inputs[4] ? constInts(p.inputs[4]) : [1];
    if (!base || !st || !en || st.length !== 1 || !steps || steps[0] !== 1) return null;
    const norm = (v: number) => Math.min(Math.max(v < 0 ? v + base.length : v, 0), base.length);
    return base.slice(norm(st[0]!), norm(en[0]!));
  }
  return null;
}

function sliceDim(d: Dim, start: number, end: number, step: number): Dim {
  if (step !== 1) {
    if (typeof d !== "number") return null;
  }
  if (typeof d === "number") {
    const clamp = (v: number, lo: number, hi: number) => Math.min(Math.max(v, lo), hi);
    let s = start < 0 ? start + d : start;
    let e = end < 0 ? end + d : end;
    if (step > 0) {
      s = clamp(s, 0, d);
      e = clamp(e, 0, d);
      return Math.max(0, Math.ceil((e - s) / step));
    }
    s = clamp(s, -1, d - 1);
    e = clamp(e, -1, d - 1);
    return Math.max(0, Math.ceil((s - e) / -step));
  }
  if (start === 0 && end >= BIG) return d;
  if (start >= 0 && end >= 0 && end < BIG) return end - start;
  if (start < 0 && end >= BIG) return -start;
  return null;
}

/** Pads that undo a unit-step slice along `axes` of `x` (int64 tensor, computed at run time where needed). */
function unsliceP(x: Value, starts: number[], ends: number[], axes: number[]): Value {
  const g = x.graph;
  const r = x.rank;
  const before: (number | Value)[] = new Array<number | Value>(r).fill(0);
  const after: (number | Value)[] = new Array<number | Value>(r).fill(0);
  const dimAt = (a: number): number | Value => {
    const d = x.shape[a];
    return typeof d === "number" ? d : G.gather(G.shapeOf(x), g.ints([a]));
  };
  axes.forEach((ax, i) => {
    const a = normAxis("Slice", ax, r);
    const s = starts[i]!;
    const e = ends[i]!;
    const d = dimAt(a);
    const sub = (p: number | Value, q: number): number | Value =>
      typeof p === "number" ? Math.max(0, p - q) : G.sub(p, g.ints([q]));
    before[a] = s >= 0 ? (typeof d === "number" ? Math.min(s, d) : s) : sub(d, -s);
    after[a] = e >= BIG ? 0 : e < 0 ? -e : sub(d, e);
  });
  const all = [...before, ...after];
  if (all.every((v): v is number => typeof v === "number")) return g.ints(all);
  return G.concat(all.map((v) => (typeof v === "number" ? g.ints([v]) : v)), 0);
}

export const shapeOps = {
  Reshape: {
    type: "Reshape",
    attrs: {},
    infer: (inputs) => {
      arity("Reshape", inputs, 2);
      const [x, s] = inputs as [Value, Value];
      const target = constInts(s);
      if (target) return [{ dtype: x.dtype, shape: reshapeInfer(x, target) }];
      const traced = shapeValueDims(s);
      // a traced constant part may use Reshape's 0 / -1 codes: only positive or symbolic dims are exact
      const exact = traced && traced.every((d) => typeof d !== "number" || d > 0) ? traced : null;
      return [{ dtype: x.dtype, shape: exact ?? new Array<Dim>((s.shape[0] as number) ?? 0).fill(null) }];
    },
    vjp: (_g, n, [dy]) => [G.reshape(dy!, G.shapeTensor(n.inputs[0]!)), null],
  },
  Transpose: {
    type: "Transpose",
    attrs: { perm: "ints" },
    infer: (inputs, attrs) => {
      arity("Transpose", inputs, 1);
      const x = inputs[0]!;
      const perm = (attrs.perm as number[] | undefined) ?? [...Array(x.rank).keys()].reverse();
      if (perm.length !== x.rank) throw new GraphBuildError("Transpose", `perm has ${perm.length} axes, input rank ${x.rank}`);
      return [{ dtype: x.dtype, shape: perm.map((p) => x.shape[p]!) }];
    },
    vjp: (_g, n, [dy]) => {
      const x = n.inputs[0]!;
      const perm = (n.attrs.perm as number[] | undefined) ?? [...Array(x.rank).keys()].reverse();
      const inv = new Array<number>(perm.length);
      perm.forEach((p, i) => (inv[p] = i));
      return [G.transpose(dy!, inv)];
    },
  },
  Concat: {
    type: "Concat",
    attrs: { axis: "int" },
    infer: (inputs, attrs) => {
      if (inputs.length === 0) throw new GraphBuildError("Concat", "no inputs");
      const x = inputs[0]!;
      const a = normAxis("Concat", attrs.axis as number, x.rank);
      const shape = [...x.shape];
      shape[a] = dimSum(inputs.map((v) => v.shape[a]!));
      return [{ dtype: x.dtype, shape }];
    },
    vjp: (_g, n, [dy]) => {
      const x0 = n.inputs[0]!;
      const a = normAxis("Concat", n.attrs.axis as number, x0.rank);
      const dims = n.inputs.map((v) => v.shape[a]!);
      const sizes = dims.every((d): d is number => typeof d === "number")
        ? x0.graph.ints(dims)
        : G.concat(n.inputs.map((v) => G.gather(G.shapeOf(v), x0.graph.ints([a]))), 0);
      return x0.graph.op("Split", [dy!, sizes], { axis: a });
    },
  },
  Split: {
    type: "Split",
    attrs: { axis: "int" },
    infer: (inputs, attrs) => {
      arity("Split", inputs, 2);
      const [x, s] = inputs as [Value, Value];
      const a = normAxis("Split", (attrs.axis as number | undefined) ?? 0, x.rank);
      const sizes = constInts(s);
      const count = sizes ? sizes.length : (s.shape[0] as number);
      if (typeof count !== "number") throw new GraphBuildError("Split", "the number of outputs must be known");
      return Array.from({ length: count }, (_, i) => {
        const shape = [...x.shape];
        shape[a] = sizes ? sizes[i]! : null;
        return { dtype: x.dtype, shape };
      });
    },
    vjp: (_g, n, dys) => {
      const a = (n.attrs.axis as number | undefined) ?? 0;
      return [G.concat(n.outputs.map((o, i) => dys[i] ?? G.zerosLike(o)), a), null];
    },
  },
  Slice: {
    type: "Slice",
    attrs: {},
    infer: (inputs) => {
      arity("Slice", inputs, 3, 5);
      const x = inputs[0]!;
      const starts = requireConstInts("Slice", inputs[1], "starts");
      const ends = requireConstInts("Slice", inputs[2], "ends");
      const axes = inputs[3] ? requireConstInts("Slice", inputs[3], "axes") : starts.map((_, i) => i);
      const steps = inputs[4] ? requireConstInts("Slice", inputs[4], "steps") : starts.map(() => 1);
      const shape = [...x.shape];
      axes.forEach((ax, i) => {
        const a = normAxis("Slice", ax, x.rank);
        shape[a] = sliceDim(x.shape[a]!, starts[i]!, ends[i]!, steps[i]!);
      });
      return [{ dtype: x.dtype, shape }];
    },
    vjp: (_g, n, [dy]) => {
      const x = n.inputs[0]!;
      const starts = constInts(n.inputs[1])!;
      const ends = constInts(n.inputs[2])!;
      const axes = n.inputs[3] ? constInts(n.inputs[3])! : starts.map((_, i) => i);
      const steps = n.inputs[4] ? constInts(n.inputs[4])! : starts.map(() => 1);
      if (steps.some((s) => s !== 1)) throw new NoGradientError("Slice", "only unit steps are differentiable");
      return [x.graph.op1("Pad", [dy!, unsliceP(x, starts, ends, axes), x.graph.scalar(0, x.dtype)]), null, null, null, null].slice(
        0,
        n.inputs.length,
      );
    },
  },
  Pad: {
    type: "Pad",
    attrs: { mode: "string" },
    infer: (inputs, attrs) => {
      arity("Pad", inputs, 2, 3);
      if (attrs.mode !== undefined && attrs.mode !== "constant") throw new GraphBuildError("Pad", "only constant mode is supported");
      const x = inputs[0]!;
      const pads = constInts(inputs[1]);
      const r = x.rank;
      const shape = x.shape.map((d, i) =>
        pads && typeof d === "number" ? d + pads[i]! + pads[i + r]! : pads && pads[i] === 0 && pads[i + r] === 0 ? d : null,
      );
      return [{ dtype: x.dtype, shape }];
    },
    vjp: (_g, n, [dy]) => {
      const x = n.inputs[0]!;
      const pads = constInts(n.inputs[1]);
      if (!pads) throw new NoGradientError("Pad", "pads must be constant to differentiate");
      const r = x.rank;
      const axes = [...Array(r).keys()];
      const starts = axes.map((i) => pads[i]!);
      const ends = axes.map((i) => (pads[i + r]! > 0 ? -pads[i + r]! : BIG));
      return [G.slice(dy!, starts, ends, axes), null, null].slice(0, n.inputs.length);
    },
  },
  Squeeze: {
    type: "Squeeze",
    attrs: {},
    infer: (inputs) => {
      arity("Squeeze", inputs, 2);
      const x = inputs[0]!;
      const axes = requireConstInts("Squeeze", inputs[1], "axes").map((a) => normAxis("Squeeze", a, x.rank));
      return [{ dtype: x.dtype, shape: x.shape.filter((_, i) => !axes.includes(i)) }];
    },
    vjp: (_g, n, [dy]) => [G.reshape(dy!, G.shapeTensor(n.inputs[0]!)), null],
  },
  Unsqueeze: {
    type: "Unsqueeze",
    attrs: {},
    infer: (inputs) => {
      arity("Unsqueeze", inputs, 2);
      const x = inputs[0]!;
      const r = x.rank + requireConstInts("Unsqueeze", inputs[1], "axes").length;
      const axes = requireConstInts("Unsqueeze", inputs[1], "axes").map((a) => normAxis("Unsqueeze", a, r));
      const shape: Dim[] = [];
      let j = 0;
      for (let i = 0; i < r; i++) shape.push(axes.includes(i) ? 1 : x.shape[j++]!);
      return [{ dtype: x.dtype, shape }];
    },
    vjp: (_g, n, [dy]) => [G.reshape(dy!, G.shapeTensor(n.inputs[0]!)), null],
  },
  Expand: {
    type: "Expand",
    attrs: {},
    infer: (inputs) => {
      arity("Expand", inputs, 2);
      const [x, s] = inputs as [Value, Value];
      const dims = shapeValueDims(s) ?? new Array<Dim>((s.shape[0] as number) ?? 0).fill(null);
      return [{ dtype: x.dtype, shape: broadcastShapes("Expand", x.shape, dims) }];
    },
    // autodiff sums dy over the broadcast axes
    vjp: (_g, _n, [dy]) => [dy!, null],
  },
  Cast: {
    type: "Cast",
    attrs: { to: "int" },
    infer: (inputs, attrs) => {
      arity("Cast", inputs, 1);
      return [{ dtype: G.dtypeFromOnnx(attrs.to as number), shape: inputs[0]!.shape }];
    },
    vjp: (_g, n, [dy]) => {
      const x = n.inputs[0]!;
      return [isFloat(x) && isFloat(n.outputs[0]!) ? G.cast(dy!, x.dtype) : null];
    },
  },
  CumSum: {
    type: "CumSum",
    attrs: { exclusive: "int", reverse: "int" },
    infer: (inputs) => {
      arity("CumSum", inputs, 2);
      return [{ dtype: inputs[0]!.dtype, shape: inputs[0]!.shape }];
    },
    vjp: (_g, n, [dy]) => {
      const axis = constInts(n.inputs[1]);
      if (!axis) throw new NoGradientError("CumSum", "axis must be constant to differentiate");
      return [G.cumsum(dy!, axis[0]!, { exclusive: !!n.attrs.exclusive, reverse: !n.attrs.reverse }), null];
    },
  },
  Shape: {
    type: "Shape",
    attrs: {},
    infer: (inputs) => [{ dtype: "int64", shape: [inputs[0]!.rank] }],
    vjp: nonDifferentiable,
  },
  Size: { type: "Size", attrs: {}, infer: () => [{ dtype: "int64", shape: [] }], vjp: nonDifferentiable },
  Range: {
    type: "Range",
    attrs: {},
    infer: (inputs) => {
      arity("Range", inputs, 3);
      return [{ dtype: inputs[0]!.dtype, shape: [null] }];
    },
    vjp: nonDifferentiable,
  },
} satisfies Partial<Record<OpName, OpDef>>;
