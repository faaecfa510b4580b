/** Normalisations. Forward uses ORT's fused kernels; backward is written with primitives. */
import type { OpName } from "./names.js";
import { GraphBuildError } from "../../errors.js";
import * as G from "../api.js";
import type { OpDef } from "../op-def.js";
import { normAxis } from "../shape.js";
import type { Value } from "../types.js";
import { arity, unaryInfer } from "./common.js";

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
  LayerNormalization: {
    type: "LayerNormalization",
    attrs: { axis: "int", epsilon: "float", stash_type: "int" },
    infer: (inputs) => {
      arity("LayerNormalization", inputs, 2, 3);
      const x = inputs[0]!;
      if (inputs.some((v) => v.dtype !== x.dtype)) throw new GraphBuildError("LayerNormalization", "x, scale and bias dtypes differ");
      return [{ dtype: x.dtype, shape: x.shape }];
    },
    vjp: (_g, n, [dy]) => {
      const [x, scale, bias] = n.inputs as [Value, Value, Value | undefined];
      const a = normAxis("LayerNormalization", (n.attrs.axis as number | undefined) ?? -1, x.rank);
      const eps = (n.attrs.epsilon as number | undefined) ?? 1e-5;
      const axes = [...Array(x.rank - a).keys()].map((i) => i + a);
      const xc = G.sub(x, G.reduceMean(x, axes));
      const inv = G.reciprocal(G.sqrt(G.add(G.reduceMean(G.mul(xc, xc), axes), eps)));
      const xhat = G.mul(xc, inv);
      const gx = G.mul(dy!, scale);
      const dx = G.mul(inv, G.sub(G.sub(gx, G.reduceMean(gx, axes)), G.mul(xhat, G.reduceMean(G.mul(gx, xhat), axes))));
      const out: (Value | null)[] = [dx, G.mul(dy!, xhat)];
      if (bias) out.push(dy!);
      return out;
    },
  },
} satisfies Partial<Record<OpName, OpDef>>;
