/**
 * Llama (`LlamaForCausalLM`): RMSNorm, rotary position embeddings (default rope), grouped-query
 * attention, SwiGLU feed-forward. `buildLlamaFamily` is the decoder the Llama-shaped architectures
 * share (qwen2.ts, mistral.ts), with their differences as options: which projections have biases
 * and each layer's sliding window.
 */
import * as G from "../graph/api.js";
import { activation, dropout, rmsNorm } from "../graph/composite.js";
import type { Value } from "../graph/types.js";
import type { LlamaConfig, LlamaFamilyConfig, MistralConfig, Qwen2Config } from "../io/hf-config.js";
import { atPositions, attention, attentionAllowed, mergeHeads, positionsAfter, prefixed, splitHeads } from "./attention.js";
import { UnsupportedOptionError } from "../errors.js";
import { type ModelContext, castTensor } from "./context.js";
import type { ModelDef, ModelInputs, ModelOutputs } from "./model-def.js";

/**
 * cos and sin tables [positions, headDim] (default: all max_position_embeddings) computed in
 * float32 as transformers does (`inv_freq`, `cat(freqs, freqs)`).
 */
export function ropeTables(cfg: LlamaFamilyConfig, dtype: "float32" | "float64", positions = cfg.maxPositionEmbeddings): { cos: Float64Array; sin: Float64Array } {
  const d = cfg.headDim;
  const n = positions;
  const f = Math.fround;
  const inv = Array.from({ length: d / 2 }, (_, i) => f(1 / f(cfg.ropeTheta ** f((2 * i) / d))));
  const cos = new Float64Array(n * d);
  const sin = new Float64Array(n * d);
  for (let p = 0; p < n; p++) {
    for (let i = 0; i < d; i++) {
      const ang = dtype === "float32" ? f(p * inv[i % (d / 2)]!) : p * inv[i % (d / 2)]!;
      cos[p * d + i] = Math.cos(ang);
      sin[p * d + i] = Math.sin(ang);
    }
  }
  return { cos, sin };
}

/** x·cos + rotate_half(x)·sin, rotate_half(x) = cat(−x₂, x₁). */
function rope(x: Value, cos: Value, sin: Value, headDim: number): Value {
  const [x1, x2] = G.split(x, [headDim / 2, headDim / 2], 3);
  const rot = G.concat([G.neg(x2!), x1!], 3);
  return G.add(G.mul(x, cos), G.mul(rot, sin));
}

/** How a Llama-family architecture differs from Llama. */
export interface LlamaFamilyOptions {
  /** Biases on q_proj, k_proj, v_proj (required in the weights when true, ignored when false). */
  readonly qkvBias: boolean;
  /** Bias on o_proj. */
  readonly oBias: boolean;
  /** Biases on gate_proj, up_proj, down_proj. */
  readonly mlpBias: boolean;
  /** Layer i's sliding window (a query sees itself and the window − 1 keys before it), or null for full causal attention. */
  readonly slidingWindow: (layer: number) => number | null;
}

export function buildLlama(ctx: ModelContext, cfg: LlamaConfig, inputs: ModelInputs): ModelOutputs {
  const bias = cfg.attentionBias;
  return buildLlamaFamily(ctx, cfg, inputs, { qkvBias: bias, oBias: bias, mlpBias: cfg.mlpBias, slidingWindow: () => null });
}

