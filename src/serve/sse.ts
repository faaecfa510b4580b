/** Server-sent events as OpenAI streams them: `data: <json>\n\n` chunks, then `data: [DONE]`. */
import { PassThrough } from "node:stream";
import type { FastifyReply } from "fastify";
import { mapError } from "./http-errors.js";

export interface SseWriter {
  send(chunk: unknown): void;
  /** Sends an error chunk (vLLM's in-stream error object) — the HTTP status is already 200. */
  error(e: unknown): void;
  /** Writes `data: [DONE]` and ends the response. */
  done(): void;
}

/** Starts an event-stream reply (sent through fastify, so hooks and metrics see it). */
export function openSse(reply: FastifyReply): SseWriter {
  const stream = new PassThrough();
  void reply.header("content-type", "text/event-stream; charset=utf-8").header("cache-control", "no-cache").header("x-accel-buffering", "no").send(stream);
  let ended = false;
  const write = (data: string) => {
    if (!ended) stream.write(`data: ${data}\n\n`);
  };
  return {
    send: (chunk) => write(JSON.stringify(chunk)),
    error: (e) => write(JSON.stringify(mapError(e).body)),
    done: () => {
      if (ended) return;
      write("[DONE]");
      ended = true;
      stream.end();
    },
  };
}
