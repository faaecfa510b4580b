/**
 * Prefix tuning (PEFT `PREFIX_TUNING`, `PrefixTuningConfig`): learned keys and values of
 * `num_virtual_tokens` virtual tokens in front of every attention layer's own (PEFT passes them as
 * `past_key_values`), so the sequence's positions start after them and the logits cover only the
 * real tokens.
 *
 * The prefix is one matrix P [n, num_layers · 2 · token_dim]: layer l's keys are columns
 * [2l·D, (2l+1)·D), its values [(2l+1)·D, (2l+2)·D), each viewed as [n, heads, D / heads] (PEFT's
 * `view(batch, n, layers·2, heads, head_dim).permute(2, 0, 3, 1, 4).split(2)`). For models whose
 * config has key/value heads (Llama, Mistral, Qwen2) PEFT sets token_dim to head_dim · kv_heads
 * and num_attention_heads to kv_heads, head_dim being the config's `head_dim` when it has one
 * (which may differ from hidden_size / num_attention_heads), else hidden_size / num_attention_heads.
 * Without `prefix_projection`, P is the trained tensor itself (`prompt_embeddings`). With it, a new
 * adapter trains an embedding [n, D] and a Linear–Tanh–Linear `transform` (`encoder_hidden_size`)
 * that produces P, and saves P, as PEFT's `get_prompt_embedding_to_save` does.
 */
import { z } from "zod";
import { ConfigError, UnsupportedOptionError } from "../../errors.js";
import * as G from "../../graph/api.js";
import { linear } from "../../graph/composite.js";
import type { Value } from "../../graph/types.js";
import { type Tensor, toFloat32 } from "../../tensor.js";
import { COMMON_KEYS, baseFields, baseSchema, baseToRaw, parseWith, rejectUnknownKeys } from "../common/config.js";
import {
  type PromptLearningFields,
  f64,
  float32Tensor,
  hostLinear,
  hostTanh,
  promptLearningFields,
  promptLearningSchema,
  promptLearningToRaw,
  torchEmbeddingInit,
  torchLinearInit,
} from "../common/prompt-learning.js";
import { rejectFeedforward, savedModules } from "../common/train.js";
import type { AdapterInstance, BaseModelInfo, TunerConfigBase, TunerDef } from "../common/types.js";

export interface PrefixTuningConfig extends TunerConfigBase, PromptLearningFields {
  readonly peftType: "PREFIX_TUNING";
  readonly encoderHiddenSize: number | null;
  readonly prefixProjection: boolean;
  /** Holds the projection's parameters (a new adapter with `prefix_projection`), not its saved output. Not written to adapter_config.json. */
  readonly withEncoder: boolean;
}

export const PROMPT_EMBEDDINGS = "prompt_embeddings";
const ENCODER = "prompt_encoder.";
const EMBEDDING = `${ENCODER}embedding.weight`;
const lin = (i: 0 | 2) => ({ w: `${ENCODER}transform.${i}.weight`, b: `${ENCODER}transform.${i}.bias` });

/** Architectures whose builders read the prefix (`prefixed` in models/attention.ts). */
const PREFIX_MODELS: ReadonlySet<string> = new Set(["gpt2", "llama", "mistral", "qwen2"]);

const schema = z.object({
  ...baseSchema,
  ...promptLearningSchema,
  peft_type: z.literal("PREFIX_TUNING"),
  encoder_hidden_size: z.number().int().positive().nullable().optional(),
  prefix_projection: z.boolean().optional(),
});

export function parsePrefixTuningConfig(raw: Readonly<Record<string, unknown>>, file: string): PrefixTuningConfig {
  rejectUnknownKeys(raw, [...COMMON_KEYS, ...Object.keys(schema.shape)], file);
  const c = parseWith(schema, raw, file);
  const projection = c.prefix_projection ?? false;
  return {
    ...baseFields(c),
    ...promptLearningFields(c, file),
    peftType: "PREFIX_TUNING",
    encoderHiddenSize: c.encoder_hidden_size ?? null,
    prefixProjection: projection,
    withEncoder: projection && !(c.inference_mode ?? false),
  };
}

export function prefixTuningConfigToRaw(c: PrefixTuningConfig): Record<string, unknown> {
  return { ...baseToRaw(c), ...promptLearningToRaw(c), encoder_hidden_size: c.encoderHiddenSize, prefix_projection: c.prefixProjection };
}

/** Width of P: num_layers · 2 · token_dim. */
const width = (c: PrefixTuningConfig): number => c.numLayers! * 2 * c.tokenDim!;

function encoderShapes(c: PrefixTuningConfig): Map<string, readonly number[]> {
  const h = c.encoderHiddenSize!;
  const d = c.tokenDim!;
  return new Map<string, readonly number[]>([
    [EMBEDDING, [c.numVirtualTokens, d]],
    [lin(0).w, [h, d]],
    [lin(0).b, [h]],
    [lin(2).w, [width(c), h]],
    [lin(2).b, [width(c)]],
  ]);
}

function checkModel(model: BaseModelInfo): void {
  if (!PREFIX_MODELS.has(model.modelType)) {
    throw new UnsupportedOptionError("adapter_config.json", "peft_type", "PREFIX_TUNING", `prefix tuning is implemented for ${[...PREFIX_MODELS].join(", ")}, not ${model.modelType}`);
  }
}

