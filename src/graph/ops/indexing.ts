/** Gathers and scatters. Scatter-add is what the gathers' gradients are made of. */
import type { OpName } from "./names.js";
import { GraphBuildError, NoGradientError } from "../../errors.js";
import * as G from "../api.js";
import { nonDifferentiable, type OpDef } from "../op-def.js";
import { normAxis } from "../shape.js";
import type { Value } from "../types.js";
import { arity } from "./common.js";

function indexDtype(op: string, idx: Value): void {
  if (idx.dtype !== "int64" && idx.dtype !== "int32") throw new GraphBuildError(op, `indices must be int64 or int32, got ${idx.dtype}`);
}

export const indexingOps = {
  Gather: {
    type: "Gather",
    attrs: { axis: "int" },
    infer: (inputs, attrs) => {
      arity("Gather", inputs, 2);
      const [data, idx] = inputs as [Value, Value];
      indexDtype("Gather", idx);
      const a = normAxis("Gather", (attrs.axis as number | undefined) ?? 0, data.rank);
      return [{ dtype: data.dtype, shape: [...data.shape.slice(0, a), ...idx.shape, ...data.shape.slice(a + 1)] }];
    },
    // d data = scatter-add of dy rows at the gathered indices (axis 0: embedding lookups)
    vjp: (_g, n, [dy]) => {
      const [data, idx] = n.inputs as [Value, Value];
      const a = normAxis("Gather", (n.attrs.axis as number | undefined) ?? 0, data.rank);
      if (a !== 0) throw new NoGradientError("Gather", "only axis 0 is differentiable with respect to data");
      const i64 = G.cast(idx, "int64");
      return [G.scatterNDAdd(G.zerosLike(data), G.unsqueeze(i64, [-1]), dy!), null];
    },
  },
  GatherElements: {
    type: "GatherElements",
    attrs: { axis: "int" },
    infer: (inputs) => {
      arity("GatherElements", inputs, 2);
      const [data, idx] = inputs as [Value, Value];
      indexDtype("GatherElements", idx);
      return [{ dtype: data.dtype, shape: idx.shape }];
    },
    vjp: (_g, n, [dy]) => {
      const [data, idx] = n.inputs as [Value, Value];
      return [G.scatterElementsAdd(G.zerosLike(data), idx, dy!, (n.attrs.axis as number | undefined) ?? 0), null];
    },
  },
  ScatterElements: {
    type: "ScatterElements",
    attrs: { axis: "int", reduction: "string" },
    infer: (inputs) => {
      arity("ScatterElements", inputs, 3);
      return [{ dtype: inputs[0]!.dtype, shape: inputs[0]!.shape }];
    },
    vjp: () => {
      throw new NoGradientError("ScatterElements", "scatters appear only in backward graphs; second derivatives are not supported");
    },
  },
  ScatterND: {
    type: "ScatterND",
    attrs: { reduction: "string" },
    infer: (inputs) => {
      arity("ScatterND", inputs, 3);
      return [{ dtype: inputs[0]!.dtype, shape: inputs[0]!.shape }];
    },
    vjp: () => {
      throw new NoGradientError("ScatterND", "scatters appear only in backward graphs; second derivatives are not supported");
    },
  },
  RandomUniformLike: {
    type: "RandomUniformLike",
    attrs: { seed: "float", dtype: "int", low: "float", high: "float" },
    infer: (inputs, attrs) => [
      { dtype: attrs.dtype !== undefined ? G.dtypeFromOnnx(attrs.dtype as number) : inputs[0]!.dtype, shape: inputs[0]!.shape },
    ],
    vjp: nonDifferentiable,
  },
} satisfies Partial<Record<OpName, OpDef>>;
