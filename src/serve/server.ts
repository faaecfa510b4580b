/**
 * `createServer(options)`: one base model and its adapters behind an OpenAI-compatible HTTP API
 * (fastify). The command line (`peft serve`) and the tests both start servers through it.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Fastify, { type FastifyInstance, type FastifyServerOptions } from "fastify";
import { ConfigError, ServerDrainingError } from "../errors.js";
import { DEFAULT_ITL_SLO_MS } from "./defaults.js";
import { GenerationEngine, type SamplingParams } from "../generate/index.js";
import { loadGenerationConfig } from "../io/generation-config.js";
import { Admission } from "./admission.js";
import { realRoot } from "./adapter-paths.js";
import { AdapterRegistry } from "./adapters.js";
import { bearerChecker } from "./auth.js";
import type { ServeContext, ServeLimits } from "./context.js";
import { errorHandler } from "./http-errors.js";
import { ServeMetrics } from "./metrics.js";
import { type ServedModel, openServedModel, peftAdapterHost } from "./model-host.js";
import { EncoderService } from "./encoder.js";
import { FineTuneService, type JobExecutor, type JobSink } from "../runs/finetune/index.js";
import { USE_LITE_MODEL_ID } from "../runs/model-source.js";
import { fileRoutes } from "./routes/files.js";
import { fineTuningRoutes } from "./routes/fine-tuning.js";
import { adapterRoutes } from "./routes/adapters.js";
import { chatRoutes } from "./routes/chat.js";
import { completionRoutes } from "./routes/completions.js";
import { encoderRoutes } from "./routes/encoder.js";
import { modelsRoutes } from "./routes/models.js";
import { playgroundRoutes } from "./routes/playground.js";
import { systemRoutes } from "./routes/system.js";
import { trainAppRoutes } from "./routes/train-app.js";

export interface ServeAdapterSpec {
  readonly name: string;
  readonly path: string;
  readonly pinned?: boolean;
}

export interface ServeOptions {
  /** Model folder; default (undefined or `use-lite`): the embedded USE-lite encoder. */
  readonly model?: string;
  /** Name requests use for the base model (default: the folder name, or `use-lite`). */
  readonly servedModelName?: string;
  /** Adapters known from the start (read on first use). */
  readonly adapters?: readonly ServeAdapterSpec[];
  /** Folder run-time loads are confined to; also serves its sub-folders by name on first use. */
  readonly adapterRoot?: string;
  readonly host?: string;
  /** 0 picks a free port. Default 8000. */
  readonly port?: number;
  /** Require `Authorization: Bearer <apiKey>` on the API routes. */
  readonly apiKey?: string;
  /** Distinct adapters in the running batch (default 8). */
  readonly maxLoras?: number;
  /** Adapters resident in host memory (default 4 × maxLoras). */
  readonly maxCpuLoras?: number;
  /** Requests running at once (default 16). */
  readonly maxConcurrent?: number;
  /** Requests waiting beyond those (default 64); one more gets 429. */
  readonly maxQueue?: number;
  /** Largest request body in bytes (default 4 MiB); a larger one gets 413. */
  readonly bodyLimit?: number;
  /**
   * Longest context of a request, prompt + `max_tokens` (vLLM's `--max-model-len`; default and at
   * most the model's positions, `n_positions` / `max_position_embeddings`). Longer requests get a
   * 400 `PEFT_ERR_CONTEXT_LENGTH`; the engine's KV cache is sized to it.
   */
  readonly maxModelLen?: number;
  /** Largest `max_tokens` (default 4096, capped by the context). */
  readonly maxTokens?: number;
  /** Longest prompt in tokens (default: the model's context). */
  readonly maxPromptTokens?: number;
  /** Most inputs per embeddings / classify request (default 2048). */
  readonly maxInputs?: number;
  /** onnxruntime intra-op threads of the model's sessions (default: onnxruntime's choice). */
  readonly threads?: number;
  /** The built browser app served at `/train/` (default: the package's `dist-web/`, written by `npm run build:web`). */
  readonly webApp?: string;
  /**
   * Folder of the fine-tuning state: uploaded files, jobs (events, checkpoints) and the adapters
   * they made. A restarted server resumes the jobs it finds there. Default: a temporary folder
   * removed on close.
   */
  readonly stateDir?: string;
  /** Largest `POST /v1/files` upload in bytes (default 512 MiB). */
  readonly maxFileBytes?: number;
  /** Where fine-tuning jobs run (default: in this process, one at a time). */
  readonly fineTuneExecutor?: (sink: JobSink) => JobExecutor;
  /**
   * Inter-token latency target (ms) of generation requests while fine-tuning jobs are co-served:
   * training runs only in the slack under it (default 100; docs/coserving.md).
   */
  readonly itlSloMs?: number;
  /** fastify's pino logger options; default: off. */
  readonly logger?: FastifyServerOptions["logger"];
}

