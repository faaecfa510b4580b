/**
 * Mistral (`MistralForCausalLM`): the Llama decoder (GQA, explicit `head_dim`) without biases,
 * with `sliding_window` attention on every layer (null: full causal attention).
 */
import type { MistralConfig } from "../io/hf-config.js";
import { buildLlamaFamily, llamaFamilyDef } from "./llama.js";
import type { ModelContext } from "./context.js";
import type { ModelDef, ModelInputs, ModelOutputs } from "./model-def.js";

export function buildMistral(ctx: ModelContext, cfg: MistralConfig, inputs: ModelInputs): ModelOutputs {
  return buildLlamaFamily(ctx, cfg, inputs, { qkvBias: false, oBias: false, mlpBias: false, slidingWindow: () => cfg.slidingWindow });
}

export const mistral: ModelDef<MistralConfig> = llamaFamilyDef("mistral", buildMistral);
