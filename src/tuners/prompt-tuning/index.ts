/** Prompt tuning: learned virtual-token embeddings prepended to the input, attention mask extended. */
import { z } from "zod";
import { ConfigError, UnsupportedOptionError } from "../../errors.js";
import { type Tensor, toFloat32 } from "../../tensor.js";
import { COMMON_KEYS, baseFields, baseSchema, baseToRaw, parseWith, rejectUnknownKeys } from "../common/config.js";
import { prependPrompts } from "../common/prompt-learning.js";
import { rejectFeedforward, savedModules } from "../common/train.js";
import type { TunerConfigBase, TunerDef } from "../common/types.js";

export interface PromptTuningConfig extends TunerConfigBase {
  readonly peftType: "PROMPT_TUNING";
  readonly numVirtualTokens: number;
  readonly tokenDim: number | null;
  readonly numTransformerSubmodules: number;
  readonly numAttentionHeads: number | null;
  readonly numLayers: number | null;
  readonly init: "RANDOM" | "TEXT" | "SAMPLE_VOCAB";
  readonly initText: string | null;
  readonly tokenizerNameOrPath: string | null;
  readonly tokenizerKwargs: Readonly<Record<string, unknown>> | null;
}

export const PROMPT_KEY = "prompt_embeddings";

const schema = z.object({
  ...baseSchema,
  peft_type: z.literal("PROMPT_TUNING"),
  num_virtual_tokens: z.number().int().positive(),
  token_dim: z.number().int().positive().nullable().optional(),
  num_transformer_submodules: z.number().int().positive().nullable().optional(),
  num_attention_heads: z.number().int().positive().nullable().optional(),
  num_layers: z.number().int().positive().nullable().optional(),
  prompt_tuning_init: z.enum(["RANDOM", "TEXT", "SAMPLE_VOCAB"]).optional(),
  prompt_tuning_init_text: z.string().nullable().optional(),
  tokenizer_name_or_path: z.string().nullable().optional(),
  tokenizer_kwargs: z.record(z.string(), z.unknown()).nullable().optional(),
});

export function parsePromptTuningConfig(raw: Readonly<Record<string, unknown>>, file: string): PromptTuningConfig {
  rejectUnknownKeys(raw, [...COMMON_KEYS, ...Object.keys(schema.shape)], file);
  const c = parseWith(schema, raw, file);
  const subs = c.num_transformer_submodules ?? 1;
  if (subs !== 1) throw new UnsupportedOptionError(file, "num_transformer_submodules", subs, "encoder-decoder prompts are not implemented");
  return {
    ...baseFields(c),
    peftType: "PROMPT_TUNING",
    numVirtualTokens: c.num_virtual_tokens,
    tokenDim: c.token_dim ?? null,
    numTransformerSubmodules: subs,
    numAttentionHeads: c.num_attention_heads ?? null,
    numLayers: c.num_layers ?? null,
    init: c.prompt_tuning_init ?? "RANDOM",
    initText: c.prompt_tuning_init_text ?? null,
    tokenizerNameOrPath: c.tokenizer_name_or_path ?? null,
    tokenizerKwargs: c.tokenizer_kwargs ?? null,
  };
}

export function promptTuningConfigToRaw(c: PromptTuningConfig): Record<string, unknown> {
  return {
    ...baseToRaw(c),
    num_virtual_tokens: c.numVirtualTokens,
    token_dim: c.tokenDim,
    num_transformer_submodules: c.numTransformerSubmodules,
    num_attention_heads: c.numAttentionHeads,
    num_layers: c.numLayers,
    prompt_tuning_init: c.init,
    prompt_tuning_init_text: c.initText,
    tokenizer_name_or_path: c.tokenizerNameOrPath,
    tokenizer_kwargs: c.tokenizerKwargs,
  };
}

export const promptTuning: TunerDef<PromptTuningConfig> = {
  name: "prompt_tuning",
  peftType: "PROMPT_TUNING",
  prefix: "prompt_",
  method: "prompt-tuning",
  kind: "prompt",
  role: (key) => (key === PROMPT_KEY ? { kind: "prompt" } : null),
  virtualTokens: (c) => c.numVirtualTokens * c.numTransformerSubmodules,
  trainConfig(o) {
    rejectFeedforward(o, "prompt-tuning");
    return {
      peft_type: "PROMPT_TUNING",
      task_type: o.taskType,
      num_virtual_tokens: o.numVirtualTokens,
      ...savedModules(o),
    };
  },
  parseConfig: parsePromptTuningConfig,
  toRaw: promptTuningConfigToRaw,
  resolve(c, model) {
    // PEFT takes token_dim from config.hidden_size, which is the embedding width of every HF model
    // it supports; USE-lite embeds in 256 and widens to 512 later, so the embedding matrix decides
    if (c.tokenDim !== null && c.tokenDim !== model.embeddingDim) {
      throw new ConfigError("adapter_config.json", "token_dim", `${c.tokenDim} does not match the model's token embeddings (${model.embeddingParam}: width ${model.embeddingDim})`);
    }
    return {
      ...c,
      tokenDim: model.embeddingDim,
      numAttentionHeads: c.numAttentionHeads ?? model.numHeads,
      numLayers: c.numLayers ?? model.numLayers,
    };
  },
  expectedTensors(c, model) {
    return new Map([[PROMPT_KEY, [c.numVirtualTokens * c.numTransformerSubmodules, c.tokenDim ?? model.embeddingDim]]]);
  },
  init(c, model, rng) {
    const n = c.numVirtualTokens;
    const d = c.tokenDim ?? model.embeddingDim;
    if (c.init === "TEXT") {
      throw new UnsupportedOptionError("adapter_config.json", "prompt_tuning_init", "TEXT", "initialising from text needs a tokenizer; use RANDOM or SAMPLE_VOCAB");
    }
    if (c.init === "SAMPLE_VOCAB") {
      const emb = model.weight(model.embeddingParam);
      const table = toFloat32(emb);
      const vocab = emb.shape[0]!;
      const data = new Float32Array(n * d);
      for (let i = 0; i < n; i++) {
        const row = Math.floor(rng.uniform() * vocab);
        data.set(table.subarray(row * d, (row + 1) * d), i * d);
      }
      return new Map<string, Tensor>([[PROMPT_KEY, { dtype: "float32", shape: [n, d], data }]]);
    }
    return new Map<string, Tensor>([[PROMPT_KEY, { dtype: "float32", shape: [n, d], data: Float32Array.from({ length: n * d }, () => rng.normal()) }]]);
  },
  hooks(_adapter, param) {
    return { embeds: ({ g, embeds, mask }) => prependPrompts(g, param(PROMPT_KEY), embeds, mask) };
  },
};
