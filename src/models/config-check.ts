/** A model's config.json checked against its weights when the model is opened (Node and in-memory loaders alike). */
import { ShapeMismatchError } from "../errors.js";
import type { WeightSource } from "./context.js";
import type { ModelConfig, ModelDef } from "./model-def.js";
import { USE_LITE_MODEL_TYPE } from "./use-lite/config.js";

/**
 * config.json's `vocab_size` and `hidden_size` against the token embedding's shape, when the model
 * is opened: a config that disagrees with its weights is a `ShapeMismatchError` naming the key and
 * the tensor, before any graph is built (it would otherwise fail inside onnxruntime, in a Reshape).
 */
export function checkConfigAgainstWeights(config: ModelConfig, def: ModelDef, weights: WeightSource, cfgFile: string): void {
  if (config.modelType === USE_LITE_MODEL_TYPE || !weights.has(def.embeddingParam)) return;
  const actual = weights.info(def.embeddingParam).shape;
  const expected = [config.vocabSize, config.hiddenSize];
  if (actual.length === 2 && actual[0] === expected[0] && actual[1] === expected[1]) return;
  const keys = [actual[0] !== expected[0] ? `vocab_size ${config.vocabSize}` : null, actual[1] !== expected[1] ? `hidden_size ${config.hiddenSize}` : null].filter((k) => k !== null);
  throw new ShapeMismatchError(
    def.embeddingParam,
    expected,
    actual,
    `${cfgFile}: ${keys.join(" and ") || "the config"} disagree${keys.length === 1 ? "s" : ""} with the weights' [vocab_size, hidden_size]; use the config.json saved with these weights`,
  );
}
