/**
 * The reference implementation, live: `@energetic-ai/embeddings` (a dev dependency, with the
 * TF.js runtime bundled in `@energetic-ai/core`) running the package graph. Used to make the
 * committed fixture and by the live parity test; `null` when the dev dependency is not installed.
 */
import { USE_LITE_PACKAGE } from "./weights.js";

export interface TfjsUseLite {
  /** The package tokenizer's ids for one text. */
  encode(text: string): number[];
  /** The package's `embed()` on a batch (one TF.js run; a trailing empty text gets no row). */
  embed(texts: readonly string[]): Promise<number[][]>;
}

interface EmbeddingsModelLike {
  tokenizer: { encode(text: string): number[] };
  embed(texts: string[]): Promise<number[][]>;
}

interface EmbeddingsModule {
  initModel(source: unknown): Promise<EmbeddingsModelLike>;
}

interface ModelSourceModule {
  modelSource: unknown;
}

/** CommonJS packages imported from ESM expose `module.exports` as `default`. */
async function importCjs<T>(specifier: string): Promise<T | null> {
  try {
    const mod = (await import(specifier)) as { default?: T };
    return (mod.default ?? mod) as T;
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "ERR_MODULE_NOT_FOUND" || code === "MODULE_NOT_FOUND") return null;
    throw e;
  }
}

export const TFJS_EMBEDDINGS_PACKAGE = "@energetic-ai/embeddings";

/** Loads the package model in TF.js, or returns null when `@energetic-ai/embeddings` is absent. */
export async function loadTfjsUseLite(): Promise<TfjsUseLite | null> {
  const lib = await importCjs<EmbeddingsModule>(TFJS_EMBEDDINGS_PACKAGE);
  const weights = await importCjs<ModelSourceModule>(USE_LITE_PACKAGE);
  if (!lib || !weights) return null;
  const model = await lib.initModel(weights.modelSource);
  return {
    encode: (text) => model.tokenizer.encode(text),
    embed: (texts) => model.embed([...texts]),
  };
}
