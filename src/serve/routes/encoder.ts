/** `POST /v1/embeddings` (OpenAI) and `POST /classify` (vLLM) for encoder models and their adapters. */
import { randomUUID } from "node:crypto";
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { z } from "zod";
import { InvalidRequestError, UnsupportedTaskError } from "../../errors.js";
import { type ServeContext, admitted, leaseFor, parseBody } from "../context.js";
import type { EncoderInput, EncoderService } from "../encoder.js";

const tokenId = z.number().int().nonnegative();
/** OpenAI's `input`: a text, texts, a token-id sequence, or token-id sequences. */
const Input = z.union([z.string(), z.array(z.string()).min(1), z.array(tokenId).min(1), z.array(z.array(tokenId).min(1)).min(1)]);

const EmbeddingsBody = z.object({
  model: z.string().optional(),
  input: Input,
  encoding_format: z.enum(["float", "base64"]).optional(),
  dimensions: z.number().int().positive().optional(),
  user: z.string().optional(),
});

const ClassifyBody = z.object({
  model: z.string().optional(),
  input: Input,
  user: z.string().optional(),
});

function encoderInput(input: z.infer<typeof Input>, maxInputs: number): EncoderInput {
  const out: EncoderInput =
    typeof input === "string"
      ? { kind: "text", texts: [input] }
      : typeof input[0] === "string"
        ? { kind: "text", texts: input as string[] }
        : typeof input[0] === "number"
          ? { kind: "ids", ids: [input as number[]] }
          : { kind: "ids", ids: input as number[][] };
  const n = out.kind === "text" ? out.texts.length : out.ids.length;
  if (n > maxInputs) throw new InvalidRequestError("input", `${n} inputs, more than the server's limit of ${maxInputs} per request; split the request`);
  return out;
}

/** float32 little-endian bytes, base64 (what the openai client asks for by default). */
function base64Floats(v: readonly number[]): string {
  const f = Float32Array.from(v);
  return Buffer.from(f.buffer, f.byteOffset, f.byteLength).toString("base64");
}

function needEncoder(ctx: ServeContext, encoder: EncoderService | null, endpoint: string): EncoderService {
  if (!encoder) throw new UnsupportedTaskError(ctx.model.id, endpoint, `it is a ${ctx.model.task} model; use /v1/completions or /v1/chat/completions`);
  return encoder;
}

export function encoderRoutes(app: FastifyInstance, ctx: ServeContext, encoder: EncoderService | null): void {
  app.post("/v1/embeddings", async (request, reply) => {
    const b = parseBody(EmbeddingsBody, request.body);
    const enc = needEncoder(ctx, encoder, "/v1/embeddings");
    const input = encoderInput(b.input, ctx.limits.maxInputs);
    const model = b.model ?? ctx.model.id;
    const out = await admitted(ctx, request, reply, async (signal) => {
      const lease = await leaseFor(ctx, b.model, signal);
      try {
        return await enc.embed(lease?.id ?? null, input, signal);
      } finally {
        lease?.release();
      }
    });
    if (b.dimensions !== undefined && b.dimensions !== out.rows[0]?.length) {
      throw new InvalidRequestError("dimensions", `the model gives ${out.rows[0]?.length}-dimensional embeddings and cannot shorten them; omit dimensions`);
    }
    return {
      object: "list",
      data: out.rows.map((v, index) => ({ object: "embedding", index, embedding: b.encoding_format === "base64" ? base64Floats(v) : v })),
      model,
      usage: { prompt_tokens: out.tokens, total_tokens: out.tokens },
    };
  });

  const classify = async (request: FastifyRequest, reply: FastifyReply) => {
    const b = parseBody(ClassifyBody, request.body);
    const enc = needEncoder(ctx, encoder, "/classify");
    const input = encoderInput(b.input, ctx.limits.maxInputs);
    const model = b.model ?? ctx.model.id;
    const out = await admitted(ctx, request, reply, async (signal) => {
      const lease = await leaseFor(ctx, b.model, signal);
      try {
        return await enc.classify(lease?.id ?? null, model, input, signal);
      } finally {
        lease?.release();
      }
    });
    return {
      id: `classify-${randomUUID().replaceAll("-", "")}`,
      object: "list",
      created: Math.floor(Date.now() / 1000),
      model,
      data: out.rows.map((c, index) => ({ index, label: c.label, probs: c.probs, num_classes: c.probs.length })),
      usage: { prompt_tokens: out.tokens, total_tokens: out.tokens, completion_tokens: 0 },
    };
  };
  // vLLM serves it at /classify; /v1/classify lets the openai client's `post("/classify")` reach it
  app.post("/classify", classify);
  app.post("/v1/classify", classify);
}
