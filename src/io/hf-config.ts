/**
 * Hugging Face `config.json` for the architectures peft-ts builds (bert, gpt2, llama, qwen2,
 * mistral), validated with zod and normalised to camelCase with transformers' defaults filled in
 * (transformers 5.x: gpt2 `n_inner: null` → 4·n_embd, llama `head_dim` → hidden/heads,
 * `num_key_value_heads` → heads (mistral: 8 when absent), `rope_parameters.rope_theta` or legacy
 * `rope_theta` (default 10000), labels from `id2label`, `tie_word_embeddings` true for bert/gpt2,
 * qwen2's sliding window only with `use_sliding_window` and only on layers ≥ `max_window_layers`
 * (or as its `layer_types` say)). Unknown keys are tolerated; values that would change the math in
 * a way peft-ts does not implement raise `UnsupportedOptionError`.
 */
import { existsSync, statSync, join } from "../platform/fs.js";
import { z } from "zod";
import { ConfigError, PeftError, UnsupportedOptionError } from "../errors.js";
import { readJsonFile } from "./json-file.js";

/** Activation functions, by their math (transformers' aliases are folded: gelu_new → gelu_tanh, swish → silu). */
export type Activation = "gelu" | "gelu_tanh" | "quick_gelu" | "relu" | "silu" | "tanh" | "sigmoid";

/** transformers `ACT2FN` names peft-ts implements, and what each computes. */
export const HF_ACTIVATIONS: Readonly<Record<string, Activation>> = {
  gelu: "gelu",
  gelu_python: "gelu",
  gelu_new: "gelu_tanh",
  gelu_pytorch_tanh: "gelu_tanh",
  gelu_fast: "gelu_tanh",
  quick_gelu: "quick_gelu",
  relu: "relu",
  silu: "silu",
  swish: "silu",
  tanh: "tanh",
  sigmoid: "sigmoid",
};

export type ProblemType = "regression" | "single_label_classification" | "multi_label_classification";

export const SUPPORTED_MODEL_TYPES = ["bert", "gpt2", "llama", "qwen2", "mistral"] as const;
export type ModelType = (typeof SUPPORTED_MODEL_TYPES)[number];

interface HfConfigBase {
  /** The file the config came from (for error messages). */
  readonly file: string;
  readonly architectures: readonly string[];
  readonly vocabSize: number;
  readonly hiddenSize: number;
  readonly numLayers: number;
  readonly numHeads: number;
  readonly headDim: number;
  readonly intermediateSize: number;
  readonly maxPositionEmbeddings: number;
  readonly activation: Activation;
  readonly tieWordEmbeddings: boolean;
  readonly padTokenId: number | null;
  readonly bosTokenId: number | null;
  readonly eosTokenId: number | readonly number[] | null;
  /** Class labels by id (`id2label`, or `LABEL_0…` for `num_labels`, default 2). */
  readonly labels: readonly string[];
  readonly numLabels: number;
  readonly problemType: ProblemType | null;
  /** `dtype` (transformers 5) or `torch_dtype` (4.x), e.g. "float32"; null if absent. */
  readonly dtype: string | null;
  readonly initializerRange: number;
  /** The parsed JSON as read, for keys peft-ts does not interpret. */
  readonly raw: Readonly<Record<string, unknown>>;
}

export interface BertConfig extends HfConfigBase {
  readonly modelType: "bert";
  readonly typeVocabSize: number;
  readonly layerNormEps: number;
  readonly hiddenDropout: number;
  readonly attentionDropout: number;
  /** Dropout before the classifier; null means `hiddenDropout` (as transformers). */
  readonly classifierDropout: number | null;
}

export interface Gpt2Config extends HfConfigBase {
  readonly modelType: "gpt2";
  readonly layerNormEps: number;
  /** Divide attention scores by sqrt(head_dim) (`scale_attn_weights`). */
  readonly scaleAttnWeights: boolean;
  readonly residDropout: number;
  readonly embdDropout: number;
  readonly attnDropout: number;
}

