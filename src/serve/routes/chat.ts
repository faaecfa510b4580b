/** `POST /v1/chat/completions`: the chat template of the model's tokenizer, then generation. */
import { randomUUID } from "node:crypto";
import type { FastifyInstance } from "fastify";
import { z } from "zod";
import { InvalidRequestError, UnsupportedTaskError } from "../../errors.js";
import type { GenerationEngine, GenerationResult, TokenEvent } from "../../generate/index.js";
import type { ChatMessage } from "../../io/chat-template.js";
import { type ServeContext, admitted, parseBody } from "../context.js";
import { AdapterParameters, leaseForRequest } from "../compose.js";
import { maxNewTokens, needEngine, runChoices, samplingParams, tokenText } from "../generation.js";
import { openSse } from "../sse.js";
import { SamplingSchema } from "./schemas.js";

const Message = z.looseObject({
  role: z.string().min(1),
  content: z.union([z.string(), z.array(z.looseObject({ type: z.string() })), z.null()]).optional(),
  name: z.string().optional(),
});

const ChatBody = SamplingSchema.extend({
  model: z.string().optional(),
  messages: z.array(Message).min(1),
  max_tokens: z.number().int().positive().nullish(),
  max_completion_tokens: z.number().int().positive().nullish(),
  n: z.number().int().min(1).max(16).nullish(),
  stream: z.boolean().nullish(),
  stream_options: z.object({ include_usage: z.boolean().nullish(), continuous_usage_stats: z.boolean().nullish() }).nullish(),
  logprobs: z.boolean().nullish(),
  top_logprobs: z.number().int().min(0).max(20).nullish(),
  user: z.string().optional(),
  return_token_ids: z.boolean().nullish(),
  adapter_parameters: AdapterParameters.nullish(),
  add_generation_prompt: z.boolean().nullish(),
  continue_final_message: z.boolean().nullish(),
  chat_template: z.string().nullish(),
  chat_template_kwargs: z.record(z.string(), z.unknown()).nullish(),
});

/** One token in chat's logprobs format. */
function chatToken(ctx: ServeContext, e: TokenEvent) {
  const token = tokenText(ctx, e.tokenId);
  return {
    token,
    logprob: e.logprob ?? null,
    bytes: [...Buffer.from(token, "utf8")],
    top_logprobs: (e.topLogprobs ?? []).map((t) => {
      const s = t.text ?? tokenText(ctx, t.tokenId);
      return { token: s, logprob: t.logprob, bytes: [...Buffer.from(s, "utf8")] };
    }),
  };
}

export function chatRoutes(app: FastifyInstance, ctx: ServeContext, engineOrNull: GenerationEngine | null): void {
  app.post("/v1/chat/completions", async (request, reply) => {
    const engine = needEngine(ctx, engineOrNull, "/v1/chat/completions");
    const b = parseBody(ChatBody, request.body);
    const tok = ctx.model.tokenizer;
    if (tok === null || tok.kind !== "hf") {
      throw new UnsupportedTaskError(ctx.model.id, "/v1/chat/completions", "the model folder has no tokenizer.json (and so no chat template); use /v1/completions with token-id prompts");
    }
    if (b.max_tokens != null && b.max_completion_tokens != null && b.max_tokens !== b.max_completion_tokens) {
      throw new InvalidRequestError("max_completion_tokens", "max_tokens and max_completion_tokens differ; give one");
    }
    const promptIds = tok.tok.encodeChat(b.messages as ChatMessage[], {
      addGenerationPrompt: b.continue_final_message ? false : (b.add_generation_prompt ?? true),
      ...(b.continue_final_message ? { continueFinalMessage: true } : {}),
      ...(b.chat_template ? { template: b.chat_template } : {}),
      ...(b.chat_template_kwargs ? { variables: b.chat_template_kwargs } : {}),
    });
    const limit = maxNewTokens(ctx, promptIds.length, b.max_completion_tokens ?? b.max_tokens, "rest", "messages");
    const n = b.n ?? 1;
    const logprobs = b.logprobs ? (b.top_logprobs ?? 0) : undefined;
    if (!b.logprobs && b.top_logprobs) throw new InvalidRequestError("top_logprobs", "needs logprobs: true");
    const params = samplingParams(b, limit, logprobs);
    const model = b.model ?? ctx.model.id;
    const id = `chatcmpl-${randomUUID().replaceAll("-", "")}`;
    const created = Math.floor(Date.now() / 1000);
    const returnIds = b.return_token_ids === true;
    const usage = (rs: GenerationResult[]) => {
      const completion_tokens = rs.reduce((s, r) => s + r.tokenIds.length, 0);
      return { prompt_tokens: promptIds.length, completion_tokens, total_tokens: promptIds.length + completion_tokens };
    };

    if (!b.stream) {
      const results = await admitted(ctx, request, reply, async (signal) => {
        const lease = await leaseForRequest(ctx, engine.model, b.model, b.adapter_parameters ?? null, signal);
        try {
          return await runChoices(ctx, engine, { promptIds, adapter: lease?.id ?? null, params, n, signal });
        } finally {
          lease?.release();
        }
      });
      return {
        id,
        object: "chat.completion",
        created,
        model,
        choices: results.map((r, index) => ({
          index,
          message: { role: "assistant", content: r.text ?? "" },
          logprobs: logprobs !== undefined ? { content: (r.logprobs ?? []).map((e) => chatToken(ctx, e)) } : null,
          finish_reason: r.finishReason,
          ...(returnIds ? { token_ids: r.tokenIds } : {}),
        })),
        usage: usage(results),
        ...(returnIds ? { prompt_token_ids: promptIds } : {}),
      };
    }

    return await admitted(ctx, request, reply, async (signal) => {
      const lease = await leaseForRequest(ctx, engine.model, b.model, b.adapter_parameters ?? null, signal);
      const sse = openSse(reply);
      const chunk = (choices: unknown[], extra: Record<string, unknown> = {}) => sse.send({ id, object: "chat.completion.chunk", created, model, choices, ...extra });
      try {
        for (let index = 0; index < n; index++) chunk([{ index, delta: { role: "assistant", content: "" }, logprobs: null, finish_reason: null }], returnIds && index === 0 ? { prompt_token_ids: promptIds } : {});
        const results = await runChoices(ctx, engine, {
          promptIds,
          adapter: lease?.id ?? null,
          params,
          n,
          signal,
          onToken: (index, ev) =>
            chunk([{ index, delta: { content: ev.text }, logprobs: logprobs !== undefined ? { content: [chatToken(ctx, ev)] } : null, finish_reason: null, ...(returnIds ? { token_ids: [ev.tokenId] } : {}) }]),
        });
        results.forEach((r, index) => chunk([{ index, delta: {}, logprobs: null, finish_reason: r.finishReason }]));
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
