/** What every route of one server shares, and the helpers routes use to run admitted work. */
import type { FastifyReply, FastifyRequest } from "fastify";
import type { z } from "zod";
import { InvalidRequestError, QueueFullError, UnknownModelError } from "../errors.js";
import type { Admission } from "./admission.js";
import type { AdapterRegistry, Lease } from "./adapters.js";
import type { ServeMetrics } from "./metrics.js";
import type { ServedModel } from "./model-host.js";
import type { TrainingGate } from "../train/gate.js";

export interface ServeLimits {
  /** Largest `max_tokens` a request may ask. */
  readonly maxTokens: number;
  /** Longest prompt + `max_tokens` of a request (`--max-model-len`; default and at most the model's positions). */
  readonly maxModelLen: number;
  /** Longest prompt (tokens); default the model's context. */
  readonly maxPromptTokens: number;
  /** Most inputs in one `/v1/embeddings` or `/classify` request. */
  readonly maxInputs: number;
}

export interface ServeContext {
  readonly model: ServedModel;
  readonly adapters: AdapterRegistry;
  readonly admission: Admission;
  readonly metrics: ServeMetrics;
  readonly limits: ServeLimits;
  /** Inter-token latency target co-served training keeps to (`--itl-slo-ms`). */
  readonly itlSloMs: number;
  /**
   * A gate for one fine-tuning job co-served with this server's generation traffic
   * (`GenerationEngine.trainingGate` under `itlSloMs`; pass it as `TrainerConfig.gate`), or null
   * when the model has no generation engine (an encoder: jobs then run without a gate).
   */
  trainingGate(): TrainingGate | null;
}

/** Every model name a request may use (the base model and the known adapters). */
export function modelNames(ctx: ServeContext): string[] {
  return [ctx.model.id, ...ctx.adapters.names()];
}

/**
 * The adapter a request's `model` field names: null for the base model (or no `model`), a lease
 * on the adapter otherwise (release it when the request ends).
 */
export async function leaseFor(ctx: ServeContext, model: string | undefined, signal: AbortSignal): Promise<Lease | null> {
  if (model === undefined || model === ctx.model.id) return null;
  if (!ctx.adapters.has(model)) throw new UnknownModelError(model, modelNames(ctx));
  return await ctx.adapters.acquire(model, { signal, known: () => modelNames(ctx) });
}

/** Validates a request body with a zod schema; the first issue becomes an `InvalidRequestError`. */
export function parseBody<S extends z.ZodType>(schema: S, body: unknown): z.infer<S> {
  const r = schema.safeParse(body ?? {});
  if (r.success) return r.data;
  const issue = r.error.issues[0]!;
  const param = issue.path.length ? issue.path.join(".") : null;
  throw new InvalidRequestError(param, issue.message);
}

/** An AbortSignal that fires when the client disconnects before the answer is complete. */
export function clientSignal(request: FastifyRequest, reply: FastifyReply): AbortSignal {
  const ac = new AbortController();
  const onClose = () => {
    if (!reply.raw.writableFinished) ac.abort();
  };
  reply.raw.once("close", onClose);
  request.raw.once("aborted", () => ac.abort());
  return ac.signal;
}

/**
 * Runs `work` once the bounded queue admits the request (429 when full), with a signal for
 * client disconnects; the slot is released when `work` settles.
 */
export async function admitted<T>(ctx: ServeContext, request: FastifyRequest, reply: FastifyReply, work: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const signal = clientSignal(request, reply);
  signal.addEventListener("abort", () => ctx.metrics.aborted.inc(), { once: true });
  let release: () => void;
  try {
    release = await ctx.admission.enter(signal);
  } catch (e) {
    if (e instanceof QueueFullError) ctx.metrics.rejected.inc();
    throw e;
  }
  try {
    return await work(signal);
  } finally {
    release();
  }
}
