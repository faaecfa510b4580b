/** The architectures peft-ts implements, by `config.json` `model_type`. */
import { bert } from "./bert.js";
import { gpt2 } from "./gpt2.js";
import { llama } from "./llama.js";
import { mistral } from "./mistral.js";
import type { ModelConfig, ModelDef } from "./model-def.js";
import { qwen2 } from "./qwen2.js";
import { simpleCnn } from "./simple-cnn.js";
import { useLite } from "./use-lite/model.js";

export const MODELS: { readonly [K in ModelConfig["modelType"]]: ModelDef<Extract<ModelConfig, { modelType: K }>> } = {
  bert,
  gpt2,
  llama,
  qwen2,
  mistral,
  "use-lite": useLite,
  simple_cnn: simpleCnn,
};
