/**
 * Test helpers: a tiny random USE-lite classifier (relu/tanh only, so float64 graphs are exact
 * and finite differences are clean), seeded task vectors and a synthetic token task.
 */
import { mapSource } from "../../models/context.js";
import type { LoadedModel } from "../../models/load.js";
import { USE_LITE_DEFAULT_CONFIG, type UseLiteConfig } from "../../models/use-lite/config.js";
import { USE_LITE_CLASSIFIER, useLite } from "../../models/use-lite/model.js";
import { useLiteParamShapes } from "../../models/use-lite/weights.js";
import { type Tensor, numel, tensor } from "../../tensor.js";
import type { TokenizedExample } from "../../train/trainer.js";
import { Rng } from "../../util/rng.js";
import type { AtlasTaskVector } from "./task-vectors.js";

export const TINY_CONFIG: UseLiteConfig = {
  ...USE_LITE_DEFAULT_CONFIG,
  vocabSize: 40,
  embeddingSize: 8,
  hiddenSize: 16,
  numLayers: 2,
  numHeads: 2,
  intermediateSize: 24,
};

/** A tiny USE-lite with a `classifier` head of `numLabels` outputs. */
export function tinyModel(seed = 1, numLabels = 3): LoadedModel {
  const rng = new Rng(seed);
  const w = new Map<string, Tensor>();
  for (const [name, shape] of useLiteParamShapes(TINY_CONFIG)) {
    const n = numel(shape);
    const isNorm = name.includes("layer_norm") && name.endsWith(".weight");
    // Xavier-like scales keep the tiny encoder out of tanh saturation, so inputs stay distinguishable
    const std = isNorm ? 0.1 : shape.length === 2 && !name.startsWith("embeddings") ? 1 / Math.sqrt(shape[1]!) : name.startsWith("embeddings") ? 1 : 0.05;
    const data = Float32Array.from({ length: n }, () => (isNorm ? 1 : 0) + std * rng.normal());
    if (name.includes("inv_timescales")) for (let i = 0; i < n; i++) data[i] = 10000 ** (-i / Math.max(1, n - 1));
    w.set(name, tensor("float32", shape, data));
  }
  w.set(`${USE_LITE_CLASSIFIER}.weight`, tensor("float32", [numLabels, TINY_CONFIG.hiddenSize], Float32Array.from({ length: numLabels * TINY_CONFIG.hiddenSize }, () => rng.normal())));
  w.set(`${USE_LITE_CLASSIFIER}.bias`, tensor("float32", [numLabels], new Float32Array(numLabels)));
  return { dir: "tiny-use-lite", config: TINY_CONFIG, def: useLite, weights: mapSource(w, "tiny-use-lite") };
}

/** A random task vector over `blocks` (std `scale`). */
export function randomTaskVector(model: LoadedModel, name: string, blocks: readonly string[], seed: number, scale = 0.2): AtlasTaskVector {
  const rng = new Rng(seed);
  const m = new Map<string, Float32Array>();
  for (const b of blocks) m.set(b, Float32Array.from({ length: numel(model.weights.info(b).shape) }, () => scale * rng.normal()));
  return { name, ref: { kind: "memory" }, blocks: m };
}

/** Random token sequences (ids 6…vocab−1, lengths 3…8) for tiny models. */
export function randomSequences(n: number, seed: number): number[][] {
  const rng = new Rng(seed);
  return Array.from({ length: n }, () => Array.from({ length: 3 + rng.int(6) }, () => 6 + rng.int(TINY_CONFIG.vocabSize - 6)));
}

/** A synthetic binary task: label 1 when the sequence holds a marker token (6 or 7), in half of the sequences. */
export function syntheticTask(n: number, seed: number): TokenizedExample[] {
  const rng = new Rng(seed);
  return Array.from({ length: n }, (_, i) => {
    const ids = Array.from({ length: 3 + rng.int(6) }, () => 8 + rng.int(TINY_CONFIG.vocabSize - 8));
    const label = i % 2;
    if (label === 1) ids[rng.int(ids.length)] = 6 + rng.int(2);
    return { ids, label };
  });
}
