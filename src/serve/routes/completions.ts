/** `POST /v1/completions` (OpenAI's legacy completions, with vLLM's token-id extras). */
import { randomUUID } from "node:crypto";
import type { FastifyInstance } from "fastify";
import { z } from "zod";
import { InvalidRequestError } from "../../errors.js";
import type { GenerationEngine, GenerationResult, TokenEvent } from "../../generate/index.js";
import { type ServeContext, admitted, parseBody } from "../context.js";
import { AdapterParameters, leaseForRequest } from "../compose.js";
import { encodePrompt, maxNewTokens, needEngine, runChoices, samplingParams, tokenText } from "../generation.js";
import { openSse } from "../sse.js";
import { SamplingSchema } from "./schemas.js";

const tokenId = z.number().int().nonnegative();

const CompletionBody = SamplingSchema.extend({
  model: z.string().optional(),
  prompt: z.union([z.string(), z.array(z.string()).min(1), z.array(tokenId).min(1), z.array(z.array(tokenId).min(1)).min(1)]),
  max_tokens: z.number().int().positive().nullish(),
  n: z.number().int().min(1).max(16).nullish(),
  stream: z.boolean().nullish(),
  stream_options: z.object({ include_usage: z.boolean().nullish(), continuous_usage_stats: z.boolean().nullish() }).nullish(),
  logprobs: z.number().int().min(0).max(20).nullish(),
  echo: z.literal(false).nullish(),
  best_of: z.number().int().min(1).nullish(),
  suffix: z.null().optional(),
  user: z.string().optional(),
  return_token_ids: z.boolean().nullish(),
  adapter_parameters: AdapterParameters.nullish(),
});

type Body = z.infer<typeof CompletionBody>;

/** The legacy completions logprobs object for one choice. */
function completionLogprobs(ctx: ServeContext, events: readonly TokenEvent[]) {
  const tokens = events.map((e) => tokenText(ctx, e.tokenId));
  let offset = 0;
  const text_offset = tokens.map((t) => {
    const o = offset;
    offset += t.length;
    return o;
  });
  return {
    tokens,
    token_logprobs: events.map((e) => e.logprob ?? null),
    top_logprobs: events.map((e) => Object.fromEntries((e.topLogprobs ?? []).map((t) => [t.text ?? tokenText(ctx, t.tokenId), t.logprob]))),
    text_offset,
  };
}

function prompts(ctx: ServeContext, p: Body["prompt"]): number[][] {
  if (typeof p === "string") return [encodePrompt(ctx, p)];
  if (typeof p[0] === "string") return (p as string[]).map((t) => encodePrompt(ctx, t));
  if (typeof p[0] === "number") return [p as number[]];
  return p as number[][];
}

export function completionRoutes(app: FastifyInstance, ctx: ServeContext, engineOrNull: GenerationEngine | null): void {
  app.post("/v1/completions", async (request, reply) => {
    const engine = needEngine(ctx, engineOrNull, "/v1/completions");
    const b = parseBody(CompletionBody, request.body);
    if (b.best_of != null && b.best_of !== (b.n ?? 1)) throw new InvalidRequestError("best_of", "only best_of equal to n is supported; drop best_of");
    const n = b.n ?? 1;
    const ids = prompts(ctx, b.prompt);
    const limits = ids.map((p) => maxNewTokens(ctx, p.length, b.max_tokens, 16));
    const model = b.model ?? ctx.model.id;
    const id = `cmpl-${randomUUID().replaceAll("-", "")}`;
    const created = Math.floor(Date.now() / 1000);
    const logprobs = b.logprobs ?? undefined;
    const returnIds = b.return_token_ids === true;
    const usage = (results: GenerationResult[][]) => {
      const prompt_tokens = ids.reduce((s, p) => s + p.length, 0);
      const completion_tokens = results.flat().reduce((s, r) => s + r.tokenIds.length, 0);
      return { prompt_tokens, completion_tokens, total_tokens: prompt_tokens + completion_tokens };
    };

    if (!b.stream) {
      const results = await admitted(ctx, request, reply, async (signal) => {
        const lease = await leaseForRequest(ctx, engine.model, b.model, b.adapter_parameters ?? null, signal);
        try {
          return await Promise.all(ids.map((p, i) => runChoices(ctx, engine, { promptIds: p, adapter: lease?.id ?? null, params: samplingParams(b, limits[i]!, logprobs), n, signal })));
        } finally {
          lease?.release();
        }
      });
      return {
        id,
        object: "text_completion",
        created,
        model,
        choices: results.flatMap((rs, pi) =>
          rs.map((r, k) => ({
            index: pi * n + k,
            text: r.text ?? "",
            logprobs: logprobs !== undefined ? completionLogprobs(ctx, r.logprobs ?? []) : null,
            finish_reason: r.finishReason,
            ...(returnIds ? { prompt_token_ids: r.promptTokenIds, token_ids: r.tokenIds } : {}),
          })),
        ),
        usage: usage(results),
      };
    }

    // streaming: admission and the adapter lease first, so a full queue is still a 429
    return await admitted(ctx, request, reply, async (signal) => {
      const lease = await leaseForRequest(ctx, engine.model, b.model, b.adapter_parameters ?? null, signal);
      const sse = openSse(reply);
      const chunk = (choices: unknown[], extra: Record<string, unknown> = {}) => sse.send({ id, object: "text_completion", created, model, choices, ...extra });
      try {
        const first = new Set<number>();
        const results = await Promise.all(
          ids.map((p, pi) =>
            runChoices(ctx, engine, {
              promptIds: p,
              adapter: lease?.id ?? null,
              params: samplingParams(b, limits[pi]!, logprobs),
              n,
              signal,
              onToken: (k, ev) => {
                const index = pi * n + k;
                const ids0 = returnIds && !first.has(index) ? { prompt_token_ids: p } : {};
                first.add(index);
                chunk([{ index, text: ev.text, logprobs: logprobs !== undefined ? completionLogprobs(ctx, [ev]) : null, finish_reason: null, ...ids0, ...(returnIds ? { token_ids: [ev.tokenId] } : {}) }]);
              },
            }).then((rs) => {
              rs.forEach((r, k) => chunk([{ index: pi * n + k, text: "", logprobs: null, finish_reason: r.finishReason, ...(returnIds ? { token_ids: [] } : {}) }]));
              return rs;
            }),
          ),
        );
        if (b.stream_options?.include_usage) chunk([], { usage: usage(results) });
      } catch (e) {
        sse.error(e);
      } finally {
        lease?.release();
        sse.done();
      }
      return reply;
    });
  });
}
