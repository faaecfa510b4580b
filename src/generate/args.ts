/**
 * A `GenerationEngine` request checked at the boundary: an object with `promptIds` (token ids:
 * numbers or an integer typed array) or `prompt` (text, for an engine with a tokenizer), optional `adapter`, `params` (only `SamplingParams` field
 * names: a misspelt or OpenAI-style name such as `max_tokens` is refused, not ignored) and
 * `signal`; other top-level fields are left to the caller. A mistake is an `ArgumentError` (`PEFT_ERR_ARGUMENT`); the values of `params` are
 * checked by `resolveSampling` (`PEFT_ERR_SAMPLING_PARAMS`), ids against the vocabulary by the engine.
 */
import { z } from "zod";
import { checkArg, tokenIdRow } from "../util/args.js";
import type { GenerationRequest, TextGenerationRequest } from "./engine.js";
import type { SamplingParams } from "./sampling.js";

const any = z.unknown().optional();
const PARAM_FIELDS = {
  maxNewTokens: any,
  temperature: any,
  doSample: any,
  topK: any,
  topP: any,
  minP: any,
  repetitionPenalty: any,
  presencePenalty: any,
  frequencyPenalty: any,
  stopTokenIds: any,
  stopStrings: any,
  ignoreEos: any,
  seed: any,
  logprobs: any,
} satisfies Record<keyof SamplingParams, z.ZodType>;

// loose at the top (callers such as the server's choices carry their own fields, e.g. `n`); strict in `params`
const requestSchema = z.looseObject({
  promptIds: tokenIdRow.optional(),
  prompt: z.string().optional(),
  adapter: z.string().nullable().optional(),
  params: z.strictObject(PARAM_FIELDS).optional(),
  signal: z.instanceof(AbortSignal).optional(),
} satisfies Record<keyof GenerationRequest | keyof TextGenerationRequest, z.ZodType>);

/** Checks a request's fields (see the module comment). */
export function checkGenerationRequest(fn: string, req: unknown): void {
  checkArg(fn, "request", requestSchema, req);
}
