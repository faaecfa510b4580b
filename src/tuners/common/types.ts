/** The contract between a tuner (one PEFT method) and the generic adapter machinery in `src/peft`. */
import type { Value } from "../../graph/types.js";
import type { ModelHooks } from "../../models/context.js";
import type { Tensor } from "../../tensor.js";

/** A linear layer of the base model, as the model builder reports it. */
export interface LinearModule {
  readonly name: string;
  readonly inFeatures: number;
  readonly outFeatures: number;
  readonly fanInFanOut: boolean;
}

/** What a tuner may know about the base model. */
export interface BaseModelInfo {
  readonly modelType: string;
  readonly linearModules: readonly LinearModule[];
  /** Output layers (`lm_head`, `classifier`): excluded from `all-linear`. */
  readonly outputModules: readonly string[];
  readonly hiddenSize: number;
  readonly numLayers: number;
  readonly numHeads: number;
  /** Reads a base parameter (for DoRA's magnitude, merging). */
  readonly weight: (name: string) => Tensor;
  readonly has: (name: string) => boolean;
  /** The token embedding matrix's parameter name. */
  readonly embeddingParam: string;
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

export interface TunerDef<C extends TunerConfigBase = TunerConfigBase> {
  /** Lower-case id, `peft_type` lowercased (`lora`, `ia3`, `prompt_tuning`). */
  readonly name: string;
  /** `peft_type` as written in adapter_config.json. */
  readonly peftType: string;
  /** Prefix of the tuner's own tensor names (`lora_`, `ia3_`, ``). */
  readonly prefix: string;
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
  /** Graph hooks that apply the adapter. */
  hooks(adapter: AdapterInstance<C>, param: ParamView, opts: { training: boolean; seed: number }): ModelHooks;
  /** Fold the adapter into base weights: new values for the base parameters it changes. */
  merge(adapter: AdapterInstance<C>, model: BaseModelInfo): Map<string, Tensor>;
}
