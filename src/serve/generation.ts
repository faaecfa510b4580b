/**
 * The generation side of a server: OpenAI request fields → the engine's sampling parameters,
 * `n` choices per request, prompt limits, and the generation metrics (time to first token,
 * inter-token latency, tokens per second). Routes turn the events into JSON or SSE.
 */
import { ContextLengthError, InvalidRequestError, UnsupportedTaskError } from "../errors.js";
import type { GenerationEngine, GenerationResult, SamplingParams, TokenEvent } from "../generate/index.js";
import type { ServeContext } from "./context.js";

/** The engine, or a 400 for an encoder model (embeddings and classify serve those). */
export function needEngine(ctx: ServeContext, engine: GenerationEngine | null, endpoint: string): GenerationEngine {
  if (!engine) throw new UnsupportedTaskError(ctx.model.id, endpoint, `it is a ${ctx.model.task} model (an encoder); use /v1/embeddings or /classify`);
  return engine;
}

/** The sampling fields OpenAI and vLLM requests share (completions and chat). */
export interface SamplingFields {
  readonly temperature?: number | null | undefined;
  readonly top_p?: number | null | undefined;
  readonly top_k?: number | null | undefined;
  readonly min_p?: number | null | undefined;
  readonly presence_penalty?: number | null | undefined;
  readonly frequency_penalty?: number | null | undefined;
  readonly repetition_penalty?: number | null | undefined;
  readonly stop?: string | string[] | null | undefined;
  readonly stop_token_ids?: number[] | null | undefined;
  readonly ignore_eos?: boolean | null | undefined;
  readonly seed?: number | null | undefined;
}

/** The engine's parameters for a request; fields the request leaves out keep the engine's defaults. */
export function samplingParams(b: SamplingFields, maxNewTokens: number, logprobs: number | undefined): Partial<SamplingParams> {
  const p: Partial<SamplingParams> = { maxNewTokens };
  if (b.temperature !== undefined && b.temperature !== null) {
    p.temperature = b.temperature;
    p.doSample = b.temperature > 0;
  }
  if (b.top_p != null) p.topP = b.top_p;
  if (b.top_k != null) p.topK = b.top_k < 0 ? 0 : b.top_k; // vLLM: -1 = off
  if (b.min_p != null) p.minP = b.min_p;
  if (b.presence_penalty != null) p.presencePenalty = b.presence_penalty;
  if (b.frequency_penalty != null) p.frequencyPenalty = b.frequency_penalty;
  if (b.repetition_penalty != null) p.repetitionPenalty = b.repetition_penalty;
  if (b.stop != null) p.stopStrings = typeof b.stop === "string" ? [b.stop] : b.stop;
  if (b.stop_token_ids != null) p.stopTokenIds = b.stop_token_ids;
  if (b.ignore_eos != null) p.ignoreEos = b.ignore_eos;
  if (b.seed != null) p.seed = b.seed;
  if (logprobs !== undefined) p.logprobs = logprobs;
  return p;
}

/**
 * `max_tokens` checked against the server's limit and the context left after the prompt (the
 * model's positions, or `--max-model-len`; vLLM's 400 "maximum context length", here with code
 * `PEFT_ERR_CONTEXT_LENGTH`); `fallback` when the request gives none. `promptParam` names the
 * request field of the prompt (`prompt`, or `messages` for chat).
 */
export function maxNewTokens(ctx: ServeContext, promptLength: number, asked: number | null | undefined, fallback: number | "rest", promptParam = "prompt"): number {
  const context = ctx.limits.maxModelLen;
  const room = context - promptLength;
  if (room < 1) throw new ContextLengthError(promptLength, context, "", { param: promptParam, newTokens: 0 });
  if (promptLength > ctx.limits.maxPromptTokens) {
    throw new InvalidRequestError(promptParam, `the prompt has ${promptLength} tokens, more than the server's limit of ${ctx.limits.maxPromptTokens}`);
  }
  if (asked === undefined || asked === null) return Math.min(fallback === "rest" ? room : fallback, room, ctx.limits.maxTokens);
  if (asked > room) throw new ContextLengthError(promptLength, context, "", { param: "max_tokens", newTokens: asked });
  if (asked > ctx.limits.maxTokens) throw new InvalidRequestError("max_tokens", `${asked} is more than the server's limit of ${ctx.limits.maxTokens} (--max-tokens)`);
  return asked;
}

/** Token ids of a text prompt (special tokens added as the tokenizer's post-processor does). */
export function encodePrompt(ctx: ServeContext, text: string, addSpecialTokens = true): number[] {
  const tok = ctx.model.tokenizer;
  if (tok === null || tok.kind !== "hf") throw new UnsupportedTaskError(ctx.model.id, "text prompts", "the model folder has no tokenizer.json; send token ids (prompt: [5, 17, 42])");
  return tok.tok.encode(text, { addSpecialTokens }).ids;
}

/** The text of one token id for logprobs: the decoded piece, or vLLM's `token_id:N` without a tokenizer. */
export function tokenText(ctx: ServeContext, id: number): string {
  const tok = ctx.model.tokenizer;
  if (tok === null || tok.kind !== "hf" || id >= tok.tok.vocabSize) return `token_id:${id}`; // the model's vocabulary may be larger than the tokenizer's
  return tok.tok.decode([id]);
}

export interface ChoiceRun {
  readonly promptIds: readonly number[];
  /** Engine adapter id (a registry lease's id), or null for the base model. */
  readonly adapter: string | null;
  readonly params: Partial<SamplingParams>;
  readonly n: number;
  readonly signal: AbortSignal;
  /** Called for each token of choice `index` as it is decoded. */
  readonly onToken?: (index: number, ev: TokenEvent) => void;
}

/**
 * Runs `n` choices of one prompt through the engine (`streamChoices`: the prompt is read once;
 * choice i > 0 samples with seed + i, so seeded sampled choices differ but repeat), recording the
 * generation metrics.
 */
export async function runChoices(ctx: ServeContext, engine: GenerationEngine, run: ChoiceRun): Promise<GenerationResult[]> {
  const m = ctx.metrics;
  m.promptTokens.inc(run.promptIds.length * run.n);
  const streams = engine.streamChoices({ promptIds: run.promptIds, adapter: run.adapter, params: run.params, signal: run.signal }, run.n);
  const choices = streams.map(async (stream, index) => {
    const t0 = performance.now();
    let last = t0;
    let count = 0;
    for await (const ev of stream) {
      const now = performance.now();
      if (count === 0) m.ttft.observe((now - t0) / 1000);
      else m.itl.observe((now - last) / 1000);
      last = now;
      count++;
      run.onToken?.(index, ev);
    }
    const result = await stream.result;
    m.generationTokens.inc(result.tokenIds.length);
    const seconds = (performance.now() - t0) / 1000;
    if (result.tokenIds.length > 0 && seconds > 0) m.tokensPerSecond.observe(result.tokenIds.length / seconds);
    return result;
  });
  return await Promise.all(choices);
}

/** OpenAI's finish_reason for an engine result. */
export function finishReason(r: GenerationResult): "stop" | "length" | "abort" {
  return r.finishReason;
}