/** What the Llama-family decoders (llama, qwen2, mistral) share: RMSNorm, RoPE, GQA, SwiGLU. */
export interface LlamaFamilyConfig extends HfConfigBase {
  readonly modelType: "llama" | "qwen2" | "mistral";
  readonly numKeyValueHeads: number;
  readonly rmsNormEps: number;
  readonly ropeTheta: number;
  readonly attentionDropout: number;
}

export interface LlamaConfig extends LlamaFamilyConfig {
  readonly modelType: "llama";
  /** Biases on q/k/v/o_proj (`attention_bias`). */
  readonly attentionBias: boolean;
  /** Biases on gate/up/down_proj (`mlp_bias`). */
  readonly mlpBias: boolean;
}

/** transformers' per-layer attention kinds (`layer_types`). */
export type AttentionLayerType = "full_attention" | "sliding_attention";

/** Qwen2 (`Qwen2ForCausalLM`): Llama with biases on q/k/v_proj (not o_proj) and an optional sliding window. */
export interface Qwen2Config extends LlamaFamilyConfig {
  readonly modelType: "qwen2";
  readonly useSlidingWindow: boolean;
  /** The window (keys within this many positions of the query, itself included); null when `use_sliding_window` is false. */
  readonly slidingWindow: number | null;
  readonly maxWindowLayers: number;
  /** Per layer: `layer_types` as stored, else sliding from layer `max_window_layers` on when the window is on. */
  readonly layerTypes: readonly AttentionLayerType[];
}

/** Mistral (`MistralForCausalLM`): Llama with sliding-window attention on every layer (`sliding_window`, null = off). */
export interface MistralConfig extends LlamaFamilyConfig {
  readonly modelType: "mistral";
  readonly slidingWindow: number | null;
}

export type HfModelConfig = BertConfig | Gpt2Config | LlamaConfig | Qwen2Config | MistralConfig;

export type HfConfigResult = { readonly success: true; readonly config: HfModelConfig } | { readonly success: false; readonly errors: readonly PeftError[] };

// ---------------------------------------------------------------------------------------------
// Schemas (snake_case, as on disk; defaults are transformers')
// ---------------------------------------------------------------------------------------------

const posInt = z.number().int().positive();
const prob = z.number().min(0).max(1);
const eps = z.number().positive();
const tokenId = z.number().int().nullable();

const commonShape = {
  model_type: z.string(),
  architectures: z.array(z.string()).nullable().default(null),
  pad_token_id: tokenId.default(null),
  bos_token_id: tokenId.default(null),
  eos_token_id: z.union([z.number().int(), z.array(z.number().int())]).nullable().default(null),
  id2label: z.record(z.string(), z.string()).nullable().default(null),
  num_labels: posInt.optional(),
  problem_type: z.enum(["regression", "single_label_classification", "multi_label_classification"]).nullable().default(null),
  dtype: z.string().nullable().optional(),
  torch_dtype: z.string().nullable().optional(),
  initializer_range: z.number().nonnegative().default(0.02),
  is_encoder_decoder: z.boolean().default(false),
};

const bertSchema = z.object({
  ...commonShape,
  vocab_size: posInt.default(30522),
  hidden_size: posInt.default(768),
  num_hidden_layers: posInt.default(12),
  num_attention_heads: posInt.default(12),
  intermediate_size: posInt.default(3072),
  hidden_act: z.string().default("gelu"),
  hidden_dropout_prob: prob.default(0.1),
  attention_probs_dropout_prob: prob.default(0.1),
  max_position_embeddings: posInt.default(512),
  type_vocab_size: posInt.default(2),
  layer_norm_eps: eps.default(1e-12),
  pad_token_id: tokenId.default(0),
  position_embedding_type: z.string().default("absolute"),
  classifier_dropout: prob.nullable().default(null),
  is_decoder: z.boolean().default(false),
  add_cross_attention: z.boolean().default(false),
  tie_word_embeddings: z.boolean().default(true),
});

