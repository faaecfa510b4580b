/** The contract between a tuner (one PEFT method) and the generic adapter machinery in `src/peft`. */
import type { Value } from "../../graph/types.js";
import type { ComputeDtype, ConvGeometry, LinearSite, ModelHooks } from "../../models/context.js";
import type { Tensor } from "../../tensor.js";

/** A linear layer of the base model, as the model builder reports it. */
export interface LinearModule {
  readonly name: string;
  readonly inFeatures: number;
  readonly outFeatures: number;
  readonly fanInFanOut: boolean;
}

/** A 2-D convolution layer of the base model (`nn.Conv2d`, kernel [out, in, kh, kw]). */
export interface ConvModule extends ConvGeometry {
  readonly name: string;
}

/** What a tuner may know about the base model. */
export interface BaseModelInfo {
  readonly modelType: string;
  readonly linearModules: readonly LinearModule[];
  /** Convolution layers (image models; empty for the text models). */
  readonly convModules: readonly ConvModule[];
  /** Output layers (`lm_head`, `classifier`): excluded from `all-linear`. */
  readonly outputModules: readonly string[];
  readonly hiddenSize: number;
  readonly numLayers: number;
  readonly numHeads: number;
  /** Key/value heads (grouped-query attention; `numHeads` otherwise). */
  readonly numKeyValueHeads: number;
  /**
   * Width of one attention head: the config's explicit `head_dim` where the architecture has one
   * (Llama, Mistral, Qwen2 — it may differ from hiddenSize / numHeads); absent: hiddenSize / numHeads.
   */
  readonly headDim?: number;
  /** Reads a base parameter (for DoRA's magnitude, merging). */
  readonly weight: (name: string) => Tensor;
  readonly has: (name: string) => boolean;
  /** The token embedding matrix's parameter name. */
  readonly embeddingParam: string;
  /**
   * Width of the token embeddings (the embedding matrix's second dimension): what prompt
   * learning prepends to. `hiddenSize` for most models; USE-lite embeds in 256 and widens to 512
   * in its first layer.
   */
  readonly embeddingDim: number;
  /** Every parameter name of the base model (norm layers, embeddings, linear layers…). */
  readonly paramNames: readonly string[];
  /**
   * The architecture's default target modules of the LoRA family (PEFT's
   * `TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING`, which LoHa, LoKr, VeRA, AdaLoRA, OFT…
   * reuse): the model definition's `loraTargets`.
   */
  readonly defaultTargets: readonly string[];
}

/** Fields every PEFT config has. */
export interface TunerConfigBase {
  readonly peftType: string;
  readonly taskType: string | null;
  readonly modulesToSave: readonly string[];
  readonly baseModelNameOrPath: string | null;
  readonly revision: string | null;
  readonly inferenceMode: boolean;
}

/** One loaded adapter: its tuner, parsed config, and tensors keyed by PEFT name without `base_model.model.`. */
export interface AdapterInstance<C extends TunerConfigBase = TunerConfigBase> {
  readonly name: string;
  readonly tuner: TunerDef<C>;
  readonly config: C;
  readonly tensors: Map<string, Tensor>;
}

/** How the graph obtains an adapter tensor: an initializer (frozen) or an input (trainable). */
export type ParamView = (key: string) => Value;

/**
 * What one of a tuner's tensors is, for code that handles adapters without knowing the method
 * (ComPEFT, inspect, combining, training):
 * - `update`: a trained tensor whose "no change" value is `baseline` (LoRA factors: 0, since
 *   B·A = 0 with B = 0; (IA)³ vectors: 1). ComPEFT compresses these against the baseline.
 *   `lowRank` marks the two factors of a low-rank product ΔW = scaling·B·A (`A`: [r, in], `B`: [out, r]).
 * - `state`: trained, but not an update from a fixed value (DoRA magnitudes): stored as is.
 * - `frozen`: saved with the adapter but never trained (VeRA's shared random projections).
 * - `prompt`: virtual-token embeddings (prompt learning), not tied to a module.
 * - `replacement`: a trained copy that stands in for the base parameter `param` (LN tuning's
 *   `ln_tuning_layers` copies): the graph reads it instead of the base value.
 */
export type TensorRole =
  | { readonly kind: "update"; readonly module: string; readonly baseline: number; readonly lowRank?: "A" | "B" }
  | { readonly kind: "state"; readonly module: string }
  | { readonly kind: "replacement"; readonly module: string; readonly param: string }
  | { readonly kind: "frozen"; readonly module: string | null }
  | { readonly kind: "prompt" };

/** Factors of one module's low-rank update ΔW = scaling·B·A. */
export interface LowRankFactors {
  readonly A: Tensor; // [r, in]
  readonly B: Tensor; // [out, r]
  readonly scaling: number;
}

/**
 * Tuners whose update is a low-rank product per module (LoRA) can be combined
 * (`add_weighted_adapter`, mergekit-style adapter merges) into a new adapter of the same method.
 */
