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

/** Layer norm `name` of x + skip, and x + skip: one `SkipLayerNormalization` under `contribOps`. */
function addLn(ctx: ModelContext, name: string, x: Value, skip: Value, eps: number): [Value, Value] {
  if (ctx.options.contribOps?.skipLayerNorm) return G.skipLayerNormalization(x, skip, ctx.param(`${name}.weight`), ctx.param(`${name}.bias`), eps);
  const h = G.add(x, skip);
  return [ln(ctx, name, h, eps), h];
}

const TANH_GELU: ReadonlySet<string> = new Set(["gelu_new", "gelu_tanh", "gelu_pytorch_tanh", "gelu_fast"]);

/** The attention sublayer of block `i` on the normalised input `xn`. */
function attn(ctx: ModelContext, cfg: Gpt2Config, i: number, xn: Value, allowed: Value, cache?: KvCache): Value {
  const p = `transformer.h.${i}`;
  const H = cfg.hiddenSize;
  const hd = cfg.headDim;
  return ctx.g.withScope(`${p}.attn`, () => {
    const qkv = ctx.linear(`${p}.attn.c_attn`, xn, conv1d);
    const scale = cfg.scaleAttnWeights ? 1 / Math.sqrt(hd) : 1;
    let o: Value;
    if (cache && ctx.options.contribOps?.attention) {
      const [q, k, v] = G.split(qkv, [H, H, H], 2);
      o = cache.attendFused(i, q!, k!, v!, scale);
    } else {
      const [q, k, v] = G.split(qkv, [H, H, H], 2).map((t) => splitHeads(t, cfg.numHeads, hd));
      o = mergeHeads(
        cache
          ? cache.attend(i, q!, k!, v!, scale)
          : ((p) => attention(q!, p.k, p.v, p.allowed, scale, { dropout: (pr) => drop(ctx, pr, cfg.attnDropout) }))(prefixed(ctx.prefix, i, k!, v!, allowed)),
      );
    }
    return drop(ctx, ctx.linear(`${p}.attn.c_proj`, o, conv1d), cfg.residDropout);
  });
}

/** The MLP sublayer of block `i` on the normalised input `hn`. */
function mlp(ctx: ModelContext, cfg: Gpt2Config, i: number, hn: Value): Value {
  const p = `transformer.h.${i}`;
  return ctx.g.withScope(`${p}.mlp`, () => {
    const u = ctx.linear(`${p}.mlp.c_fc`, hn, conv1d);
    const f = ctx.options.contribOps?.fastGelu && TANH_GELU.has(cfg.activation) ? G.fastGelu(u) : activation(cfg.activation, u);
    return drop(ctx, ctx.linear(`${p}.mlp.c_proj`, f, conv1d), cfg.residDropout);
  });
}

export function buildGpt2(ctx: ModelContext, cfg: Gpt2Config, inputs: ModelInputs): ModelOutputs {
  const { g } = ctx;
  const eps = cfg.layerNormEps;
  const tok = G.gather(ctx.param("transformer.wte.weight"), inputs.inputIds);
  const hooked = ctx.embeds(tok, inputs.attentionMask);
  const pos = G.gather(ctx.param("transformer.wpe.weight"), inputs.positionIds ?? positionsAfter(hooked.mask, ctx.prefix));
  let x = drop(ctx, G.add(hooked.embeds, pos), cfg.embdDropout);
  const allowed = inputs.kvCache ? inputs.kvCache.newAllowed : attentionAllowed(hooked.mask, true);
  // each block: h = x + attn(ln_1(x)); x' = h + mlp(ln_2(h)). The residual sum feeding a layer
  // norm is carried as `skip` so that, under contribOps, the two form one SkipLayerNormalization.
  let skip: Value | null = null;
  for (let i = 0; i < cfg.numLayers; i++) {
    const pending: Value | null = skip;
    const r = g.withScope(`transformer.h.${i}`, () => {
      const [xn, x0] = pending ? addLn(ctx, `transformer.h.${i}.ln_1`, x, pending, eps) : [ln(ctx, `transformer.h.${i}.ln_1`, x, eps), x];
      const a = attn(ctx, cfg, i, xn, allowed, inputs.kvCache);
      const [hn, h] = addLn(ctx, `transformer.h.${i}.ln_2`, x0, a, eps);
      return { h, m: mlp(ctx, cfg, i, hn) };
    });
    x = r.h;
    skip = r.m;
  }
  if (skip) x = G.add(x, skip);
  if (inputs.logitsIndex) x = atPositions(x, inputs.logitsIndex);
  x = ln(ctx, "transformer.ln_f", x, eps);
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