const gpt2Schema = z.object({
  ...commonShape,
  vocab_size: posInt.default(50257),
  n_positions: posInt.default(1024),
  n_embd: posInt.default(768),
  n_layer: posInt.default(12),
  n_head: posInt.default(12),
  n_inner: posInt.nullable().default(null),
  activation_function: z.string().default("gelu_new"),
  resid_pdrop: prob.default(0.1),
  embd_pdrop: prob.default(0.1),
  attn_pdrop: prob.default(0.1),
  layer_norm_epsilon: eps.default(1e-5),
  scale_attn_weights: z.boolean().default(true),
  scale_attn_by_inverse_layer_idx: z.boolean().default(false),
  reorder_and_upcast_attn: z.boolean().default(false),
  add_cross_attention: z.boolean().default(false),
  bos_token_id: tokenId.default(50256),
  eos_token_id: z.union([z.number().int(), z.array(z.number().int())]).nullable().default(50256),
  tie_word_embeddings: z.boolean().default(true),
});

const ropeSchema = z
  .object({
    rope_type: z.string().optional(),
    type: z.string().optional(),
    rope_theta: z.number().positive().optional(),
    partial_rotary_factor: z.number().positive().max(1).optional(),
  })
  .nullable()
  .default(null);

/** Keys every Llama-family config reads, with one architecture's defaults. */
function decoderShape(d: {
  vocab: number;
  hidden: number;
  intermediate: number;
  layers: number;
  heads: number;
  kvHeads: number | null;
  maxPositions: number;
  bos: number | null;
  eos: number | null;
}) {
  return {
    ...commonShape,
    vocab_size: posInt.default(d.vocab),
    hidden_size: posInt.default(d.hidden),
    intermediate_size: posInt.default(d.intermediate),
    num_hidden_layers: posInt.default(d.layers),
    num_attention_heads: posInt.default(d.heads),
    num_key_value_heads: posInt.nullable().default(d.kvHeads),
    head_dim: posInt.nullable().default(null),
    hidden_act: z.string().default("silu"),
    max_position_embeddings: posInt.default(d.maxPositions),
    rms_norm_eps: eps.default(1e-6),
    bos_token_id: tokenId.default(d.bos),
    eos_token_id: z.union([z.number().int(), z.array(z.number().int())]).nullable().default(d.eos),
    tie_word_embeddings: z.boolean().default(false),
    rope_parameters: ropeSchema,
    rope_scaling: ropeSchema,
    rope_theta: z.number().positive().optional(),
    partial_rotary_factor: z.number().positive().max(1).optional(),
    attention_dropout: prob.default(0),
  };
}

const llamaSchema = z.object({
  ...decoderShape({ vocab: 32000, hidden: 4096, intermediate: 11008, layers: 32, heads: 32, kvHeads: null, maxPositions: 2048, bos: 1, eos: 2 }),
  attention_bias: z.boolean().default(false),
  mlp_bias: z.boolean().default(false),
  pretraining_tp: posInt.nullable().default(1),
});

const qwen2Schema = z.object({
  ...decoderShape({ vocab: 151936, hidden: 4096, intermediate: 22016, layers: 32, heads: 32, kvHeads: 32, maxPositions: 32768, bos: null, eos: null }),
  use_sliding_window: z.boolean().default(false),
  sliding_window: posInt.nullable().default(4096),
  max_window_layers: z.number().int().nonnegative().default(28),
  layer_types: z.array(z.enum(["full_attention", "sliding_attention"])).nullable().default(null),
});

const mistralSchema = z.object({
  ...decoderShape({ vocab: 32000, hidden: 4096, intermediate: 14336, layers: 32, heads: 32, kvHeads: 8, maxPositions: 4096 * 32, bos: 1, eos: 2 }),
  sliding_window: posInt.nullable().default(4096),
});

type CommonParsed = z.infer<z.ZodObject<typeof commonShape>>;

// ---------------------------------------------------------------------------------------------
// Normalisation
// ---------------------------------------------------------------------------------------------

class Issues {
  readonly errors: PeftError[] = [];
  constructor(readonly file: string) {}
  config(path: string, issue: string): void {
    this.errors.push(new ConfigError(this.file, path, issue));
  }
  unsupported(option: string, value: unknown, why: string): void {
    this.errors.push(new UnsupportedOptionError(this.file, option, value, why));
  }
}

