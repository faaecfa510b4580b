/**
 * One error handler for every route: `PeftError` codes (and fastify's own errors) become HTTP
 * statuses and OpenAI-style error objects `{error: {message, type, param, code}}`, so the
 * official `openai` client raises its matching error class (`NotFoundError`, `RateLimitError`…).
 */
import type { FastifyError, FastifyReply, FastifyRequest } from "fastify";
import { ContextLengthError, InvalidRequestError, PeftError, QueueFullError } from "../errors.js";

/** OpenAI's `error.type` values. */
export type OpenAiErrorType =
  | "invalid_request_error"
  | "authentication_error"
  | "permission_error"
  | "not_found_error"
  | "rate_limit_error"
  | "service_unavailable_error"
  | "server_error";

export interface OpenAiErrorBody {
  readonly error: { readonly message: string; readonly type: OpenAiErrorType; readonly param: string | null; readonly code: string | null };
}

/** HTTP status and error type per `PeftError` code; codes not listed are caller faults (400). */
const BY_CODE: Readonly<Record<string, readonly [number, OpenAiErrorType]>> = {
  PEFT_ERR_AUTHENTICATION: [401, "authentication_error"],
  PEFT_ERR_ADAPTER_PATH: [403, "permission_error"],
  PEFT_ERR_PATH_TRAVERSAL: [403, "permission_error"],
  PEFT_ERR_UNKNOWN_MODEL: [404, "not_found_error"],
  PEFT_ERR_UNKNOWN_FILE: [404, "not_found_error"],
  PEFT_ERR_UNKNOWN_JOB: [404, "not_found_error"],
  PEFT_ERR_QUEUE_FULL: [429, "rate_limit_error"],
  PEFT_ERR_SERVER_DRAINING: [503, "service_unavailable_error"],
  PEFT_ERR_ENGINE_CLOSED: [503, "service_unavailable_error"],
  // faults of the runtime, not of the request
  PEFT_ERR_ORT_SESSION: [500, "server_error"],
  PEFT_ERR_EXECUTION_PROVIDER: [500, "server_error"],
  PEFT_ERR_DISPOSED_VALUE: [500, "server_error"],
  PEFT_ERR_GRAPH_BUILD: [500, "server_error"],
};

/** fastify's own errors that a client causes (body too large, bad JSON…), by fastify code. */
const FASTIFY_CODES: Readonly<Record<string, string>> = {
  FST_ERR_CTP_BODY_TOO_LARGE: "body_too_large",
  FST_ERR_CTP_INVALID_MEDIA_TYPE: "unsupported_media_type",
  FST_ERR_CTP_EMPTY_JSON_BODY: "empty_body",
  FST_ERR_CTP_INVALID_JSON_BODY: "invalid_json",
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: "invalid_content_length",
  FST_REQ_FILE_TOO_LARGE: "file_too_large",
  FST_INVALID_MULTIPART_CONTENT_TYPE: "invalid_multipart",
  FST_FILES_LIMIT: "too_many_files",
  FST_PARTS_LIMIT: "too_many_parts",
};

export interface MappedError {
  readonly status: number;
  readonly body: OpenAiErrorBody;
  readonly headers: Readonly<Record<string, string>>;
}

function body(message: string, type: OpenAiErrorType, param: string | null, code: string | null): OpenAiErrorBody {
  return { error: { message, type, param, code } };
}

/** The HTTP answer for an error thrown while serving a request. */
export function mapError(e: unknown): MappedError {
  if (e instanceof PeftError) {
    const [status, type] = BY_CODE[e.code] ?? [400, "invalid_request_error"];
    const param = e instanceof InvalidRequestError || e instanceof ContextLengthError ? e.param : e.code === "PEFT_ERR_UNKNOWN_MODEL" || e.code === "PEFT_ERR_FINETUNE_MODEL" ? "model" : e.code === "PEFT_ERR_TRAINING_FILE" ? "file" : null;
    const headers: Record<string, string> = e instanceof QueueFullError ? { "retry-after": String(e.retryAfterSeconds) } : {};
    return { status, body: body(e.message, type, param, e.code), headers };
  }
  const fe = e as Partial<FastifyError>;
  if (typeof fe.code === "string" && typeof fe.statusCode === "number" && fe.statusCode >= 400 && fe.statusCode < 500) {
    const code = FASTIFY_CODES[fe.code] ?? fe.code;
    return { status: fe.statusCode, body: body(fe.message ?? code, "invalid_request_error", null, code), headers: {} };
  }
  return { status: 500, body: body("internal server error; the server log has the details", "server_error", null, null), headers: {} };
}

/** fastify `setErrorHandler`: logs server faults, answers with the mapped error object. */
export function errorHandler(e: unknown, request: FastifyRequest, reply: FastifyReply): void {
  const m = mapError(e);
  if (m.status >= 500) request.log.error({ err: e }, "request failed");
  else request.log.info({ code: m.body.error.code, status: m.status }, m.body.error.message);
  void reply.code(m.status).headers(m.headers).send(m.body);
}