/** What PEFT saves: P itself (`prompt_embeddings`), computed from the projection when the adapter holds one. */
function savedTensors(adapter: AdapterInstance<PrefixTuningConfig>): Map<string, Tensor> {
  const c = adapter.config;
  if (!c.withEncoder) return new Map(adapter.tensors);
  const t = adapter.tensors;
  const out = new Map<string, Tensor>();
  for (const [key, v] of t) if (!key.startsWith(ENCODER)) out.set(key, v);
  const n = c.numVirtualTokens;
  const h = hostTanh(hostLinear(f64(t.get(EMBEDDING)!), n, t.get(lin(0).w)!, t.get(lin(0).b)!));
  out.set(PROMPT_EMBEDDINGS, float32Tensor([n, width(c)], hostLinear(h, n, t.get(lin(2).w)!, t.get(lin(2).b)!)));
  return out;
}

export const prefixTuning: TunerDef<PrefixTuningConfig> = {
  name: "prefix_tuning",
  peftType: "PREFIX_TUNING",
  prefix: "prefix_tuning.",
  method: "prefix-tuning",
  kind: "prompt",
  role: (key) => (key === PROMPT_EMBEDDINGS || key.startsWith(ENCODER) ? { kind: "prompt" } : null),
  trainConfig(o) {
    rejectFeedforward(o, "prefix-tuning");
    return { peft_type: "PREFIX_TUNING", task_type: o.taskType, num_virtual_tokens: o.numVirtualTokens, ...savedModules(o) };
  },
  parseConfig: parsePrefixTuningConfig,
  toRaw: prefixTuningConfigToRaw,
  resolve(c, model) {
    checkModel(model);
    // PEFT's _prepare_prompt_learning_config: token_dim = hidden_size; then, for a config with
    // num_key_value_heads, token_dim = head_dim · num_key_value_heads and heads = kv heads, with
    // the config's head_dim when it has one (Mistral/Qwen/Llama variants where head_dim ≠
    // hidden_size / num_attention_heads), else token_dim // num_attention_heads. GPT-2 has neither:
    // token_dim = hidden_size = head_dim · heads
    const headDim = model.headDim ?? model.hiddenSize / model.numHeads;
    const tokenDim = headDim * model.numKeyValueHeads;
    const check = (field: string, given: number | null, want: number) => {
      if (given !== null && given !== want) throw new ConfigError("adapter_config.json", field, `${given} does not match this ${model.modelType} model (${want})`);
    };
    check("token_dim", c.tokenDim, tokenDim);
    check("num_attention_heads", c.numAttentionHeads, model.numKeyValueHeads);
    check("num_layers", c.numLayers, model.numLayers);
    return {
      ...c,
      tokenDim,
      numAttentionHeads: model.numKeyValueHeads,
      numLayers: model.numLayers,
      encoderHiddenSize: c.encoderHiddenSize ?? tokenDim,
    };
  },
  expectedTensors(c) {
    return c.withEncoder ? encoderShapes(c) : new Map([[PROMPT_EMBEDDINGS, [c.numVirtualTokens, width(c)]]]);
  },
  init(c, _model, rng) {
    if (!c.withEncoder) return new Map([[PROMPT_EMBEDDINGS, torchEmbeddingInit(c.numVirtualTokens, width(c), rng)]]);
    const out = new Map<string, Tensor>([[EMBEDDING, torchEmbeddingInit(c.numVirtualTokens, c.tokenDim!, rng)]]);
    const l0 = torchLinearInit(c.encoderHiddenSize!, c.tokenDim!, rng);
    const l2 = torchLinearInit(width(c), c.encoderHiddenSize!, rng);
    out.set(lin(0).w, l0.weight).set(lin(0).b, l0.bias).set(lin(2).w, l2.weight).set(lin(2).b, l2.bias);
    return out;
  },
  savedTensors,
  prefixKv(adapter) {
    const c = adapter.config;
    const n = c.numVirtualTokens;
    const d = c.tokenDim!;
    const heads = c.numAttentionHeads!;
    const hd = d / heads;
    const p = toFloat32(savedTensors(adapter).get(PROMPT_EMBEDDINGS)!);
    const w = width(c);
    const chunk = (i: number) => {
      const out = new Float32Array(heads * n * hd);
      for (let h = 0; h < heads; h++) for (let t = 0; t < n; t++) out.set(p.subarray(t * w + i * d + h * hd, t * w + i * d + (h + 1) * hd), (h * n + t) * hd);
      return out;
    };
    return { tokens: n, layers: Array.from({ length: c.numLayers! }, (_, l) => ({ key: chunk(2 * l), value: chunk(2 * l + 1) })) };
  },
  hooks(adapter, param) {
    const c = adapter.config;
    const d = c.tokenDim!;
    const heads = c.numAttentionHeads!;
    let all: Value | null = null;
    const prefix = (): Value => {
      if (!all) {
        all = c.withEncoder
          ? linear(G.tanh(linear(param(EMBEDDING), param(lin(0).w), param(lin(0).b))), param(lin(2).w), param(lin(2).b))
          : param(PROMPT_EMBEDDINGS);
      }
      return all;
    };
    // columns [c·D, (c+1)·D) of P as [heads, n, head_dim]
    const chunk = (i: number) => G.transpose(G.reshape(G.slice(prefix(), [i * d], [(i + 1) * d], [1]), [c.numVirtualTokens, heads, d / heads]), [1, 0, 2]);
    return { prefix: { tokens: c.numVirtualTokens, kv: (layer) => ({ key: chunk(2 * layer), value: chunk(2 * layer + 1) }) } };
  },
};
