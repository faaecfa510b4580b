/**
 * A generation engine from folders: a Hugging Face model folder (config.json, safetensors, and
 * tokenizer.json when there is one) plus PEFT adapter folders, each loaded under its folder name.
 * What `peft generate` runs; the engine serves any of the adapters per request.
 */
import { existsSync } from "node:fs";
import { join } from "node:path";
import { TokenizerError } from "../errors.js";
import type { ChatMessage } from "../io/chat-template.js";
import { type GenerationConfig, loadGenerationConfig } from "../io/generation-config.js";
import { adapterNamesForDirs } from "../io/peft-files.js";
import { type HfTokenizer, loadTokenizer } from "../io/tokenizer.js";
import { SafetensorsWeights, loadModel } from "../models/load.js";
import { PeftModel } from "../peft/peft-model.js";
import { type EngineOptions, GenerationEngine } from "./engine.js";

export interface OpenGeneratorOptions extends Omit<EngineOptions, "tokenizer"> {
  /** Base model folder. */
  readonly model: string;
  /** PEFT adapter folders (loaded under their folder names; see `adapterNamesForDirs`). */
  readonly adapters?: readonly string[];
  /** onnxruntime intra-op threads. */
  readonly threads?: number;
}

export interface OpenedGenerator {
  readonly engine: GenerationEngine;
  readonly model: PeftModel;
  /** The model folder's tokenizer, or null when it has no tokenizer.json. */
  readonly tokenizer: HfTokenizer | null;
  /** Adapter names, in the order of the folders. */
  readonly adapterNames: readonly string[];
  /** The folder's generation_config.json, or undefined. */
  readonly generationConfig: GenerationConfig | undefined;
  /** Token ids of `text` (special tokens added as the tokenizer's post-processor does); needs a tokenizer. */
  encode(text: string): number[];
  /** Token ids of a chat rendered with the tokenizer's chat template, ending with the start of the assistant's turn. */
  encodeChat(messages: readonly ChatMessage[]): number[];
  close(): Promise<void>;
}

export function openGenerator(opts: OpenGeneratorOptions): OpenedGenerator {
  const dirs = opts.adapters ?? [];
  const names = adapterNamesForDirs(dirs);
  const base = loadModel(opts.model);
  const tokenizer = existsSync(join(opts.model, "tokenizer.json")) ? loadTokenizer(opts.model) : null;
  const generationConfig = loadGenerationConfig(opts.model);
  const model = new PeftModel(base);
  const closeWeights = () => {
    if (base.weights instanceof SafetensorsWeights) base.weights.close();
  };
  try {
    dirs.forEach((dir, i) => model.loadAdapter(dir, names[i]!));
  } catch (e) {
    closeWeights();
    throw e;
  }
  const engineOpts: EngineOptions = { ...opts };
  for (const k of ["model", "adapters", "threads"]) delete (engineOpts as Record<string, unknown>)[k];
  const sessionOptions = { ...(opts.sessionOptions ?? {}), ...(opts.threads !== undefined ? { threads: opts.threads } : {}) };
  const engine = new GenerationEngine(model, { ...engineOpts, sessionOptions, ...(tokenizer ? { tokenizer } : {}), ...(generationConfig && !engineOpts.generationConfig ? { generationConfig } : {}) });
  const needTokenizer = (what: string) => {
    if (!tokenizer) throw new TokenizerError(join(opts.model, "tokenizer.json"), `the model folder has no tokenizer.json; ${what}`);
    return tokenizer;
  };
  return {
    engine,
    model,
    tokenizer,
    adapterNames: names,
    generationConfig,
    encode: (text) => needTokenizer("pass token ids (--prompt-ids) instead of text").encode(text).ids,
    encodeChat: (messages) => needTokenizer("a chat needs its chat template").encodeChat(messages, { addGenerationPrompt: true }),
    close: async () => {
      await engine.close();
      await model.dispose();
      closeWeights();
    },
  };
}
