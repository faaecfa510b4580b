/**
 * BERT (`BertModel` + `BertForSequenceClassification`), eager attention, parameter names as in
 * transformers' state dict (`bert.encoder.layer.0.attention.self.query.weight`, `classifier.weight`).
 */
import { GraphBuildError } from "../errors.js";
import * as G from "../graph/api.js";
import { activation, dropout } from "../graph/composite.js";
import type { Value } from "../graph/types.js";
import type { BertConfig } from "../io/hf-config.js";
import { attention, attentionAllowed, mergeHeads, positions, splitHeads } from "./attention.js";
import type { ModelContext } from "./context.js";
import type { ModelDef, ModelInputs, ModelOutputs } from "./model-def.js";

function drop(ctx: ModelContext, x: Value, p: number): Value {
  return ctx.training && p > 0 ? dropout(x, p, ctx.nextSeed()) : x;
}

function layerNorm(ctx: ModelContext, name: string, x: Value, eps: number): Value {
  return G.layerNormalization(x, ctx.param(`${name}.weight`), ctx.param(`${name}.bias`), eps);
}

function encoderLayer(ctx: ModelContext, cfg: BertConfig, p: string, x: Value, allowed: Value): Value {
  const hd = cfg.headDim;
  const attn = ctx.g.withScope(`${p}.attention`, () => {
    const q = splitHeads(ctx.linear(`${p}.attention.self.query`, x), cfg.numHeads, hd);
    const k = splitHeads(ctx.linear(`${p}.attention.self.key`, x), cfg.numHeads, hd);
    const v = splitHeads(ctx.linear(`${p}.attention.self.value`, x), cfg.numHeads, hd);
    const ctxv = mergeHeads(
      attention(q, k, v, allowed, 1 / Math.sqrt(hd), { dropout: (pr) => drop(ctx, pr, cfg.attentionDropout) }),
    );
    const o = drop(ctx, ctx.linear(`${p}.attention.output.dense`, ctxv), cfg.hiddenDropout);
    return layerNorm(ctx, `${p}.attention.output.LayerNorm`, G.add(o, x), cfg.layerNormEps);
  });
  const h = activation(cfg.activation, ctx.linear(`${p}.intermediate.dense`, attn));
  const o = drop(ctx, ctx.linear(`${p}.output.dense`, h), cfg.hiddenDropout);
  return layerNorm(ctx, `${p}.output.LayerNorm`, G.add(o, attn), cfg.layerNormEps);
}

export function buildBert(ctx: ModelContext, cfg: BertConfig, inputs: ModelInputs): ModelOutputs {
  const { g } = ctx;
  const words = G.gather(ctx.param("bert.embeddings.word_embeddings.weight"), inputs.inputIds);
  const hooked = ctx.embeds(words, inputs.attentionMask);
  const embeds = g.withScope("bert.embeddings", () => {
    const pos = G.gather(ctx.param("bert.embeddings.position_embeddings.weight"), positions(hooked.mask));
    const typeTable = ctx.param("bert.embeddings.token_type_embeddings.weight");
    if (inputs.tokenTypeIds && hooked.embeds !== words) {
      throw new GraphBuildError("bert", "token_type_ids together with virtual-token adapters (prompt tuning) are not supported");
    }
    const types = G.gather(typeTable, inputs.tokenTypeIds ?? g.ints([0]));
    return G.add(G.add(hooked.embeds, pos), types);
  });
  let x = drop(ctx, layerNorm(ctx, "bert.embeddings.LayerNorm", embeds, cfg.layerNormEps), cfg.hiddenDropout);
  const allowed = attentionAllowed(hooked.mask, false);
  for (let i = 0; i < cfg.numLayers; i++) {
    const p = `bert.encoder.layer.${i}`;
    x = g.withScope(p, () => encoderLayer(ctx, cfg, p, x, allowed));
  }
  const cls = G.squeeze(G.slice(x, [0], [1], [1]), [1]);
  const pooled = G.tanh(ctx.linear("bert.pooler.dense", cls));
  const logits = ctx.linear("classifier", drop(ctx, pooled, cfg.classifierDropout ?? cfg.hiddenDropout));
  return { logits, hidden: x, attentionMask: hooked.mask };
}

export const bert: ModelDef<BertConfig> = {
  modelType: "bert",
  task: "seq-cls",
  outputModules: ["classifier"],
  loraTargets: ["query", "value"],
  layersPattern: ["layer"],
  tiedWeights: () => [],
  embeddingParam: "bert.embeddings.word_embeddings.weight",
  build: buildBert,
};
