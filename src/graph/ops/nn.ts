/** Normalisations. Forward uses ORT's fused kernels; backward is written with primitives. */
import type { OpName } from "./names.js";
import { GraphBuildError } from "../../errors.js";
import * as G from "../api.js";
import type { OpDef } from "../op-def.js";
import { normAxis } from "../shape.js";
import type { Graph } from "../graph.js";
import type { Value } from "../types.js";
import { type Tensor, allocate } from "../../tensor.js";
import { arity, unaryInfer } from "./common.js";

const unitAffines = new WeakMap<Graph, Map<string, [Value, Value]>>();

/** Scale 1 and bias 0 of a normalised shape, one pair of constants per graph, shape and dtype. */
function unitAffine(g: Graph, shape: readonly number[], dtype: "float32" | "float64"): [Value, Value] {
  let m = unitAffines.get(g);
  if (!m) unitAffines.set(g, (m = new Map()));
  const key = `${dtype}:${shape.join("x")}`;
  let p = m.get(key);
  if (!p) {
    const n = shape.reduce((q, d) => q * d, 1);
    const fill = (v: number) => {
      const data = allocate(dtype, n).fill(v);
      return g.constant({ dtype, shape, data } as Tensor);
    };
    m.set(key, (p = [fill(1), fill(0)]));
  }
  return p;
}

/** Sum over the leading axes of `v` so it has rank `rank` (the broadcast rows of a norm's affine). */
function unbroadcastRows(v: Value, rank: number): Value {
  const extra = v.rank - rank;
  return extra > 0 ? G.reduceSum(v, [...Array(extra).keys()], false) : v;
}

function axisOf(n: { attrs: { axis?: unknown }; inputs: readonly Value[] }): number {
  return normAxis("Softmax", (n.attrs.axis as number | undefined) ?? -1, n.inputs[0]!.rank);
}