export interface PeftServer {
  readonly app: FastifyInstance;
  readonly context: ServeContext;
  /** The fine-tuning files and jobs (`/v1/files`, `/v1/fine_tuning/jobs`). */
  readonly fineTuning: FineTuneService;
  /** Binds the port; resolves with the base URL (`http://host:port`). */
  listen(): Promise<string>;
  /** The URL once listening. */
  readonly url: string;
  /**
   * Graceful stop: new requests get 503, running and queued ones finish, then the socket closes.
   * Safe to call twice.
   */
  close(): Promise<void>;
}

export { DEFAULT_ITL_SLO_MS };

/** Routes anyone may call without the API key (health checks, scrapes, the playground page). */
const OPEN_ROUTES = ["/health", "/metrics"];

function isOpen(url: string): boolean {
  const path = url.split("?")[0]!;
  return OPEN_ROUTES.includes(path) || !(path.startsWith("/v1/") || path === "/classify" || path.startsWith("/classify?"));
}

/** The generation engine of a causal LM: generation_config.json defaults, one pool slot per running adapter. */
function openEngine(model: ServedModel, options: ServeOptions, maxLoras: number): GenerationEngine {
  const gc = loadGenerationConfig(model.root);
  const defaults: Partial<SamplingParams> = {};
  if (gc?.maxNewTokens !== undefined) defaults.maxNewTokens = gc.maxNewTokens;
  if (gc?.doSample !== undefined) defaults.doSample = gc.doSample;
  if (gc?.temperature !== undefined) defaults.temperature = gc.temperature;
  if (gc?.topK !== undefined) defaults.topK = gc.topK;
  if (gc?.topP !== undefined) defaults.topP = gc.topP;
  if (gc?.minP !== undefined) defaults.minP = gc.minP;
  if (gc?.repetitionPenalty !== undefined) defaults.repetitionPenalty = gc.repetitionPenalty;
  const tok = model.tokenizer?.kind === "hf" ? model.tokenizer.tok : null;
  return new GenerationEngine(model.peft, {
    ...(tok ? { tokenizer: tok } : {}),
    maxSlots: options.maxConcurrent ?? 16,
    maxContext: model.maxPositions,
    maxAdapters: maxLoras,
    sessionOptions: model.sessionOptions,
    generationDefaults: defaults,
    ...(gc?.eosTokenId !== undefined ? { eosTokenIds: gc.eosTokenId } : {}),
  });
}