export interface LowRankView<C extends TunerConfigBase = TunerConfigBase> {
  /** Throws a typed error naming the option when this adapter's update is not just B·A (DoRA, trained biases). */
  check(adapter: AdapterInstance<C>, label: string, purpose: string): void;
  /** Module → its factors. */
  factors(adapter: AdapterInstance<C>): Map<string, LowRankFactors>;
  /** Rank settings PEFT's `add_weighted_adapter` reads. */
  rankInfo(config: C): { readonly r: number; readonly rankPattern: Readonly<Record<string, number>>; readonly useRslora: boolean; readonly targetModules: string | string[] | null };
  /**
   * adapter_config.json fields of a new adapter of this method holding plain factors of rank `r`
   * with scaling 1 (`lora_alpha = r`) on `targetModules`, other settings taken from `config`.
   */
  configFor(config: C, opts: { readonly r: number; readonly alpha: number; readonly targetModules: string | string[] | null; readonly resetLayout: boolean }): Record<string, unknown>;
  /** Tensor keys of a module's factors. */
  keys(module: string): { readonly A: string; readonly B: string };
}

/** Options `peft train` passes to a tuner to make a new adapter's config. */
export interface TrainMethodOptions {
  readonly taskType: "SEQ_CLS" | "CAUSAL_LM";
  readonly r: number;
  readonly alpha: number;
  readonly dropout: number;
  /** `--target` as PEFT's `target_modules` value, or null for the method's default for the architecture. */
  readonly target: string | string[] | null;
  /** `--feedforward` ((IA)³), or null. */
  readonly feedforward: string | string[] | null;
  /** `--num-virtual-tokens` (prompt learning). */
  readonly numVirtualTokens: number;
  /** Output modules trained in full (`classifier` for sequence classification). */
  readonly modulesToSave: readonly string[];
  /** Optimizer steps the run will take (AdaLoRA's `total_step`), when known. */
  readonly totalSteps?: number;
}

/**
 * A tuner's stateful helper during training (AdaLoRA's rank allocator): the trainer calls it
 * after every optimizer step with the step's gradients (so it trains with the host optimizer).
 */
export interface TrainingAllocator<C extends TunerConfigBase = TunerConfigBase> {
  /** After optimizer step `step` (0-based): may change `values` (tensor key → current data) in place. */
  afterStep(step: number, values: ReadonlyMap<string, Float32Array>, grads: ReadonlyMap<string, Float32Array>): void;
  /**
   * The allocator's state for a training checkpoint (named tensors and a JSON-serialisable value),
   * so that a resumed run continues it exactly (AdaLoRA: the importance EMAs and the mask).
   */
  state?(): { readonly tensors: Map<string, Tensor>; readonly json: unknown };
  /** Continue from a checkpoint's `state()`. */
  restore?(state: { readonly tensors: ReadonlyMap<string, Tensor>; readonly json: unknown }): void;
  /** The adapter to keep after training (AdaLoRA: `rank_pattern` set, only the kept triplets), or null to keep it as is. */
  finish(adapter: AdapterInstance<C>): { config: C; tensors: Map<string, Tensor> } | null;
}

