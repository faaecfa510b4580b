/**
 * P-tuning (PEFT `P_TUNING`, `PromptEncoderConfig`): virtual tokens in front of the input, made
 * by a prompt encoder (embedding → MLP, or embedding → bidirectional LSTM → MLP).
 *
 * As in PEFT, a new adapter (`inference_mode: false`) holds the encoder's parameters and trains
 * them; saving writes only the encoder's output as `prompt_embeddings` [n, token_dim] (PEFT's
 * `get_prompt_embedding_to_save`) with `inference_mode: true`, and a saved adapter is loaded as
 * those embeddings. Loading one trainable trains the embeddings directly (PEFT would put a fresh
 * random encoder on top of them).
 */
import { z } from "zod";
import { ConfigError } from "../../errors.js";
import type { Tensor } from "../../tensor.js";
import { COMMON_KEYS, baseFields, baseSchema, baseToRaw, parseWith, rejectUnknownKeys } from "../common/config.js";
import {
  type PromptLearningFields,
  float32Tensor,
  prependPrompts,
  promptLearningFields,
  promptLearningSchema,
  promptLearningToRaw,
  torchEmbeddingInit,
} from "../common/prompt-learning.js";
import { rejectFeedforward, savedModules } from "../common/train.js";
import type { TunerConfigBase, TunerDef } from "../common/types.js";
import { ENCODER_PREFIX, type EncoderShape, type EncoderType, encoderGraph, encoderOutput, encoderShapes, initEncoder } from "./encoder.js";

export interface PTuningConfig extends TunerConfigBase, PromptLearningFields {
  readonly peftType: "P_TUNING";
  readonly encoderReparameterizationType: EncoderType;
  readonly encoderHiddenSize: number | null;
  readonly encoderNumLayers: number;
  readonly encoderDropout: number;
  /**
   * The adapter holds the prompt encoder (created with `inference_mode: false`, as PEFT builds
   * the encoder only then), not its saved output. Not written to adapter_config.json.
   */
  readonly withEncoder: boolean;
}

export const PROMPT_EMBEDDINGS = "prompt_embeddings";

const schema = z.object({
  ...baseSchema,
  ...promptLearningSchema,
  peft_type: z.literal("P_TUNING"),
  encoder_reparameterization_type: z.enum(["MLP", "LSTM"]).optional(),
  encoder_hidden_size: z.number().int().positive().nullable().optional(),
  encoder_num_layers: z.number().int().positive().optional(),
  encoder_dropout: z.number().min(0).max(1).optional(),
});

export function parsePTuningConfig(raw: Readonly<Record<string, unknown>>, file: string): PTuningConfig {
  rejectUnknownKeys(raw, [...COMMON_KEYS, ...Object.keys(schema.shape)], file);
  const c = parseWith(schema, raw, file);
  return {
    ...baseFields(c),
    ...promptLearningFields(c, file),
    peftType: "P_TUNING",
    encoderReparameterizationType: c.encoder_reparameterization_type ?? "MLP",
    encoderHiddenSize: c.encoder_hidden_size ?? null,
    encoderNumLayers: c.encoder_num_layers ?? 2,
    encoderDropout: c.encoder_dropout ?? 0,
    withEncoder: !(c.inference_mode ?? false),
  };
}

export function pTuningConfigToRaw(c: PTuningConfig): Record<string, unknown> {
  return {
    ...baseToRaw(c),
    ...promptLearningToRaw(c),
    encoder_reparameterization_type: c.encoderReparameterizationType,
    encoder_hidden_size: c.encoderHiddenSize,
    encoder_num_layers: c.encoderNumLayers,
    encoder_dropout: c.encoderDropout,
  };
}

function shapeOf(c: PTuningConfig, dim: number): EncoderShape {
  return { type: c.encoderReparameterizationType, n: c.numVirtualTokens, dim, hidden: c.encoderHiddenSize ?? dim, layers: c.encoderNumLayers };
}

export const pTuning: TunerDef<PTuningConfig> = {
  name: "p_tuning",
  peftType: "P_TUNING",
  prefix: ENCODER_PREFIX,
  method: "p-tuning",
  kind: "prompt",
  role: (key) => (key === PROMPT_EMBEDDINGS || key.startsWith(ENCODER_PREFIX) ? { kind: "prompt" } : null),
  virtualTokens: (c) => c.numVirtualTokens,
  trainConfig(o) {
    rejectFeedforward(o, "p-tuning");
    return { peft_type: "P_TUNING", task_type: o.taskType, num_virtual_tokens: o.numVirtualTokens, ...savedModules(o) };
  },
  parseConfig: parsePTuningConfig,
  toRaw: pTuningConfigToRaw,
  resolve(c, model) {
    if (c.tokenDim !== null && c.tokenDim !== model.embeddingDim) {
      throw new ConfigError("adapter_config.json", "token_dim", `${c.tokenDim} does not match the model's token embeddings (${model.embeddingParam}: width ${model.embeddingDim})`);
    }
    return {
      ...c,
      tokenDim: model.embeddingDim,
      // PEFT's _prepare_prompt_learning_config: the encoder is token_dim wide unless told otherwise
      encoderHiddenSize: c.encoderHiddenSize ?? model.embeddingDim,
      numAttentionHeads: c.numAttentionHeads ?? model.numHeads,
      numLayers: c.numLayers ?? model.numLayers,
    };
  },
  expectedTensors(c, model) {
    const dim = c.tokenDim ?? model.embeddingDim;
    return c.withEncoder ? encoderShapes(shapeOf(c, dim)) : new Map([[PROMPT_EMBEDDINGS, [c.numVirtualTokens, dim]]]);
  },
  init(c, model, rng) {
    const dim = c.tokenDim ?? model.embeddingDim;
    return c.withEncoder ? initEncoder(shapeOf(c, dim), rng) : new Map([[PROMPT_EMBEDDINGS, torchEmbeddingInit(c.numVirtualTokens, dim, rng)]]);
  },
  savedTensors(adapter) {
    const c = adapter.config;
    if (!c.withEncoder) return new Map(adapter.tensors);
    const out = new Map<string, Tensor>();
    for (const [key, t] of adapter.tensors) if (!key.startsWith(ENCODER_PREFIX)) out.set(key, t);
    const dim = c.tokenDim!;
    out.set(PROMPT_EMBEDDINGS, float32Tensor([c.numVirtualTokens, dim], encoderOutput(shapeOf(c, dim), adapter.tensors)));
    return out;
  },
  hooks(adapter, param, opts) {
    const c = adapter.config;
    let seed = opts.seed * 7919 + 17;
    return {
      embeds: ({ g, embeds, mask }) => {
        const prompts = c.withEncoder
          ? encoderGraph(shapeOf(c, c.tokenDim!), param, opts.training ? { p: c.encoderDropout, seed: () => ++seed } : null)
          : param(PROMPT_EMBEDDINGS);
        return prependPrompts(g, prompts, embeds, mask);
      },
    };
  },
};