function activationOf(key: string, name: string, issues: Issues): Activation {
  const act = HF_ACTIVATIONS[name];
  if (act === undefined) {
    issues.unsupported(key, name, `supported activations: ${Object.keys(HF_ACTIVATIONS).join(", ")}`);
    return "gelu";
  }
  return act;
}

function labelsOf(c: CommonParsed, issues: Issues): string[] {
  if (c.id2label === null) {
    const n = c.num_labels ?? 2;
    return Array.from({ length: n }, (_, i) => `LABEL_${i}`);
  }
  const entries = Object.entries(c.id2label);
  const labels: string[] = new Array<string>(entries.length);
  for (const [k, v] of entries) {
    const id = Number(k);
    if (!/^(0|[1-9]\d*)$/.test(k) || id >= entries.length) {
      issues.config(`id2label.${k}`, `label ids must be the integers 0..${entries.length - 1}`);
      continue;
    }
    labels[id] = v;
  }
  if (entries.length === 0) issues.config("id2label", "must list at least one label");
  return labels;
}

function commonOf(c: CommonParsed, raw: Record<string, unknown>, file: string, issues: Issues) {
  if (c.is_encoder_decoder) issues.unsupported("is_encoder_decoder", true, "encoder-decoder models are not implemented");
  const labels = labelsOf(c, issues);
  return {
    file,
    architectures: c.architectures ?? [],
    padTokenId: c.pad_token_id,
    bosTokenId: c.bos_token_id,
    eosTokenId: c.eos_token_id,
    labels,
    numLabels: labels.length,
    problemType: c.problem_type,
    dtype: c.dtype ?? c.torch_dtype ?? null,
    initializerRange: c.initializer_range,
    raw,
  };
}

function checkHeads(hidden: number, heads: number, hiddenKey: string, headsKey: string, issues: Issues): void {
  if (hidden % heads !== 0) issues.config(headsKey, `${hiddenKey} (${hidden}) must be a multiple of ${headsKey} (${heads})`);
}

function normaliseBert(c: z.infer<typeof bertSchema>, raw: Record<string, unknown>, file: string, issues: Issues): BertConfig {
  if (c.position_embedding_type !== "absolute") {
    issues.unsupported("position_embedding_type", c.position_embedding_type, "only absolute position embeddings are implemented");
  }
  if (c.is_decoder) issues.unsupported("is_decoder", true, "BERT as a causal decoder is not implemented");
  if (c.add_cross_attention) issues.unsupported("add_cross_attention", true, "cross-attention is not implemented");
  checkHeads(c.hidden_size, c.num_attention_heads, "hidden_size", "num_attention_heads", issues);
  return {
    modelType: "bert",
    ...commonOf(c, raw, file, issues),
    vocabSize: c.vocab_size,
    hiddenSize: c.hidden_size,
    numLayers: c.num_hidden_layers,
    numHeads: c.num_attention_heads,
    headDim: Math.floor(c.hidden_size / c.num_attention_heads),
    intermediateSize: c.intermediate_size,
    maxPositionEmbeddings: c.max_position_embeddings,
    activation: activationOf("hidden_act", c.hidden_act, issues),
    tieWordEmbeddings: c.tie_word_embeddings,
    typeVocabSize: c.type_vocab_size,
    layerNormEps: c.layer_norm_eps,
    hiddenDropout: c.hidden_dropout_prob,
    attentionDropout: c.attention_probs_dropout_prob,
    classifierDropout: c.classifier_dropout,
  };
}

