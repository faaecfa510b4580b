/** What tuners may know about a base model, found by a dry-run build (no weight data read). */
import { Graph } from "../graph/graph.js";
import { ModelContext, type WeightSource } from "../models/context.js";
import type { LoadedModel } from "../models/load.js";
import type { Tensor } from "../tensor.js";
import type { BaseModelInfo } from "../tuners/common/types.js";

export function modelInfo(model: LoadedModel, weights: WeightSource = model.weights): BaseModelInfo {
  const g = new Graph("dry_run");
  const ctx = new ModelContext(g, weights, { dryRun: true });
  const inputIds = g.input("input_ids", "int64", ["batch", "seq"]);
  const attentionMask = g.input("attention_mask", "int64", ["batch", "seq"]);
  model.def.build(ctx, model.config, { inputIds, attentionMask });
  const cfg = model.config;
  return {
    modelType: cfg.modelType,
    linearModules: ctx.linearSites.map((s) => ({ ...s })),
    convModules: ctx.convSites.map((s) => ({ ...s })),
    outputModules: model.def.outputModules,
    hiddenSize: cfg.hiddenSize,
    numLayers: cfg.numLayers,
    numHeads: cfg.numHeads,
    numKeyValueHeads: (cfg as { numKeyValueHeads?: number }).numKeyValueHeads ?? cfg.numHeads,
    headDim: (cfg as { headDim?: number }).headDim ?? cfg.hiddenSize / cfg.numHeads,
    weight: (name: string): Tensor => weights.get(name),
    has: (name: string) => weights.has(name),
    embeddingParam: model.def.embeddingParam,
    embeddingDim: weights.has(model.def.embeddingParam) ? (weights.info(model.def.embeddingParam).shape[1] ?? cfg.hiddenSize) : cfg.hiddenSize,
    defaultTargets: model.def.loraTargets,
    paramNames: weights.keys(),
  };
}
