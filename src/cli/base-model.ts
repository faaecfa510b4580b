/**
 * `--base` of `peft combine` and `base_model` of `peft merge`: a model folder, or `use-lite` (the
 * Universal Sentence Encoder lite of the installed npm package, which `peft train --model use-lite`
 * adapts). USE-lite's classifier head is not part of the encoder: it is sized from the adapters'
 * saved head (`modules_to_save`), so their copies fit the base.
 */
import { readAdapterDir } from "../io/peft-files.js";
import type { LoadedModel } from "../models/load.js";
import { loadUseLiteModel } from "../models/use-lite/classifier.js";
import { USE_LITE_CLASSIFIER } from "../models/use-lite/model.js";

/** The `--base` value naming the built-in USE-lite model. */
export const USE_LITE_BASE = "use-lite";

/** Rows of the classifier head saved in the first adapter that has one (null: none has a head). */
function headRows(adapters: readonly string[]): number | null {
  for (const dir of adapters) {
    for (const [k, t] of readAdapterDir(dir).weights) {
      if (k.endsWith(`${USE_LITE_CLASSIFIER}.weight`) && t.shape.length === 2) return t.shape[0]!;
    }
  }
  return null;
}

/** `spec` as `combineAdapterDirs` / `runMergeConfig` take it: the folder, or the loaded USE-lite model. */
export function openBase(spec: string, adapters: readonly string[]): string | LoadedModel {
  if (spec !== USE_LITE_BASE) return spec;
  const rows = headRows(adapters);
  const { tokenizer: _tokenizer, ...model } = loadUseLiteModel(rows !== null ? { numLabels: rows } : {});
  return model;
}
