/** Text generation: KV-cache decoding, sampling, streaming detokenisation and continuous batching. */
export {
  GenerationEngine,
  type GenerationRequest,
  type TextGenerationRequest,
  type AnyGenerationRequest,
  type GenerationResult,
  type GenerationStream,
  type TokenEvent,
  type FinishReason,
  type EngineOptions,
  type EngineStats,
} from "./engine.js";
export {
  DEFAULT_SAMPLING,
  resolveSampling,
  applyPenalties,
  applyWarpers,
  samplingDistribution,
  nextToken,
  logSoftmax,
  isSampling,
  type SamplingParams,
  type TokenHistory,
} from "./sampling.js";
export { OutputText } from "./detokenize.js";
export { Decoder, buildGenerationGraph, modelGeometry, type StepRow, type ModelGeometry } from "./decoder.js";
export { KvArena } from "./kv-arena.js";
export { CoServeScheduler, EngineGate, type CoServeOptions, type CoServeStats } from "./coserve.js";
export { prefillPrefix } from "./prefix.js";
