/** The contract every architecture file implements. */
import type { Value } from "../graph/types.js";
import type { KvCache } from "./attention.js";
import type { HfModelConfig } from "../io/hf-config.js";
import type { UseLiteConfig } from "./use-lite/config.js";
import type { SimpleCnnConfig } from "./simple-cnn.js";

/** Every architecture's normalised config. */
export type ModelConfig = HfModelConfig | UseLiteConfig | SimpleCnnConfig;
import type { ModelContext } from "./context.js";

export type ModelTask = "causal-lm" | "seq-cls" | "feature-extraction";

export interface ModelInputs {
  /** int64 [batch, seq] */
  readonly inputIds: Value;
  /** int64 [batch, seq], 1 = token, 0 = padding */
  readonly attentionMask: Value;
  /** int64 [batch, seq] (BERT segment ids; zeros when absent) */
  readonly tokenTypeIds?: Value;
  /** int64 [batch, seq]: each token's position (default 0…seq−1); decoding with a cache passes per-row offsets. */
  readonly positionIds?: Value;
  /** Incremental decoding: attend to cached keys/values as well (causal LMs; see `KvCache`). */
  readonly kvCache?: KvCache;
  /** int64 [batch]: compute the logits of this position only, per row ([batch, 1, vocab]). */
  readonly logitsIndex?: Value;
  /**
   * Rotary models: the cos and sin tables as values of the graph (float32 [positions, headDim],
   * row p for position p, as `ropeTables` computes them) instead of constants covering all
   * max_position_embeddings; they must cover every position id.
   */
  readonly rotaryTables?: { readonly cos: Value; readonly sin: Value };
}

export interface ModelOutputs {
  /** [batch, seq, vocab] for causal LMs, [batch, labels] for classifiers, embeddings for encoders. */
  readonly logits: Value;
  /** Final hidden states [batch, seq, hidden]. */
  readonly hidden: Value;
  /** Attention mask after input-embedding hooks (prompt tuning prepends virtual tokens). */
  readonly attentionMask: Value;
}

export interface ModelDef<C extends ModelConfig = ModelConfig> {
  readonly modelType: C["modelType"];
  readonly task: ModelTask;
  /** Modules that produce the model's output (excluded from `all-linear`, as PEFT does). */
  readonly outputModules: readonly string[];
  /** Default LoRA targets (PEFT's TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING). */
  readonly loraTargets: readonly string[];
  /** Names of the repeated blocks, for `layers_to_transform` (e.g. `layer`, `h`, `layers`). */
  readonly layersPattern: readonly string[];
  /** Tied parameters: `[name, source]`, resolved when `name` is absent from the file. */
  tiedWeights(cfg: C): readonly (readonly [string, string])[];
  /** The token embedding matrix parameter name. */
  readonly embeddingParam: string;
  build(ctx: ModelContext, cfg: C, inputs: ModelInputs): ModelOutputs;
}
