/** A run folder's layer importance (`importance.json`, written by `runTraining`; see `src/train/importance.ts`). */
import { existsSync } from "node:fs";
import { join } from "node:path";
import { ConfigError, MissingFileError } from "../errors.js";
import { readJsonObject } from "../io/json-file.js";
import { type LayerImportance, LayerImportanceRecorder } from "../train/importance.js";
import { RUN_FILES } from "./run-dir.js";

/** Reads `dir/importance.json`; a missing or malformed file is a typed error naming it. */
export function readRunImportance(dir: string): LayerImportance & { readonly resumed?: boolean } {
  const file = join(dir, RUN_FILES.importance);
  if (!existsSync(file)) {
    throw new MissingFileError(file, "layer importance is recorded by 'peft train' runs whose gradients are on the host (not with the resident optimizer); train the run again with this version");
  }
  const raw = readJsonObject(file) as Record<string, unknown>;
  const layers = raw.layers;
  const ok =
    raw.criterion === "taylor" &&
    typeof raw.steps === "number" &&
    Array.isArray(layers) &&
    layers.every((l: unknown) => {
      const o = l as Record<string, unknown>;
      return typeof o === "object" && o !== null && ["layer", "taylor", "gradSq", "update", "params", "tensors", "rank"].every((k) => typeof o[k] === "number" && Number.isFinite(o[k]));
    });
  if (!ok) throw new ConfigError(file, "layers", "is not a layer importance file (criterion 'taylor', steps and a list of layer scores)");
  return raw as unknown as LayerImportance & { resumed?: boolean };
}

/** The run's layers, most important first. */
export function runLayerRanking(dir: string): number[] {
  return LayerImportanceRecorder.ranking(readRunImportance(dir));
}