function normaliseGpt2(c: z.infer<typeof gpt2Schema>, raw: Record<string, unknown>, file: string, issues: Issues): Gpt2Config {
  if (c.scale_attn_by_inverse_layer_idx) {
    issues.unsupported("scale_attn_by_inverse_layer_idx", true, "per-layer attention scaling is not implemented");
  }
  if (c.reorder_and_upcast_attn) issues.unsupported("reorder_and_upcast_attn", true, "the reordered/upcast attention path is not implemented");
  if (c.add_cross_attention) issues.unsupported("add_cross_attention", true, "cross-attention is not implemented");
  checkHeads(c.n_embd, c.n_head, "n_embd", "n_head", issues);
  return {
    modelType: "gpt2",
    ...commonOf(c, raw, file, issues),
    vocabSize: c.vocab_size,
    hiddenSize: c.n_embd,
    numLayers: c.n_layer,
    numHeads: c.n_head,
    headDim: Math.floor(c.n_embd / c.n_head),
    intermediateSize: c.n_inner ?? 4 * c.n_embd,
    maxPositionEmbeddings: c.n_positions,
    activation: activationOf("activation_function", c.activation_function, issues),
    tieWordEmbeddings: c.tie_word_embeddings,
    layerNormEps: c.layer_norm_epsilon,
    scaleAttnWeights: c.scale_attn_weights,
    residDropout: c.resid_pdrop,
    embdDropout: c.embd_pdrop,
    attnDropout: c.attn_pdrop,
  };
}

type DecoderParsed = z.infer<z.ZodObject<ReturnType<typeof decoderShape>>>;

/** The fields every Llama-family config normalises the same way (RoPE, GQA, head_dim). */
function decoderOf(c: DecoderParsed, raw: Record<string, unknown>, file: string, issues: Issues) {
  // transformers 5 keeps RoPE settings in `rope_parameters`; 4.x configs use `rope_scaling` + `rope_theta`.
  const ropeKey = c.rope_parameters !== null ? "rope_parameters" : "rope_scaling";
  const rope = c.rope_parameters ?? c.rope_scaling;
  const ropeType = rope?.rope_type ?? rope?.type ?? "default";
  if (ropeType !== "default") {
    issues.unsupported(`${ropeKey}.rope_type`, ropeType, "only the default RoPE is implemented (no linear/dynamic/yarn/longrope/llama3 scaling)");
  }
  const partial = rope?.partial_rotary_factor ?? c.partial_rotary_factor ?? 1;
  if (partial !== 1) issues.unsupported("partial_rotary_factor", partial, "partial rotary embeddings are not implemented");
  const numKv = c.num_key_value_heads ?? c.num_attention_heads;
  checkHeads(c.hidden_size, c.num_attention_heads, "hidden_size", "num_attention_heads", issues);
  if (c.num_attention_heads % numKv !== 0) {
    issues.config("num_key_value_heads", `num_attention_heads (${c.num_attention_heads}) must be a multiple of num_key_value_heads (${numKv})`);
  }
  const headDim = c.head_dim ?? Math.floor(c.hidden_size / c.num_attention_heads);
  if (headDim % 2 !== 0) issues.config(c.head_dim !== null ? "head_dim" : "num_attention_heads", `the head dimension (${headDim}) must be even for rotary embeddings`);
  return {
    ...commonOf(c, raw, file, issues),
    vocabSize: c.vocab_size,
    hiddenSize: c.hidden_size,
    numLayers: c.num_hidden_layers,
    numHeads: c.num_attention_heads,
    headDim,
    intermediateSize: c.intermediate_size,
    maxPositionEmbeddings: c.max_position_embeddings,
    activation: activationOf("hidden_act", c.hidden_act, issues),
    tieWordEmbeddings: c.tie_word_embeddings,
    numKeyValueHeads: numKv,
    rmsNormEps: c.rms_norm_eps,
    ropeTheta: rope?.rope_theta ?? c.rope_theta ?? 10000,
    attentionDropout: c.attention_dropout,
  };
}

function normaliseLlama(c: z.infer<typeof llamaSchema>, raw: Record<string, unknown>, file: string, issues: Issues): LlamaConfig {
  return { modelType: "llama", ...decoderOf(c, raw, file, issues), attentionBias: c.attention_bias, mlpBias: c.mlp_bias };
}