export function buildLlamaFamily(ctx: ModelContext, cfg: LlamaFamilyConfig, inputs: ModelInputs, opts: LlamaFamilyOptions): ModelOutputs {
  const { g } = ctx;
  // the tables are computed in float32 (float64 graphs: float64) and, under float16, rounded once
  // to float16 as transformers does (`cos.to(x.dtype)`)
  const dtype = ctx.dtype === "float64" ? "float64" : "float32";
  const tok = G.gather(ctx.param("model.embed_tokens.weight"), inputs.inputIds);
  const hooked = ctx.embeds(tok, inputs.attentionMask);
  // fed tables (incremental decoding: sized to the cache, not to max_position_embeddings) or constants
  const fed = inputs.rotaryTables;
  const tables = fed ? null : ropeTables(cfg, dtype);
  const tshape = [cfg.maxPositionEmbeddings, cfg.headDim];
  const mk = (which: "cos" | "sin") => {
    if (fed) return G.cast(fed[which], ctx.dtype);
    const a = tables![which];
    return g.constant(dtype === "float64" ? { dtype, shape: tshape, data: a } : castTensor({ dtype, shape: tshape, data: Float32Array.from(a) }, ctx.dtype));
  };
  // [S, D] broadcasts over [B, H, S, D]; per-row positions [B, S] give [B, 1, S, D]
  const perRow = (t: Value) => (inputs.positionIds ? G.unsqueeze(t, [1]) : t);
  const pos = inputs.positionIds ?? positionsAfter(hooked.mask, ctx.prefix);
  const cos = perRow(G.gather(mk("cos"), pos));
  const sin = perRow(G.gather(mk("sin"), pos));
  const cache = inputs.kvCache;
  // one mask per distinct window, shared by the layers that use it
  const masks = new Map<number | null, Value>();
  const allowedFor = (window: number | null): Value => {
    let m = masks.get(window);
    if (!m) masks.set(window, (m = attentionAllowed(hooked.mask, true, window)));
    return m;
  };
  const hd = cfg.headDim;
  let x = hooked.embeds;
  for (let i = 0; i < cfg.numLayers; i++) {
    const p = `model.layers.${i}`;
    x = g.withScope(p, () => {
      const h = rmsNorm(x, ctx.param(`${p}.input_layernorm.weight`), cfg.rmsNormEps);
      const a = g.withScope(`${p}.self_attn`, () => {
        const qkv = { bias: opts.qkvBias };
        const q = rope(splitHeads(ctx.linear(`${p}.self_attn.q_proj`, h, qkv), cfg.numHeads, hd), cos, sin, hd);
        const k = rope(splitHeads(ctx.linear(`${p}.self_attn.k_proj`, h, qkv), cfg.numKeyValueHeads, hd), cos, sin, hd);
        const v = splitHeads(ctx.linear(`${p}.self_attn.v_proj`, h, qkv), cfg.numKeyValueHeads, hd);
        const drop = (pr: Value) => (ctx.training && cfg.attentionDropout > 0 ? dropout(pr, cfg.attentionDropout, ctx.nextSeed()) : pr);
        const heads = { heads: cfg.numHeads, kvHeads: cfg.numKeyValueHeads };
        const window = opts.slidingWindow(i);
        if (window !== null && ctx.prefix && !cache) throw new UnsupportedOptionError("adapter", "peft_type", "PREFIX_TUNING", `layer ${i} has a sliding window; prefix tuning needs full attention`);
        const pre = prefixed(cache ? null : ctx.prefix, i, k, v, allowedFor(window));
        const o = cache
          ? cache.attend(i, q, k, v, 1 / Math.sqrt(hd), { ...heads, slidingWindow: window })
          : attention(q, pre.k, pre.v, pre.allowed, 1 / Math.sqrt(hd), { ...heads, dropout: drop });
        return ctx.linear(`${p}.self_attn.o_proj`, mergeHeads(o), { bias: opts.oBias });
      });
      const r = G.add(x, a);
      const m = g.withScope(`${p}.mlp`, () => {
        const n2 = rmsNorm(r, ctx.param(`${p}.post_attention_layernorm.weight`), cfg.rmsNormEps);
        const mlp = { bias: opts.mlpBias };
        const gate = activation(cfg.activation, ctx.linear(`${p}.mlp.gate_proj`, n2, mlp));
        return ctx.linear(`${p}.mlp.down_proj`, G.mul(gate, ctx.linear(`${p}.mlp.up_proj`, n2, mlp)), mlp);
      });
      return G.add(r, m);
    });
  }
  if (inputs.logitsIndex) x = atPositions(x, inputs.logitsIndex);
  x = rmsNorm(x, ctx.param("model.norm.weight"), cfg.rmsNormEps);
  const logits = ctx.linear("lm_head", x, { bias: false });
  return { logits, hidden: x, attentionMask: hooked.mask };
}

/**
 * The ModelDef every Llama-family architecture shares (HF module names, PEFT's default LoRA
 * targets `q_proj`/`v_proj`, `lm_head` tied to `model.embed_tokens` when the config says so).
 */
export function llamaFamilyDef<C extends LlamaConfig | Qwen2Config | MistralConfig>(modelType: C["modelType"], build: (ctx: ModelContext, cfg: C, inputs: ModelInputs) => ModelOutputs): ModelDef<C> {
  return {
    modelType,
    task: "causal-lm",
    outputModules: ["lm_head"],
    loraTargets: ["q_proj", "v_proj"],
    layersPattern: ["layers"],
    tiedWeights: (cfg) => (cfg.tieWordEmbeddings ? [["lm_head.weight", "model.embed_tokens.weight"]] : []),
    embeddingParam: "model.embed_tokens.weight",
    build,
  };
}

export const llama: ModelDef<LlamaConfig> = llamaFamilyDef("llama", buildLlama);
