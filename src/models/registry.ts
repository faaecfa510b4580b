/** The architectures peft-ts implements, by `config.json` `model_type`. */
import type { HfModelConfig } from "../io/hf-config.js";
import { bert } from "./bert.js";
import { gpt2 } from "./gpt2.js";
import { llama } from "./llama.js";
import type { ModelDef } from "./model-def.js";

export const MODELS: { readonly [K in HfModelConfig["modelType"]]: ModelDef<Extract<HfModelConfig, { modelType: K }>> } = {
  bert,
  gpt2,
  llama,
};
