/** Names shared by the queue's clients and workers. */
import { hostname } from "node:os";

/** The BullMQ queue every `peft` client and worker uses unless told otherwise. */
export const DEFAULT_QUEUE_NAME = "peft";

/** How a worker names itself in progress, events and `processedBy`: `host:pid`. */
export function workerName(): string {
  return `${hostname()}:${process.pid}`;
}

/**
 * A failure as it travels through the queue: `PEFT_ERR_X: message` for a PeftError (so the
 * client can rebuild the code), the message otherwise.
 */
export function encodeFailure(e: unknown): string {
  const code = (e as { code?: unknown } | null)?.code;
  const message = e instanceof Error ? e.message : String(e);
  return typeof code === "string" && code.startsWith("PEFT_ERR_") ? `${code}: ${message}` : message;
}

export function decodeFailure(reason: string): { code: string | null; message: string } {
  const m = /^(PEFT_ERR_[A-Z0-9_]+): ([\s\S]*)$/.exec(reason);
  return m ? { code: m[1]!, message: m[2]! } : { code: null, message: reason };
}
