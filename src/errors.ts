/**
 * The error catalogue. Every fault a user can cause raises a subclass of `PeftError` with a
 * stable `code` (`PEFT_ERR_*`), the context needed to find the problem (file, key, shape…)
 * and a message that says how to fix it. `docs/errors.md` documents every code; a test keeps
 * the two in step. Add a class here (one per fault) rather than throwing a bare `Error`.
 */
export abstract class PeftError extends Error {
  abstract readonly code: string;
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** A safetensors file is malformed (truncated, bad header, overlapping offsets…). */
export class SafetensorsFormatError extends PeftError {
  readonly code = "PEFT_ERR_SAFETENSORS_FORMAT";
  constructor(readonly file: string, readonly fault: string, options?: { cause?: unknown }) {
    super(`${file}: invalid safetensors file: ${fault}`, options);
  }
}

/** A tensor that must exist is missing from a file or state dict. */
export class MissingTensorError extends PeftError {
  readonly code = "PEFT_ERR_MISSING_TENSOR";
  constructor(readonly file: string, readonly key: string, hint = "") {
    super(`${file}: tensor '${key}' not found${hint ? `; ${hint}` : ""}`);
  }
}

/** A tensor's shape differs from the one the model or graph expects. */
export class ShapeMismatchError extends PeftError {
  readonly code = "PEFT_ERR_SHAPE_MISMATCH";
  constructor(
    readonly key: string,
    readonly expected: readonly (number | string | null)[],
    readonly actual: readonly (number | string | null)[],
    context = "",
  ) {
    super(
      `shape mismatch for '${key}': expected [${expected.join(", ")}], got [${actual.join(", ")}]` +
        (context ? ` (${context})` : ""),
    );
  }
}

/** A configuration file (config.json, adapter_config.json, a run or merge config) is invalid. */
export class ConfigError extends PeftError {
  readonly code = "PEFT_ERR_CONFIG";
  constructor(readonly file: string, readonly path: string, readonly issue: string, options?: { cause?: unknown }) {
    super(`${file}: ${path ? `'${path}': ` : ""}${issue}`, options);
  }
}

/** A configuration option is valid for Python PEFT / transformers but not implemented here. */
export class UnsupportedOptionError extends PeftError {
  readonly code = "PEFT_ERR_UNSUPPORTED_OPTION";
  constructor(readonly file: string, readonly option: string, readonly value: unknown, readonly why = "") {
    super(
      `${file}: option '${option}' = ${JSON.stringify(value)} is not supported by peft-ts` +
        (why ? ` (${why})` : "") +
        "; remove it or set it to its default",
    );
  }
}

/** A graph op has no backward rule (or an input was asked a gradient it cannot have). */
export class NoGradientError extends PeftError {
  readonly code = "PEFT_ERR_NO_GRADIENT";
  constructor(readonly op: string, readonly detail = "") {
    super(`no gradient rule for op '${op}'${detail ? `: ${detail}` : ""}`);
  }
}

/** A graph was built wrongly (incompatible shapes or dtypes, unknown value). */
export class GraphBuildError extends PeftError {
  readonly code = "PEFT_ERR_GRAPH_BUILD";
  constructor(readonly op: string, readonly detail: string) {
    super(`cannot build '${op}': ${detail}`);
  }
}

/** ONNX Runtime failed to create or run a session. */
export class OrtSessionError extends PeftError {
  readonly code = "PEFT_ERR_ORT_SESSION";
  constructor(readonly what: string, options?: { cause?: unknown }) {
    const c = options?.cause;
    super(`onnxruntime: ${what}${c instanceof Error ? `: ${c.message}` : c !== undefined ? `: ${String(c)}` : ""}`, options);
  }
}

/** An execution provider was asked for but is not available in this onnxruntime build or machine. */
export class ExecutionProviderError extends PeftError {
  readonly code = "PEFT_ERR_EXECUTION_PROVIDER";
  constructor(readonly provider: string, readonly detail: string) {
    super(`execution provider '${provider}' is not available: ${detail}`);
  }
}

/** A tensor handed to a writer is inconsistent (data length ≠ numel(shape), wrong typed array for its dtype…). */
export class TensorDataError extends PeftError {
  readonly code = "PEFT_ERR_TENSOR_DATA";
  constructor(readonly key: string, readonly detail: string) {
    super(`tensor '${key}': ${detail}`);
  }
}

/** A file that must exist (adapter_config.json, adapter_model.safetensors, tokenizer.json…) is absent. */
export class MissingFileError extends PeftError {
  readonly code = "PEFT_ERR_MISSING_FILE";
  constructor(readonly file: string, readonly hint = "") {
    super(`${file}: file not found${hint ? `; ${hint}` : ""}`);
  }
}

/** A file-system operation was asked for in a browser bundle (`peft-ts/web`), which has no file system. */
export class NoFileSystemError extends PeftError {
  readonly code = "PEFT_ERR_NO_FILE_SYSTEM";
  constructor(readonly operation: string, readonly file: string) {
    super(`${operation}(${file ? JSON.stringify(file) : ""}): there is no file system in the browser; read from bytes instead (peft-ts/web: parseSafetensors, adapterFromFiles, modelFromFiles, loadUseLiteFromFiles, tokenizerFromJson)`);
  }
}

/** A zip archive (an exported adapter) is malformed or uses a feature not read (encryption, zip64, another compression method). */
export class ZipFormatError extends PeftError {
  readonly code = "PEFT_ERR_ZIP_FORMAT";
  constructor(readonly file: string, readonly fault: string) {
    super(`${file}: cannot read this zip archive: ${fault}`);
  }
}

/** An adapter name is unusable (empty, contains a path separator, '..', NUL, or is reserved). */
export class AdapterNameError extends PeftError {
  readonly code = "PEFT_ERR_ADAPTER_NAME";
  constructor(readonly adapterName: string, readonly reason: string) {
    super(`invalid adapter name ${JSON.stringify(adapterName)}: ${reason}; use a plain name such as "default" or "my_task"`);
  }
}

/** A relative path would escape the folder it must stay in (`..`, absolute path, NUL…). */
export class PathTraversalError extends PeftError {
  readonly code = "PEFT_ERR_PATH_TRAVERSAL";
  constructor(readonly root: string, readonly relPath: string) {
    super(`path ${JSON.stringify(relPath)} escapes ${root}; use a name without '..', separators at the start, or NUL bytes`);
  }
}

/** Tokenisation failed (no padding token when padding is needed, a token with no id and no unk token…). */
export class TokenizerError extends PeftError {
  readonly code = "PEFT_ERR_TOKENIZER";
  constructor(readonly file: string, readonly detail: string) {
    super(`${file}: ${detail}`);
  }
}

/** Why a chat template could not be applied. */
export type ChatTemplateFault = "missing" | "syntax" | "raised" | "render" | "messages" | "options";

/**
 * A chat template could not be applied: the tokenizer has none (or not the named one), its Jinja
 * does not parse, it called `raise_exception(...)` (e.g. roles that do not alternate), it failed
 * while rendering, or the messages/options are malformed.
 */
export class ChatTemplateError extends PeftError {
  readonly code = "PEFT_ERR_CHAT_TEMPLATE";
  constructor(readonly source: string, readonly fault: ChatTemplateFault, readonly detail: string, options?: { cause?: unknown }) {
    super(`${source}: chat template ${fault === "raised" ? "raised an exception" : fault === "syntax" ? "syntax error" : fault === "missing" ? "not found" : fault === "render" ? "failed to render" : `invalid ${fault}`}: ${detail}`, options);
  }
}

/** A dataset file has a bad row (invalid JSON, missing text or label, wrong CSV column count…) or cannot be read. */
export class DatasetError extends PeftError {
  readonly code = "PEFT_ERR_DATASET";
  /** `line` is 1-based; null when the fault concerns the whole file. */
  constructor(readonly file: string, readonly line: number | null, readonly issue: string, options?: { cause?: unknown }) {
    super(`${file}${line !== null ? `:${line}` : ""}: ${issue}`, options);
  }
}

/** A dataset name is neither a built-in dataset nor a path with a supported extension. */
export class UnknownDatasetError extends PeftError {
  readonly code = "PEFT_ERR_UNKNOWN_DATASET";
  constructor(readonly dataset: string, readonly known: readonly string[], readonly extensions: readonly string[]) {
    super(
      `unknown dataset '${dataset}': use one of the built-in datasets (${known.join(", ")}) ` +
        `or a file path ending in ${extensions.join(", ")}`,
    );
  }
}

/** A training checkpoint directory is missing, incomplete or inconsistent. */
export class CheckpointError extends PeftError {
  readonly code = "PEFT_ERR_CHECKPOINT";
  constructor(readonly dir: string, readonly issue: string, options?: { cause?: unknown }) {
    super(`${dir}: invalid training checkpoint: ${issue}`, options);
  }
}

/** A file handle (such as an open `SafetensorsFile`) was used after `close()`. */
export class FileClosedError extends PeftError {
  readonly code = "PEFT_ERR_FILE_CLOSED";
  constructor(readonly file: string) {
    super(`${file}: used after close(); open the file again`);
  }
}

/** A merge method or adapter combination type name is not one peft-ts knows. */
export class UnknownMergeMethodError extends PeftError {
  readonly code = "PEFT_ERR_UNKNOWN_MERGE_METHOD";
  constructor(readonly method: string, readonly known: readonly string[], readonly what = "merge method") {
    super(`unknown ${what} '${method}'; use one of: ${known.join(", ")}`);
  }
}

/** A quantisation scheme or code book option is invalid (block size not allowed, unknown kind, bad code-book parameters). */
export class QuantSchemeError extends PeftError {
  readonly code = "PEFT_ERR_QUANT_SCHEME";
  constructor(readonly scheme: string, readonly option: string, readonly value: unknown, readonly issue: string) {
    super(`quantisation scheme '${scheme}': option '${option}' = ${JSON.stringify(value)} ${issue}`);
  }
}

/** A tensor value cannot be quantised by the chosen code book (such as a negative value for the unsigned dynamic map). */
export class QuantRangeError extends PeftError {
  readonly code = "PEFT_ERR_QUANT_RANGE";
  constructor(readonly key: string, readonly index: number, readonly value: number, readonly issue: string) {
    super(`tensor '${key}': element ${index} = ${value} ${issue}`);
  }
}

/** A tensor holds NaN or ±Infinity where a finite value is required (quantisation, compression). */
export class NonFiniteValueError extends PeftError {
  readonly code = "PEFT_ERR_NON_FINITE";
  constructor(readonly key: string, readonly index: number, readonly value: number, readonly context: string) {
    super(`tensor '${key}': element ${index} is ${value}; ${context} needs finite values (fix or drop the tensor first)`);
  }
}

/** A quantised tensor's parts disagree (code count vs shape, scale count vs blocks, nested state…). */
export class QuantizedTensorError extends PeftError {
  readonly code = "PEFT_ERR_QUANTIZED_TENSOR";
  constructor(readonly key: string, readonly issue: string) {
    super(`quantised tensor '${key}': ${issue}; re-create it with quantize()`);
  }
}

/** A ComPEFT file does not start with the ComPEFT magic bytes. */
export class CompeftMagicError extends PeftError {
  readonly code = "PEFT_ERR_COMPEFT_MAGIC";
  constructor(readonly file: string, readonly found: string) {
    super(`${file}: not a ComPEFT file (magic bytes ${found}); write it with writeCompeftFile()/encodeCompeft()`);
  }
}

/** A ComPEFT file has a format version this build cannot read. */
export class CompeftVersionError extends PeftError {
  readonly code = "PEFT_ERR_COMPEFT_VERSION";
  constructor(readonly file: string, readonly version: number, readonly supported: readonly number[]) {
    super(
      `${file}: ComPEFT format version ${version} is not supported (this build reads version ${supported.join(", ")}); ` +
        "re-encode the file with a matching peft-ts",
    );
  }
}

/** A ComPEFT file ends before the data its header announces. */
export class CompeftTruncatedError extends PeftError {
  readonly code = "PEFT_ERR_COMPEFT_TRUNCATED";
  constructor(readonly file: string, readonly tensor: string | null, readonly offset: number, readonly needed: string) {
    super(
      `${file}: truncated ComPEFT data at byte ${offset}${tensor !== null ? ` (tensor '${tensor}')` : ""}: ` +
        `expected ${needed}; the file is incomplete, copy or write it again`,
    );
  }
}

/** A ComPEFT file's JSON header is not valid JSON or does not have the expected fields. */
export class CompeftHeaderError extends PeftError {
  readonly code = "PEFT_ERR_COMPEFT_HEADER";
  constructor(readonly file: string, readonly path: string, readonly issue: string, options?: { cause?: unknown }) {
    super(`${file}: invalid ComPEFT header${path ? ` at '${path}'` : ""}: ${issue}`, options);
  }
}

/** A ComPEFT tensor's kept-entry count or positions do not fit its shape. */
export class CompeftCountError extends PeftError {
  readonly code = "PEFT_ERR_COMPEFT_COUNT";
  constructor(readonly file: string, readonly tensor: string, readonly issue: string) {
    super(`${file}: tensor '${tensor}': ${issue}; the file is corrupt, re-encode it`);
  }
}

/** A ComPEFT file's binary body is malformed (over-long varint, non-zero padding bits, bytes after the last tensor). */
export class CompeftFormatError extends PeftError {
  readonly code = "PEFT_ERR_COMPEFT_FORMAT";
  constructor(readonly file: string, readonly tensor: string | null, readonly offset: number, readonly issue: string) {
    super(`${file}: malformed ComPEFT data at byte ${offset}${tensor !== null ? ` (tensor '${tensor}')` : ""}: ${issue}`);
  }
}

/** A `peft_type` no registered tuner implements (or a plugin registration that breaks the registry's rules). */
export class UnknownTunerError extends PeftError {
  readonly code = "PEFT_ERR_UNKNOWN_TUNER";
  constructor(readonly peftType: string, readonly known: readonly string[], readonly file = "adapter_config.json") {
    super(`${file}: unknown peft_type '${peftType}'${known.length ? `; peft-ts implements: ${known.join(", ")}` : ""}`);
  }
}

/** An adapter does not fit the base model (no matching module, wrong shape, missing or extra tensors). */
export class AdapterMismatchError extends PeftError {
  readonly code = "PEFT_ERR_ADAPTER_MISMATCH";
  constructor(readonly file: string, readonly key: string, readonly issue: string) {
    super(`${file}: '${key}': ${issue}`);
  }
}

/** An adapter name that is not loaded (or already taken) was used. */
export class AdapterStateError extends PeftError {
  readonly code = "PEFT_ERR_ADAPTER_STATE";
  constructor(readonly adapterName: string, readonly issue: string) {
    super(`adapter '${adapterName}': ${issue}`);
  }
}

/** A path points to a kind of file the command cannot read (e.g. `peft inspect notes.txt`). */
export class UnsupportedFileTypeError extends PeftError {
  readonly code = "PEFT_ERR_UNSUPPORTED_FILE_TYPE";
  constructor(readonly file: string, readonly expected: string) {
    super(`${file}: cannot read this kind of file; expected ${expected}`);
  }
}

/** A tensor of an input file (token ids, attention mask) has the wrong dtype or values, or is not expected there. */
export class InputTensorError extends PeftError {
  readonly code = "PEFT_ERR_INPUT_TENSOR";
  constructor(readonly file: string, readonly key: string, readonly issue: string) {
    super(`${file}: tensor '${key}': ${issue}`);
  }
}

/** A resident value (an output kept in onnxruntime's memory by `runResident`) was used after `dispose()`. */
export class DisposedValueError extends PeftError {
  readonly code = "PEFT_ERR_DISPOSED_VALUE";
  constructor(readonly value: string, readonly use: string) {
    super(`resident value '${value}' was disposed and cannot be ${use}; dispose a value only after its last run, or download() it to keep a host copy`);
  }
}

/** A run or a session option names an output the graph does not have. */
export class UnknownOutputError extends PeftError {
  readonly code = "PEFT_ERR_UNKNOWN_OUTPUT";
  constructor(readonly output: string, readonly known: readonly string[], readonly where: string) {
    super(`${where}: the graph has no output '${output}' (outputs: ${known.join(", ") || "none"}); use one of its output names`);
  }
}

/** A request names a model (base or adapter) the server does not serve. */
export class UnknownModelError extends PeftError {
  readonly code = "PEFT_ERR_UNKNOWN_MODEL";
  constructor(readonly model: string, readonly known: readonly string[]) {
    super(`model ${JSON.stringify(model)} does not exist; served models: ${known.join(", ") || "none"} (GET /v1/models lists them, POST /v1/load_lora_adapter adds one)`);
  }
}

/** An HTTP request body is invalid: a missing or mistyped field, a value out of range. */
export class InvalidRequestError extends PeftError {
  readonly code = "PEFT_ERR_INVALID_REQUEST";
  /** `param` is the body field at fault (dotted path), or null for the whole body. */
  constructor(readonly param: string | null, readonly issue: string) {
    super(`${param ? `'${param}': ` : ""}${issue}`);
  }
}

/** A request to a server started with `--api-key` has no or a wrong `Authorization: Bearer` key. */
export class AuthenticationError extends PeftError {
  readonly code = "PEFT_ERR_AUTHENTICATION";
  constructor(readonly reason: string) {
    super(`${reason}; send the server's key as 'Authorization: Bearer <key>' (the openai client's apiKey)`);
  }
}

/** The server's request queue is full; retry after `retryAfterSeconds`. */
export class QueueFullError extends PeftError {
  readonly code = "PEFT_ERR_QUEUE_FULL";
  constructor(readonly limit: number, readonly retryAfterSeconds: number) {
    super(`the server is busy (${limit} requests running or waiting); retry after ${retryAfterSeconds} s`);
  }
}

/** The server is shutting down (SIGTERM): it finishes running requests and refuses new ones. */
export class ServerDrainingError extends PeftError {
  readonly code = "PEFT_ERR_SERVER_DRAINING";
  constructor() {
    super("the server is shutting down and accepts no new requests; retry on another instance or after the restart");
  }
}

/** An adapter path given to the server resolves outside `--adapter-root` (or runtime loading is off). */
export class AdapterPathError extends PeftError {
  readonly code = "PEFT_ERR_ADAPTER_PATH";
  constructor(readonly path: string, readonly root: string | null, readonly reason: string) {
    super(`adapter path ${JSON.stringify(path)}: ${reason}`);
  }
}

/** An endpoint is asked of a model that cannot do it (embeddings of a causal LM, classify without a head…). */
export class UnsupportedTaskError extends PeftError {
  readonly code = "PEFT_ERR_UNSUPPORTED_TASK";
  constructor(readonly model: string, readonly endpoint: string, readonly reason: string) {
    super(`model ${JSON.stringify(model)} does not support ${endpoint}: ${reason}`);
  }
}

/** A request was cancelled (its client disconnected) before it finished. */
export class RequestAbortedError extends PeftError {
  readonly code = "PEFT_ERR_REQUEST_ABORTED";
  constructor(readonly what: string) {
    super(`${what} was cancelled before it finished (the client disconnected)`);
  }
}

/** A generation request has no prompt tokens. */
export class EmptyPromptError extends PeftError {
  readonly code = "PEFT_ERR_EMPTY_PROMPT";
  constructor() {
    super("the prompt is empty; generation needs at least one prompt token (add a BOS token or some text)");
  }
}

/**
 * A prompt (with an adapter's virtual tokens) does not fit the model's context; on a server, a
 * request's prompt and `max_tokens` together (`request`: the field at fault and the new tokens asked).
 */
export class ContextLengthError extends PeftError {
  readonly code = "PEFT_ERR_CONTEXT_LENGTH";
  /** The request field at fault (`prompt`, `messages`, `max_tokens`), or null outside a server. */
  readonly param: string | null;
  constructor(readonly promptTokens: number, readonly maxContext: number, detail = "", request?: { readonly param: string; readonly newTokens: number }) {
    super(
      request === undefined
        ? `the prompt has ${promptTokens} tokens${detail}, more than the context of ${maxContext}; shorten the prompt`
        : request.newTokens === 0 || promptTokens >= maxContext
          ? `this model's maximum context length is ${maxContext} tokens, and the prompt has ${promptTokens}; shorten the prompt`
          : `this model's maximum context length is ${maxContext} tokens; the prompt has ${promptTokens} and max_tokens asks ${request.newTokens} more (${promptTokens + request.newTokens}); lower max_tokens to ${maxContext - promptTokens} or shorten the prompt`,
    );
    this.param = request?.param ?? null;
  }
}

/** A prompt token id is not an id of the model's vocabulary. */
export class PromptTokenError extends PeftError {
  readonly code = "PEFT_ERR_PROMPT_TOKEN";
  constructor(readonly index: number, readonly tokenId: unknown, readonly vocabSize: number) {
    super(`prompt token ${index} is ${JSON.stringify(tokenId)}, not an id in [0, ${vocabSize}); encode the prompt with the model's own tokenizer`);
  }
}

/** A generation request names an adapter that is not loaded. */
export class UnknownAdapterError extends PeftError {
  readonly code = "PEFT_ERR_UNKNOWN_ADAPTER";
  constructor(readonly adapterName: string, readonly loaded: readonly string[]) {
    super(`adapter '${adapterName}' is not loaded (loaded: ${loaded.join(", ") || "none"}); load it first or omit it to use the base model`);
  }
}

/** A sampling parameter of a generation request is out of range. */
export class SamplingParamsError extends PeftError {
  readonly code = "PEFT_ERR_SAMPLING_PARAMS";
  constructor(readonly field: string, readonly value: unknown, readonly issue: string) {
    super(`sampling parameter '${field}' = ${JSON.stringify(value)}: ${issue}`);
  }
}

/** A request reached a generation engine that is draining or closed. */
export class EngineClosedError extends PeftError {
  readonly code = "PEFT_ERR_ENGINE_CLOSED";
  constructor(readonly state: "draining" | "closed") {
    super(`the generation engine is ${state} and takes no new requests; create a new engine`);
  }
}

/** A command's output path is one of its inputs, or lies inside one, or contains one: writing would destroy the input. */
export class OutputIsInputError extends PeftError {
  readonly code = "PEFT_ERR_OUTPUT_IS_INPUT";
  constructor(
    readonly out: string,
    readonly input: string,
    readonly relation: "is" | "contains" | "is inside",
    readonly option = "--out",
  ) {
    super(`${option} ${out} ${relation} the input ${input}; writing there would destroy the input (even with --overwrite); choose another ${option}`);
  }
}

/** A command's output already exists and `--overwrite` (`overwrite: true`) was not given. */
export class OutputExistsError extends PeftError {
  readonly code = "PEFT_ERR_OUTPUT_EXISTS";
  constructor(readonly out: string, readonly detail = "already exists", readonly option = "--out") {
    super(`${option} ${out} ${detail}; pass --overwrite to replace it, or choose another ${option}`);
  }
}

/** The operating system refused a file operation (no such file, a file where a folder is needed, read-only, disk full, permission…). */
export class FileSystemError extends PeftError {
  readonly code = "PEFT_ERR_FILESYSTEM";
  constructor(readonly file: string, readonly syscall: string, readonly errno: string, readonly hint: string, options?: { cause?: unknown }) {
    super(`${file}: cannot ${syscall}: ${hint} (${errno})`, options);
  }
}

/** A public function or constructor was called with an argument of the wrong type, shape or range. */
export class ArgumentError extends PeftError {
  readonly code = "PEFT_ERR_ARGUMENT";
  constructor(readonly fn: string, readonly argument: string, readonly expected: string, readonly got: string) {
    super(`${fn}: argument '${argument}' must be ${expected}; got ${got}`);
  }
}

/** A ComPEFT file's checksum does not match its bytes (a bit flip in storage or transfer). */
export class CompeftChecksumError extends PeftError {
  readonly code = "PEFT_ERR_COMPEFT_CHECKSUM";
  constructor(readonly file: string, readonly expected: number, readonly actual: number) {
    super(
      `${file}: ComPEFT checksum mismatch (stored crc32 ${expected.toString(16).padStart(8, "0")}, computed ${actual.toString(16).padStart(8, "0")}); ` +
        "the file is corrupt: copy or write it again",
    );
  }
}

/** A `--queue` address is not a Redis URL (`redis://[user:password@]host[:port][/db]`). */
export class QueueUrlError extends PeftError {
  readonly code = "PEFT_ERR_QUEUE_URL";
  constructor(readonly url: string, readonly issue: string) {
    super(`--queue ${JSON.stringify(url)}: ${issue}; give a Redis URL such as redis://127.0.0.1:6379 (redis://user:password@host:port/db)`);
  }
}

/** A queued job names a kind that no worker (or this client) knows. */
export class UnknownJobKindError extends PeftError {
  readonly code = "PEFT_ERR_UNKNOWN_JOB_KIND";
  constructor(readonly kind: string, readonly known: readonly string[]) {
    super(`unknown job kind '${kind}'; known kinds: ${known.join(", ") || "none"}`);
  }
}

/** A queued job failed on the worker that ran it (`remoteCode`: the worker's PEFT_ERR_* code when it had one). */
export class JobFailedError extends PeftError {
  readonly code = "PEFT_ERR_JOB_FAILED";
  constructor(readonly jobId: string, readonly reason: string, readonly remoteCode: string | null = null) {
    super(`job ${jobId} failed: ${reason}`);
  }
}

/** Waiting for a queued job (or for the queue's Redis) took longer than the caller allowed. */
export class QueueTimeoutError extends PeftError {
  readonly code = "PEFT_ERR_QUEUE_TIMEOUT";
  constructor(readonly what: string, readonly ms: number) {
    super(`${what}: no answer within ${ms} ms; check that Redis is reachable and that a 'peft worker' is running on the queue`);
  }
}

/** A fine-tuning file (`POST /v1/files`, purpose `fine-tune`) is not valid JSONL of a training format; `line` is 1-based (0: the file as a whole). */
export class TrainingFileError extends PeftError {
  readonly code = "PEFT_ERR_TRAINING_FILE";
  constructor(readonly file: string, readonly line: number, readonly issue: string) {
    super(`${file}${line > 0 ? `, line ${line}` : ""}: ${issue}`);
  }
}

/** A fine-tuning job names a base model the server cannot fine-tune (not the served model, or a data format the model's task cannot train on). */
export class FineTuneModelError extends PeftError {
  readonly code = "PEFT_ERR_FINETUNE_MODEL";
  constructor(readonly model: string, readonly issue: string) {
    super(`model ${JSON.stringify(model)} cannot be fine-tuned here: ${issue}`);
  }
}

/** A file id (`file-…`) that the server's file store does not hold. HTTP 404. */
export class UnknownFileError extends PeftError {
  readonly code = "PEFT_ERR_UNKNOWN_FILE";
  constructor(readonly fileId: string) {
    super(`no file with id ${JSON.stringify(fileId)}; GET /v1/files lists the uploaded files`);
  }
}

/** A fine-tuning job id (`ftjob-…`) that the server does not know. HTTP 404. */
export class UnknownJobError extends PeftError {
  readonly code = "PEFT_ERR_UNKNOWN_JOB";
  constructor(readonly jobId: string) {
    super(`no fine-tuning job with id ${JSON.stringify(jobId)}; GET /v1/fine_tuning/jobs lists the jobs`);
  }
}

/** A fine-tuning job cannot do what was asked in its state (cancel a finished job). */
export class JobStateError extends PeftError {
  readonly code = "PEFT_ERR_JOB_STATE";
  constructor(readonly jobId: string, readonly status: string, readonly issue: string) {
    super(`fine-tuning job ${jobId} is ${status}: ${issue}`);
  }
}

/** A server the CLI talks to (`peft jobs --url …`) answered with an error, or could not be reached. */
export class RemoteServerError extends PeftError {
  readonly code = "PEFT_ERR_REMOTE_SERVER";
  constructor(readonly url: string, readonly status: number | null, readonly remoteCode: string | null, readonly detail: string) {
    super(`${url}: ${status === null ? "cannot connect" : `HTTP ${status}`}${remoteCode ? ` [${remoteCode}]` : ""}: ${detail}`);
  }
}