export const nnOps = {
  Softmax: {
    type: "Softmax",
    attrs: { axis: "int" },
    infer: unaryInfer("Softmax"),
    // dx = y ⊙ (dy − Σ dy⊙y)
    vjp: (_g, n, [dy]) => {
      const y = n.outputs[0]!;
      return [G.mul(y, G.sub(dy!, G.reduceSum(G.mul(dy!, y), [axisOf(n)])))];
    },
  },
  LogSoftmax: {
    type: "LogSoftmax",
    attrs: { axis: "int" },
    infer: unaryInfer("LogSoftmax"),
    // dx = dy − softmax ⊙ Σ dy
    vjp: (_g, n, [dy]) => {
      const y = n.outputs[0]!;
      return [G.sub(dy!, G.mul(G.exp(y), G.reduceSum(dy!, [axisOf(n)])))];
    },
  },
  // rows of scores [N, C] against class ids [N]; reduction "none": loss [N] (0 at ignored rows) and log_prob [N, C]
  SoftmaxCrossEntropyLoss: {
    type: "SoftmaxCrossEntropyLoss",
    attrs: { reduction: "string", ignore_index: "int" },
    infer: (inputs, attrs) => {
      arity("SoftmaxCrossEntropyLoss", inputs, 2);
      const [x, labels] = inputs as [Value, Value];
      if (x.rank !== 2 || labels.rank !== 1) throw new GraphBuildError("SoftmaxCrossEntropyLoss", "expects scores [N, C] and labels [N]");
      if (labels.dtype !== "int64" && labels.dtype !== "int32") throw new GraphBuildError("SoftmaxCrossEntropyLoss", `labels must be int64 or int32, got ${labels.dtype}`);
      if (attrs.reduction !== "none") throw new GraphBuildError("SoftmaxCrossEntropyLoss", "only reduction 'none' is supported (reduce the per-row losses with ordinary ops)");
      return [
        { dtype: x.dtype, shape: [x.shape[0]!] },
        { dtype: x.dtype, shape: x.shape },
      ];
    },
    // d loss_i / d x_i = softmax(x_i) − onehot(label_i), zero at ignored rows; log_prob as LogSoftmax
    vjp: (_g, n, [dl, dlp]) => {
      const [x, labels] = n.inputs as [Value, Value];
      const p = G.exp(n.outputs[1]!);
      const ignore = n.attrs.ignore_index as number | undefined;
      let dx: Value | null = null;
      if (dl) {
        const ignored = ignore === undefined ? null : G.equal(labels, ignore);
        const s = G.unsqueeze(ignored ? G.where(ignored, 0, dl) : dl, [1]);
        const at = G.unsqueeze(ignored ? G.where(ignored, 0, labels) : labels, [1]);
        dx = G.scatterElementsAdd(G.mul(p, s), at, G.neg(s), 1);
      }
      if (dlp) {
        const t = G.sub(dlp, G.mul(p, G.reduceSum(dlp, [1])));
        dx = dx ? G.add(dx, t) : t;
      }
      return [dx ? (dx.dtype === x.dtype ? dx : G.cast(dx, x.dtype)) : null, null];
    },
  },
  // outputs Y, Mean and InvStdDev (the last two are float32 with the default stash_type 1)
  LayerNormalization: {
    type: "LayerNormalization",
    attrs: { axis: "int", epsilon: "float", stash_type: "int" },
    infer: (inputs, attrs) => {
      arity("LayerNormalization", inputs, 2, 3);
      const x = inputs[0]!;
      if (inputs.some((v) => v.dtype !== x.dtype)) throw new GraphBuildError("LayerNormalization", "x, scale and bias dtypes differ");
      const a = normAxis("LayerNormalization", (attrs.axis as number | undefined) ?? -1, x.rank);
      const stats = { dtype: "float32" as const, shape: [...x.shape.slice(0, a), ...x.shape.slice(a).map(() => 1)] };
      if (attrs.stash_type !== undefined && attrs.stash_type !== 1) throw new GraphBuildError("LayerNormalization", "only stash_type 1 (float32 statistics) is supported");
      return [{ dtype: x.dtype, shape: x.shape }, stats, stats];
    },
    // dx = σ⁻¹·(g − mean(g) − x̂·mean(g·x̂)), g = dy·scale; x̂ and σ⁻¹ from one normalisation of x
    // with unit scale (fused kernel) instead of recomputing the mean and variance with primitives
    // float16 x: the backward is computed in float32 (x cast up once), as the forward kernel
    // computes its statistics in float32; mean(g·x̂) over a row in float16 loses the small terms
    vjp: (g, n, [dy]) => {
      const [x16, scale16, bias] = n.inputs as [Value, Value, Value | undefined];
      if (!dy) return [null, null, null].slice(0, n.inputs.length);
      const half = x16.dtype === "float16" || x16.dtype === "bfloat16";
      const x = half ? G.cast(x16, "float32") : x16;
      const scale = half ? G.cast(scale16, "float32") : scale16;
      const a = normAxis("LayerNormalization", (n.attrs.axis as number | undefined) ?? -1, x.rank);
      const eps = (n.attrs.epsilon as number | undefined) ?? 1e-5;
      const axes = [...Array(x.rank - a).keys()].map((i) => i + a);
      const inner = x.shape.slice(a);
      let xhat: Value;
      let inv: Value;
      if ((x.dtype === "float32" || x.dtype === "float64") && inner.every((d): d is number => typeof d === "number")) {
        const [ones, zeros] = unitAffine(g, inner, x.dtype);
        const [y, , invStd] = g.op("LayerNormalization", [x, ones, zeros], { axis: a, epsilon: eps });
        xhat = y!;
        inv = G.cast(invStd!, x.dtype);
      } else {
        const xc = G.sub(x, G.reduceMean(x, axes));
        inv = G.reciprocal(G.sqrt(G.add(G.reduceMean(G.mul(xc, xc), axes), eps)));
        xhat = G.mul(xc, inv);
      }
      const dy32 = half ? G.cast(dy, "float32") : dy;
      const gx = G.mul(dy32, scale);
      const dx = G.mul(inv, G.sub(G.sub(gx, G.reduceMean(gx, axes)), G.mul(xhat, G.reduceMean(G.mul(gx, xhat), axes))));
      // the scale's gradient is summed over the broadcast rows in float32 before the cast back
      const dscale = half ? G.cast(unbroadcastRows(G.mul(dy32, xhat), scale16.rank), scale16.dtype) : G.mul(dy32, xhat);
      const out: (Value | null)[] = [G.cast(dx, x16.dtype), dscale];
      if (bias) out.push(half ? G.cast(unbroadcastRows(dy32, bias.rank), bias.dtype) : dy);
      return out;
    },
  },
} satisfies Partial<Record<OpName, OpDef>>;