/** Opens the model and builds the app (not yet listening). */
export async function createServer(options: ServeOptions = {}): Promise<PeftServer> {
  const itlSloMs = options.itlSloMs ?? DEFAULT_ITL_SLO_MS;
  if (!(Number.isFinite(itlSloMs) && itlSloMs > 0)) throw new ConfigError("serve options", "itlSloMs", `must be a positive number of milliseconds, got ${itlSloMs}`);
  const opened: ServedModel = openServedModel(options.model, options.servedModelName, options.threads !== undefined ? { threads: options.threads } : {});
  const maxModelLen = options.maxModelLen ?? opened.maxPositions;
  if (!Number.isInteger(maxModelLen) || maxModelLen < 1 || maxModelLen > opened.maxPositions) {
    await opened.peft.dispose();
    throw new ConfigError("serve options", "maxModelLen", `--max-model-len ${maxModelLen}: must be a whole number from 1 to the model's ${opened.maxPositions} positions`);
  }
  // every length limit of the server (prompt + max_tokens, encoder truncation, /v1/models) follows the cap
  const model: ServedModel = { ...opened, maxPositions: maxModelLen };
  const metrics = new ServeMetrics();
  const maxLoras = options.maxLoras ?? 8;
  const encoder = model.task === "causal-lm" ? null : new EncoderService(model);
  const adapters = new AdapterRegistry(encoder ?? peftAdapterHost(model.peft), {
    maxLoras,
    maxCpuLoras: options.maxCpuLoras ?? 4 * maxLoras,
    root: options.adapterRoot !== undefined ? realRoot(options.adapterRoot) : null,
    metrics,
  });
  for (const a of options.adapters ?? []) adapters.add(a.name, a.path, a.pinned !== undefined ? { pinned: a.pinned } : {});
  const admission = new Admission({ maxConcurrent: options.maxConcurrent ?? 16, maxQueue: options.maxQueue ?? 64 });
  const limits: ServeLimits = {
    maxModelLen,
    maxTokens: Math.min(options.maxTokens ?? 4096, model.maxPositions),
    maxPromptTokens: Math.min(options.maxPromptTokens ?? model.maxPositions, model.maxPositions),
    maxInputs: options.maxInputs ?? 2048,
  };
  const engine = model.task === "causal-lm" ? openEngine(model, options, maxLoras) : null;
  const ctx: ServeContext = { model, adapters, admission, metrics, limits, itlSloMs, trainingGate: () => engine?.trainingGate({ itlSloMs }) ?? null };
  metrics.bind({
    queue: () => ({ running: admission.runningCount, waiting: admission.waitingCount }),
    adaptersRunning: () => adapters.runningCount,
    ...(engine ? { engine: () => engine.stats() } : {}),
  });

  const ownsState = options.stateDir === undefined;
  const stateDir = options.stateDir ?? mkdtempSync(join(tmpdir(), "peft-serve-state-"));
  const hfTok = model.tokenizer?.kind === "hf" ? model.tokenizer.tok : null;
  const fineTuning = new FineTuneService({
    stateDir,
    base: {
      id: model.id,
      base: options.model === undefined || options.model === USE_LITE_MODEL_ID ? USE_LITE_MODEL_ID : model.root,
      task: model.task,
      hasTokenizer: model.tokenizer !== null,
      hasChatTemplate: hfTok !== null && hfTok.chatTemplate !== null,
    },
    // co-served: local jobs train between the engine's decode iterations, under --itl-slo-ms
    local: { session: model.sessionOptions, ...(model.task === "causal-lm" ? { baseModel: model.loaded } : {}), ...(engine ? { gate: engine.trainingGate({ itlSloMs }) } : {}) },
    ...(options.fineTuneExecutor ? { executor: options.fineTuneExecutor } : {}),
    onSucceeded: (job, dir) => {
      // servable at once under its fine-tuned model name
      if (job.fine_tuned_model && !adapters.has(job.fine_tuned_model)) adapters.add(job.fine_tuned_model, dir);
    },
  });

  const app = Fastify({ logger: options.logger ?? false, bodyLimit: options.bodyLimit ?? 4 * 1024 * 1024, forceCloseConnections: "idle" });
  let draining = false;
  const checkKey = options.apiKey !== undefined ? bearerChecker(options.apiKey) : null;
  app.setErrorHandler(errorHandler);
  app.setNotFoundHandler(async (request, reply) => {
    const body = { error: { message: `no route ${request.method} ${request.url.split("?")[0]}; docs/serving.md lists the endpoints`, type: "not_found_error", param: null, code: "route_not_found" } };
    return await reply.code(404).send(body);
  });
  app.addHook("onRequest", async (request) => {
    if (isOpen(request.url)) return;
    if (draining) throw new ServerDrainingError();
    checkKey?.(request.headers.authorization);
  });
  app.addHook("onResponse", async (request, reply) => {
    const route = request.routeOptions.url ?? "unmatched";
    metrics.requests.inc({ route, method: request.method, status: String(reply.statusCode) });
    metrics.latency.observe({ route }, reply.elapsedTime / 1000);
  });
  const started = Math.floor(Date.now() / 1000);
  systemRoutes(app, ctx, { draining: () => draining });
  modelsRoutes(app, ctx, started);
  adapterRoutes(app, ctx);
  encoderRoutes(app, ctx, encoder);
  completionRoutes(app, ctx, engine);
  chatRoutes(app, ctx, engine);
  await fileRoutes(app, fineTuning, options.maxFileBytes ?? 512 * 1024 * 1024);
  fineTuningRoutes(app, fineTuning);
  await playgroundRoutes(app);
  await trainAppRoutes(app, options.webApp);
  fineTuning.start();

  let url = "";
  let closing: Promise<void> | null = null;
  return {
    app,
    context: ctx,
    fineTuning,
    get url() {
      return url;
    },
    async listen() {
      const addr = await app.listen({ host: options.host ?? "127.0.0.1", port: options.port ?? 8000 });
      url = addr;
      return addr;
    },
    close() {
      closing ??= (async () => {
        draining = true;
        await admission.drain();
        await fineTuning.close();
        await engine?.close();
        await app.close();
        await model.peft.dispose();
        await encoder?.dispose();
        if (ownsState) rmSync(stateDir, { recursive: true, force: true });
      })();
      return closing;
    },
  };
}


