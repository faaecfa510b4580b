/**
 * Qwen2 (`Qwen2ForCausalLM`): the Llama decoder with biases on q_proj/k_proj/v_proj (none on
 * o_proj or the MLP) and, with `use_sliding_window`, a sliding window on the layers its config
 * marks `sliding_attention` (from `max_window_layers` on).
 */
import type { Qwen2Config } from "../io/hf-config.js";
import { buildLlamaFamily, llamaFamilyDef } from "./llama.js";
import type { ModelContext } from "./context.js";
import type { ModelDef, ModelInputs, ModelOutputs } from "./model-def.js";

export function buildQwen2(ctx: ModelContext, cfg: Qwen2Config, inputs: ModelInputs): ModelOutputs {
  return buildLlamaFamily(ctx, cfg, inputs, {
    qkvBias: true,
    oBias: false,
    mlpBias: false,
    slidingWindow: (i) => (cfg.layerTypes[i] === "sliding_attention" ? cfg.slidingWindow : null),
  });
}

export const qwen2: ModelDef<Qwen2Config> = llamaFamilyDef("qwen2", buildQwen2);
