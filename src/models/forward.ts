/** Building and running a model's inference graph. */
import * as G from "../graph/api.js";
import { Graph } from "../graph/graph.js";
import { CompiledGraph, type SessionOptions } from "../runtime/session.js";
import type { DType, Tensor } from "../tensor.js";
import { type ContextOptions, ModelContext } from "./context.js";
import type { LoadedModel } from "./load.js";
import type { ModelOutputs } from "./model-def.js";

export interface BuiltModel {
  readonly graph: Graph;
  readonly ctx: ModelContext;
  readonly outputs: ModelOutputs;
}

/**
 * Logits of a float16 (mixed-precision) graph are cast to float32, as transformers' heads return
 * them to losses and metrics (`logits.float()`); other outputs keep the compute dtype.
 */
export function logitsInFloat32(outputs: ModelOutputs): ModelOutputs {
  const l = outputs.logits;
  return l.dtype === "float16" || l.dtype === "bfloat16" ? { ...outputs, logits: G.cast(l, "float32") } : outputs;
}

/** The model as a graph with inputs `input_ids`, `attention_mask` ([batch, seq] int64) and output `logits`. */
export function buildModelGraph(model: LoadedModel, options: ContextOptions = {}, extraOutputs: { hidden?: boolean } = {}): BuiltModel {
  const g = new Graph(`${model.config.modelType}_forward`);
  const ctx = new ModelContext(g, model.weights, options);
  const inputIds = g.input("input_ids", "int64", ["batch", "seq"]);
  const attentionMask = g.input("attention_mask", "int64", ["batch", "seq"]);
  const outputs = logitsInFloat32(model.def.build(ctx, model.config, { inputIds, attentionMask }));
  g.output(outputs.logits, "logits");
  if (extraOutputs.hidden) g.output(outputs.hidden, "hidden");
  return { graph: g, ctx, outputs };
}

/** One-shot forward pass: logits for the given ids and mask. */
export async function forwardLogits(
  model: LoadedModel,
  inputIds: Tensor<"int64">,
  attentionMask: Tensor<"int64">,
  options: ContextOptions & { session?: SessionOptions; dtype?: DType } = {},
): Promise<Tensor> {
  const { graph } = buildModelGraph(model, options);
  const cg = await CompiledGraph.create(graph, options.session ?? {});
  try {
    const out = await cg.run({ input_ids: inputIds, attention_mask: attentionMask });
    return out.logits!;
  } finally {
    await cg.release();
  }
}