export interface TunerDef<C extends TunerConfigBase = TunerConfigBase> {
  /** Lower-case id, `peft_type` lowercased (`lora`, `ia3`, `prompt_tuning`). */
  readonly name: string;
  /** `peft_type` as written in adapter_config.json. */
  readonly peftType: string;
  /** Prefix of the tuner's own tensor names (`lora_`, `ia3_`, ``). */
  readonly prefix: string;
  /** The name `peft train --method` takes (`lora`, `ia3`, `prefix-tuning`). */
  readonly method: string;
  /**
   * `module`: rewrites layers; tensors are saved as `base_model.model.<module>.<param>`.
   * `prompt`: prompt learning; tensors are saved under their own names (`prompt_embeddings`).
   */
  readonly kind: "module" | "prompt";
  /** The role of one of the tuner's tensors, or null when `key` is not the tuner's (a copied base parameter). */
  role(key: string): TensorRole | null;
  /** Virtual tokens the adapter puts in front of the sequence (causal-LM labels are padded for them). */
  virtualTokens?(config: C): number;
  /**
   * Whether adapters of this method can serve rows of a mixed-adapter batch. Rows then use each
   * adapter's linear hooks, selected per row; `stacked` is an optional one-graph form.
   */
  readonly mixedBatch?: {
    /** Throws AdapterStateError when this adapter cannot (DoRA). */
    check?(adapter: AdapterInstance<C>): void;
    /**
     * The summed update (without the base output) for rows gathered by `rowIndex` from
     * `adapters` (row index `adapters.length` = base model) at one linear layer; null when none
     * of them adapts it.
     */
    stacked?(site: LinearSite, adapters: readonly (AdapterInstance<C> | null)[], rowIndex: Value, dtype: ComputeDtype): Value | null;
  };
  /** Present when the update is a low-rank product (see {@link LowRankView}). */
  readonly lowRank?: LowRankView<C>;
  /** The PEFT config object `peft train --method <method>` creates, with the architecture's default targets. */
  trainConfig(opts: TrainMethodOptions, model: BaseModelInfo): Record<string, unknown>;
  /** Training beyond the task loss (AdaLoRA). */
  readonly training?: {
    /** A term added to the training loss, from the graph values of the adapter's tensors (`param`), or null. */
    regularizer?(adapter: AdapterInstance<C>, param: ParamView): Value | null;
    /** A helper the trainer runs after every optimizer step of this (trainable) adapter. */
    allocator?(adapter: AdapterInstance<C>): TrainingAllocator<C> | null;
  };
  /** Learning-rate multiplier of a trainable tensor (LoRA+: `loraplus_lr_ratio` for B); default 1. */
  lrScale?(config: C, key: string): number;
  /** Validate an adapter_config.json; unsupported options raise `UnsupportedOptionError`. */
  parseConfig(raw: Readonly<Record<string, unknown>>, file: string): C;
  /** The config as adapter_config.json fields, PEFT's names. */
  toRaw(config: C): Record<string, unknown>;
  /** Resolve model-dependent parts of the config (`all-linear`), before anything else uses it. */
  resolve(config: C, model: BaseModelInfo): C;
  /** The adapter's own tensors and their shapes for this model (key → shape). */
  expectedTensors(config: C, model: BaseModelInfo): Map<string, readonly number[]>;
  /** Fresh tensors for a new adapter (PEFT's initialisation). */
  init(config: C, model: BaseModelInfo, rng: { uniform(): number; normal(): number }): Map<string, Tensor>;
  /**
   * The adapter's tensors as read from adapter_model.safetensors (keys without
   * `base_model.model.`), completed before they are checked against `expectedTensors`: tensors
   * PEFT does not save but rebuilds on load (VeRA's projections with `save_projection: false`,
   * regenerated from `projection_prng_key`). Absent: the file's tensors as they are.
   */
  fromFile?(config: C, model: BaseModelInfo, tensors: Map<string, Tensor>): Map<string, Tensor>;
  /**
   * The tensors written to adapter_model.safetensors when they are not the adapter's own (PEFT's
   * `get_prompt_embedding_to_save`: a P-tuning / prefix-tuning adapter trains a prompt encoder
   * and saves its output; VeRA with `save_projection: false` leaves out its projections); absent:
   * the adapter's tensors as they are. Copied base parameters (`modules_to_save`) must be kept.
   */
  savedTensors?(adapter: AdapterInstance<C>): Map<string, Tensor>;
  /**
   * Prefix tuning: the keys and values every layer attends to before the sequence, on the host
   * (`key`/`value` [kvHeads, tokens, headDim] per layer), for a KV cache to start from.
   */
  prefixKv?(adapter: AdapterInstance<C>): { readonly tokens: number; readonly layers: readonly { readonly key: Float32Array; readonly value: Float32Array }[] };
  /** Graph hooks that apply the adapter. */
  hooks(adapter: AdapterInstance<C>, param: ParamView, opts: { training: boolean; seed: number }): ModelHooks;
  /**
   * Methods whose initialisation rewrites base weights (LoRA's PiSSA / OLoRA): the new values of
   * the base parameters given the adapter's initial tensors (`init`'s output), or null when this
   * config leaves the base alone. As in PEFT, loading such an adapter runs the initialisation on
   * the base again (the loaded tensors then replace the initial ones).
   */
  baseRewrite?(config: C, model: BaseModelInfo, initial: ReadonlyMap<string, Tensor>): Map<string, Tensor> | null;
  /**
   * PEFT's `save_pretrained(path_initial_model_for_weight_conversion=…)`: the adapter rewritten as
   * one that applies to the original base, given the `initial` adapter saved right after creation.
   */
  convertMutatedInit?(adapter: AdapterInstance<C>, initial: AdapterInstance<C>): { config: C; tensors: Map<string, Tensor> };
  /**
   * Fold the adapter into base weights: new values for the base parameters it changes (PEFT's
   * `merge`; unmerging restores the stored base). Absent when the method cannot be merged.
   */
  merge?(adapter: AdapterInstance<C>, model: BaseModelInfo): Map<string, Tensor>;
  /**
   * The adapter as a plain PEFT LoRA adapter (the LoRA variants: DyLoRA at any `rank`, SoRA's
   * pruned ranks, SVFit, Block-LoRA): its adapter_config.json fields and tensors (keys without
   * `base_model.model.`). `rank`: the rank to keep where the method has a choice (DyLoRA), else null.
   */
  toLora?(adapter: AdapterInstance<C>, model: BaseModelInfo, opts: { readonly rank: number | null }): { raw: Record<string, unknown>; tensors: Map<string, Tensor> };
}
