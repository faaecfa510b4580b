/**
 * A Hugging Face model folder from files held in memory (peft-ts/web: a folder picker; Node can
 * too): `config.json` + `model.safetensors` (or `model.safetensors.index.json` and its shards),
 * and its tokenizer (`tokenizer.json`, optional `tokenizer_config.json`). The counterpart of
 * `loadModel` / `loadTokenizer`; USE-lite folders go to `useLiteFromFiles`.
 */
import { ConfigError, MissingFileError, MissingTensorError } from "../errors.js";
import { checkConfigAgainstWeights } from "./config-check.js";
import { parseHfConfig } from "../io/hf-config.js";
import { type FileMap, fileJsonObject, folderFiles, safetensorsFromFiles } from "../io/file-map.js";
import { HfTokenizer, type TokenizerOverrides } from "../io/tokenizer.js";
import type { Tensor } from "../tensor.js";
import { mapSource } from "./context.js";
import type { LoadedModel } from "./load.js";
import type { ModelConfig, ModelDef } from "./model-def.js";
import { MODELS } from "./registry.js";
import { USE_LITE_MODEL_TYPE, parseUseLiteConfig } from "./use-lite/config.js";
import { SIMPLE_CNN_MODEL_TYPE, parseSimpleCnnConfig } from "./simple-cnn.js";

function weightNames(files: FileMap, label: string): string[] {
  if (files.has("model.safetensors")) return ["model.safetensors"];
  const indexName = "model.safetensors.index.json";
  if (!files.has(indexName)) throw new MissingFileError(`${label}/model.safetensors`, "the folder has no model.safetensors or model.safetensors.index.json");
  const map = fileJsonObject(files, indexName, label).weight_map;
  if (typeof map !== "object" || map === null) throw new ConfigError(`${label}/${indexName}`, "weight_map", "missing or not an object");
  return [...new Set(Object.values(map as Record<string, unknown>).map(String))];
}

/** A model folder's config and weights from its files in memory (every tensor is read now). */
export function modelFromFiles(all: FileMap, label = "model"): LoadedModel {
  const files = folderFiles(all, "config.json");
  const cfgFile = `${label}/config.json`;
  const raw = fileJsonObject(files, "config.json", label, "a model folder needs the config.json written by transformers' save_pretrained");
  const config: ModelConfig =
    raw.model_type === USE_LITE_MODEL_TYPE ? parseUseLiteConfig(raw, cfgFile) : raw.model_type === SIMPLE_CNN_MODEL_TYPE ? parseSimpleCnnConfig(raw, cfgFile) : parseHfConfig(raw, cfgFile);
  const def = MODELS[config.modelType] as ModelDef;
  const tensors = new Map<string, Tensor>();
  for (const name of weightNames(files, label)) for (const [k, t] of safetensorsFromFiles(files, name, label)) tensors.set(k, t);
  for (const [name, source] of def.tiedWeights(config)) {
    if (tensors.has(name)) continue;
    const t = tensors.get(source);
    if (!t) throw new MissingTensorError(`${label}/model.safetensors`, source, `needed for the tied weight ${name}`);
    tensors.set(name, t);
  }
  const weights = mapSource(tensors, `${label}/model.safetensors`);
  checkConfigAgainstWeights(config, def, weights, cfgFile);
  return { dir: label, config, def, weights };
}

/** A model folder's tokenizer from its files in memory (`tokenizer.json`, optional `tokenizer_config.json`). */
export function tokenizerFromFiles(all: FileMap, label = "model", overrides: TokenizerOverrides = {}): HfTokenizer {
  const files = folderFiles(all, "tokenizer.json");
  const json = fileJsonObject(files, "tokenizer.json", label, "peft-ts needs the fast-tokenizer file tokenizer.json (save it with transformers' save_pretrained)");
  const config = files.has("tokenizer_config.json") ? fileJsonObject(files, "tokenizer_config.json", label) : {};
  return HfTokenizer.fromJson(json, config, `${label}/tokenizer.json`, overrides, `${label}/tokenizer_config.json`);
}
