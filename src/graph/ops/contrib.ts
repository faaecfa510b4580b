/**
 * onnxruntime's `com.microsoft` contrib kernels the decoding graphs may use in place of chains of
 * standard ops (docs/performance.md, "Contrib ops"). They exist in onnxruntime's CPU execution
 * provider, not in the ONNX standard, and have no gradient here: inference graphs only.
 */
import { GraphBuildError, NoGradientError } from "../../errors.js";
import type { OpDef } from "../op-def.js";
import type { Value } from "../types.js";
import { arity, sameDtype } from "./common.js";
import type { OpName } from "./names.js";

const MS = "com.microsoft";

const inferenceOnly = (op: string) => (): never => {
  throw new NoGradientError(op, "an onnxruntime contrib kernel has no gradient rule; build graphs that are differentiated without contrib ops");
};

function rank(op: string, v: Value, r: number, what: string): void {
  if (v.rank !== r) throw new GraphBuildError(op, `${what} must have rank ${r}, got ${v.toString()}`);
}

export const contribOps = {
  // query [B, S, N·h], key / value [B, L, N·h] (new tokens), optional attention_bias [B|1, N|1, S, P+L]
  // and past_key / past_value [B, N, P, h] (inputs at ONNX positions 0, 1, 2, 5, 6, 7): output [B, S, N·h]
  MultiHeadAttention: {
    type: "MultiHeadAttention",
    domain: MS,
    attrs: { num_heads: "int", scale: "float", mask_filter_value: "float", unidirectional: "int" },
    infer: (inputs) => {
      arity("MultiHeadAttention", inputs, 3, 6);
      const [q, k, v] = inputs as [Value, Value, Value];
      for (const [x, name] of [[q, "query"], [k, "key"], [v, "value"]] as const) rank("MultiHeadAttention", x, 3, name);
      const dtype = sameDtype("MultiHeadAttention", [q, k, v]);
      const out = { dtype, shape: [q.shape[0]!, q.shape[1]!, v.shape[2]!] };
      if (inputs.length < 5) return [out];
      // with a past: present_key / present_value [B, N, P+L, h] (onnxruntime reads the past only when they are outputs)
      const pk = inputs[inputs.length - 2]!;
      const present = { dtype, shape: [pk.shape[0]!, pk.shape[1]!, null, pk.shape[3]!] };
      return [out, present, present];
    },
    vjp: inferenceOnly("MultiHeadAttention"),
  },
  // layer norm of input + skip (+ bias): outputs y, mean, inv_std_var, input + skip (+ bias)
  SkipLayerNormalization: {
    type: "SkipLayerNormalization",
    domain: MS,
    attrs: { epsilon: "float" },
    infer: (inputs) => {
      arity("SkipLayerNormalization", inputs, 3, 5);
      const [x, skip] = inputs as [Value, Value];
      rank("SkipLayerNormalization", x, 3, "input");
      const dtype = sameDtype("SkipLayerNormalization", inputs);
      const stats = { dtype: "float32" as const, shape: [x.shape[0]!, x.shape[1]!, 1] };
      if (skip.shape.length !== 3 && skip.shape.length !== 2) throw new GraphBuildError("SkipLayerNormalization", `skip must have rank 3 or 2, got ${skip.toString()}`);
      return [{ dtype, shape: x.shape }, stats, stats, { dtype, shape: x.shape }];
    },
    vjp: inferenceOnly("SkipLayerNormalization"),
  },
  // GELU, tanh approximation (transformers' gelu_new): 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))
  FastGelu: {
    type: "FastGelu",
    domain: MS,
    attrs: {},
    infer: (inputs) => {
      arity("FastGelu", inputs, 1, 2);
      return [{ dtype: sameDtype("FastGelu", inputs), shape: inputs[0]!.shape }];
    },
    vjp: inferenceOnly("FastGelu"),
  },
} satisfies Partial<Record<OpName, OpDef>>;
