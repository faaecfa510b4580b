/**
 * GPT-2 (`GPT2LMHeadModel`). Its projections are `Conv1D` modules whose weights are stored
 * `[in, out]` (PEFT's `fan_in_fan_out`); `lm_head.weight` is tied to `transformer.wte.weight`.
 */
import * as G from "../graph/api.js";
import { activation, dropout } from "../graph/composite.js";
import type { Value } from "../graph/types.js";
import type { Gpt2Config } from "../io/hf-config.js";
import { type KvCache, atPositions, attention, attentionAllowed, mergeHeads, positionsAfter, prefixed, splitHeads } from "./attention.js";
import type { ModelContext } from "./context.js";
import type { ModelDef, ModelInputs, ModelOutputs } from "./model-def.js";

const conv1d = { fanInFanOut: true };

function drop(ctx: ModelContext, x: Value, p: number): Value {
  return ctx.training && p > 0 ? dropout(x, p, ctx.nextSeed()) : x;
}

function ln(ctx: ModelContext, name: string, x: Value, eps: number): Value {
  return G.layerNormalization(x, ctx.param(`${name}.weight`), ctx.param(`${name}.bias`), eps);
}

function block(ctx: ModelContext, cfg: Gpt2Config, i: number, x: Value, allowed: Value, cache?: KvCache): Value {
  const p = `transformer.h.${i}`;
  const H = cfg.hiddenSize;
  const hd = cfg.headDim;
  const a = ctx.g.withScope(`${p}.attn`, () => {
    const qkv = ctx.linear(`${p}.attn.c_attn`, ln(ctx, `${p}.ln_1`, x, cfg.layerNormEps), conv1d);
    const [q, k, v] = G.split(qkv, [H, H, H], 2).map((t) => splitHeads(t, cfg.numHeads, hd));
    const scale = cfg.scaleAttnWeights ? 1 / Math.sqrt(hd) : 1;
    const o = mergeHeads(
      cache
        ? cache.attend(i, q!, k!, v!, scale)
        : ((p) => attention(q!, p.k, p.v, p.allowed, scale, { dropout: (pr) => drop(ctx, pr, cfg.attnDropout) }))(prefixed(ctx.prefix, i, k!, v!, allowed)),
    );
    return drop(ctx, ctx.linear(`${p}.attn.c_proj`, o, conv1d), cfg.residDropout);
  });
  const h = G.add(x, a);
  const m = ctx.g.withScope(`${p}.mlp`, () => {
    const f = activation(cfg.activation, ctx.linear(`${p}.mlp.c_fc`, ln(ctx, `${p}.ln_2`, h, cfg.layerNormEps), conv1d));
    return drop(ctx, ctx.linear(`${p}.mlp.c_proj`, f, conv1d), cfg.residDropout);
  });
  return G.add(h, m);
}

export function buildGpt2(ctx: ModelContext, cfg: Gpt2Config, inputs: ModelInputs): ModelOutputs {
  const { g } = ctx;
  const tok = G.gather(ctx.param("transformer.wte.weight"), inputs.inputIds);
  const hooked = ctx.embeds(tok, inputs.attentionMask);
  const pos = G.gather(ctx.param("transformer.wpe.weight"), inputs.positionIds ?? positionsAfter(hooked.mask, ctx.prefix));
  let x = drop(ctx, G.add(hooked.embeds, pos), cfg.embdDropout);
  const allowed = inputs.kvCache ? inputs.kvCache.newAllowed : attentionAllowed(hooked.mask, true);
  for (let i = 0; i < cfg.numLayers; i++) {
    x = g.withScope(`transformer.h.${i}`, () => block(ctx, cfg, i, x, allowed, inputs.kvCache));
  }
  if (inputs.logitsIndex) x = atPositions(x, inputs.logitsIndex);
  x = ln(ctx, "transformer.ln_f", x, cfg.layerNormEps);
  const logits = ctx.linear("lm_head", x, { bias: false });
  return { logits, hidden: x, attentionMask: hooked.mask };
}

export const gpt2: ModelDef<Gpt2Config> = {
  modelType: "gpt2",
  task: "causal-lm",
  outputModules: ["lm_head"],
  loraTargets: ["c_attn"],
  layersPattern: ["h"],
  tiedWeights: (cfg) => (cfg.tieWordEmbeddings ? [["lm_head.weight", "transformer.wte.weight"]] : []),
  embeddingParam: "transformer.wte.weight",
  build: buildGpt2,
};