function normaliseQwen2(c: z.infer<typeof qwen2Schema>, raw: Record<string, unknown>, file: string, issues: Issues): Qwen2Config {
  // transformers' Qwen2Config: the window exists only with use_sliding_window, and then applies
  // to layers i ≥ max_window_layers unless `layer_types` lists each layer's kind
  const slidingWindow = c.use_sliding_window ? c.sliding_window : null;
  let layerTypes: AttentionLayerType[];
  if (c.layer_types !== null) {
    layerTypes = c.layer_types;
    if (layerTypes.length !== c.num_hidden_layers) {
      issues.config("layer_types", `lists ${layerTypes.length} layers, but num_hidden_layers is ${c.num_hidden_layers}`);
    }
    if (slidingWindow === null && layerTypes.includes("sliding_attention")) {
      issues.config("layer_types", "lists sliding_attention layers, but the sliding window is off (use_sliding_window false or sliding_window null)");
    }
  } else {
    layerTypes = Array.from({ length: c.num_hidden_layers }, (_, i) => (slidingWindow !== null && i >= c.max_window_layers ? "sliding_attention" : "full_attention"));
  }
  return {
    modelType: "qwen2",
    ...decoderOf(c, raw, file, issues),
    useSlidingWindow: c.use_sliding_window,
    slidingWindow,
    maxWindowLayers: c.max_window_layers,
    layerTypes,
  };
}

function normaliseMistral(c: z.infer<typeof mistralSchema>, raw: Record<string, unknown>, file: string, issues: Issues): MistralConfig {
  return { modelType: "mistral", ...decoderOf(c, raw, file, issues), slidingWindow: c.sliding_window };
}

function zodIssues(error: z.ZodError, issues: Issues): void {
  for (const i of error.issues) issues.config(i.path.map(String).join("."), i.message);
}

/** Validates a parsed `config.json`; returns every problem found instead of throwing. */
export function safeParseHfConfig(raw: unknown, file: string): HfConfigResult {
  const issues = new Issues(file);
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
    issues.config("", "config.json must hold a JSON object");
    return { success: false, errors: issues.errors };
  }
  const obj = raw as Record<string, unknown>;
  const mt = obj["model_type"];
  if (mt === undefined) {
    issues.config("model_type", `missing; peft-ts needs it to pick the architecture (one of ${SUPPORTED_MODEL_TYPES.join(", ")})`);
    return { success: false, errors: issues.errors };
  }
  if (typeof mt !== "string") {
    issues.config("model_type", `must be a string, got ${JSON.stringify(mt)}`);
    return { success: false, errors: issues.errors };
  }
  let config: HfModelConfig | undefined;
  if (mt === "bert") {
    const r = bertSchema.safeParse(obj);
    if (r.success) config = normaliseBert(r.data, obj, file, issues);
    else zodIssues(r.error, issues);
  } else if (mt === "gpt2") {
    const r = gpt2Schema.safeParse(obj);
    if (r.success) config = normaliseGpt2(r.data, obj, file, issues);
    else zodIssues(r.error, issues);
  } else if (mt === "llama") {
    const r = llamaSchema.safeParse(obj);
    if (r.success) config = normaliseLlama(r.data, obj, file, issues);
    else zodIssues(r.error, issues);
  } else if (mt === "qwen2") {
    const r = qwen2Schema.safeParse(obj);
    if (r.success) config = normaliseQwen2(r.data, obj, file, issues);
    else zodIssues(r.error, issues);
  } else if (mt === "mistral") {
    const r = mistralSchema.safeParse(obj);
    if (r.success) config = normaliseMistral(r.data, obj, file, issues);
    else zodIssues(r.error, issues);
  } else {
    issues.unsupported("model_type", mt, `peft-ts builds ${SUPPORTED_MODEL_TYPES.join(", ")}`);
  }
  if (issues.errors.length > 0 || config === undefined) return { success: false, errors: issues.errors };
  return { success: true, config };
}

/** Validates and normalises a parsed `config.json`; throws the first `ConfigError`/`UnsupportedOptionError`. */
export function parseHfConfig(raw: unknown, file: string): HfModelConfig {
  const r = safeParseHfConfig(raw, file);
  if (!r.success) throw r.errors[0]!;
  return r.config;
}

/** Reads `<dir>/config.json` (or the file itself when given a path to a .json file) and parses it. */
export function loadHfConfig(dir: string): HfModelConfig {
  const file = dir.endsWith(".json") && existsSync(dir) && statSync(dir).isFile() ? dir : join(dir, "config.json");
  return parseHfConfig(readJsonFile(file, "a model folder needs the config.json written by transformers' save_pretrained"), file);
}
