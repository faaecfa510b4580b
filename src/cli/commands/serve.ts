/**
 * `peft serve`: an OpenAI-compatible HTTP server for one base model and many adapters (vLLM's
 * adapter endpoints, Prometheus metrics, a playground page). See docs/serving.md.
 */
import { type Command, InvalidArgumentError } from "commander";
import { ConfigError } from "../../errors.js";
import { DEFAULT_ITL_SLO_MS } from "../../serve/defaults.js";
import type { ServeAdapterSpec } from "../../serve/server.js";
import type { JobSink } from "../../runs/finetune/index.js";
import type { CliContext } from "../context.js";
import { parseNonNegativeInt, parsePositiveInt, parsePositiveNumber } from "../train/options.js";

interface RawServeOptions {
  model?: string;
  servedModelName?: string;
  adapter: ServeAdapterSpec[];
  pin: string[];
  adapterRoot?: string;
  host: string;
  port: number;
  apiKey?: string;
  maxLoras: number;
  maxCpuLoras?: number;
  maxConcurrent: number;
  maxQueue: number;
  maxTokens: number;
  maxModelLen?: number;
  bodyLimit: number;
  threads?: number;
  state?: string;
  queue?: string;
  maxFileBytes: number;
  itlSloMs: number;
  quiet?: boolean;
}

function collectAdapter(value: string, prev: ServeAdapterSpec[]): ServeAdapterSpec[] {
  const eq = value.indexOf("=");
  if (eq <= 0 || eq === value.length - 1) throw new InvalidArgumentError("expected name=DIR (e.g. --adapter sql=adapters/sql).");
  return [...prev, { name: value.slice(0, eq), path: value.slice(eq + 1) }];
}

const collect = (value: string, prev: string[]): string[] => [...prev, value];

export function register(program: Command, ctx: CliContext): void {
  program
    .command("serve")
    .description("serve a base model and its adapters over an OpenAI-compatible HTTP API (completions, chat, embeddings, classify, vLLM adapter loading, /metrics)")
    .option("--model <dir>", "model folder (config.json + model.safetensors [+ tokenizer.json]); default: the embedded USE-lite sentence encoder")
    .option("--served-model-name <name>", "name of the base model in requests (default: the folder name, or use-lite)")
    .option("--adapter <name=dir>", "an adapter folder served as model <name> (repeatable)", collectAdapter, [])
    .option("--pin <name>", "keep this --adapter in memory, never evicted (repeatable)", collect, [])
    .option("--adapter-root <dir>", "folder run-time loads (POST /v1/load_lora_adapter) are confined to; its sub-folders are served by name on first use")
    .option("--host <host>", "interface to listen on", "127.0.0.1")
    .option("--port <port>", "port (0: any free port)", parseNonNegativeInt, 8000)
    .option("--api-key <key>", "require 'Authorization: Bearer <key>' on the API routes (default: $PEFT_API_KEY, else none)")
    .option("--max-loras <n>", "distinct adapters in the running batch", parsePositiveInt, 8)
    .option("--max-cpu-loras <n>", "adapters kept in host memory, least recently used evicted (default 4 × --max-loras)", parsePositiveInt)
    .option("--max-concurrent <n>", "requests running at once", parsePositiveInt, 16)
    .option("--max-queue <n>", "requests waiting beyond those; one more gets 429", parseNonNegativeInt, 64)
    .option("--max-tokens <n>", "largest max_tokens a request may ask", parsePositiveInt, 4096)
    .option("--max-model-len <n>", "longest context of a request, prompt + max_tokens (default and at most the model's positions); longer requests get 400 PEFT_ERR_CONTEXT_LENGTH", parsePositiveInt)
    .option("--body-limit <bytes>", "largest request body", parsePositiveInt, 4 * 1024 * 1024)
    .option("--threads <n>", "onnxruntime intra-op threads (default: onnxruntime's choice)", parsePositiveInt)
    .option("--state <dir>", "folder of the fine-tuning state (uploaded files, jobs, checkpoints, fine-tuned adapters); a restarted server resumes its jobs (default: a temporary folder)")
    .option("--max-file-bytes <bytes>", "largest POST /v1/files upload", parsePositiveInt, 512 * 1024 * 1024)
    .option("--itl-slo-ms <ms>", "inter-token latency target of generation while fine-tuning jobs are co-served: training runs only in the slack under it", parsePositiveNumber, DEFAULT_ITL_SLO_MS)
    .option("--queue <url>", "run fine-tuning jobs on 'peft worker's of this Redis/BullMQ queue instead of in the server (needs a --state every worker sees)")
    .option("--quiet", "no request log (pino JSON lines on stderr)")
    .action(async (o: RawServeOptions) => {
      const pins = new Set(o.pin);
      for (const p of pins) if (!o.adapter.some((a) => a.name === p)) throw new ConfigError("peft serve", "--pin", `--pin ${p}: no --adapter of that name; pin one of the --adapter names`);
      const apiKey = o.apiKey ?? process.env.PEFT_API_KEY;
      if (o.queue !== undefined && o.state === undefined) throw new ConfigError("peft serve", "--queue", "needs --state DIR, a folder the workers see too (uploaded files, checkpoints and fine-tuned adapters live there)");
      // BullMQ is loaded only with --queue
      const queue = o.queue !== undefined ? new (await import("../../queue/client.js")).JobQueue(o.queue) : null;
      const QueueExecutor = queue ? (await import("../../queue/finetune-kind.js")).QueueExecutor : null;
      if (queue) await queue.ready().catch(async (e: unknown) => {
        await queue.close();
        throw e;
      });
      const { createServer } = await import("../../serve/server.js");
      const server = await createServer({
        ...(o.model !== undefined ? { model: o.model } : {}),
        ...(o.servedModelName !== undefined ? { servedModelName: o.servedModelName } : {}),
        adapters: o.adapter.map((a) => ({ ...a, pinned: pins.has(a.name) })),
        ...(o.adapterRoot !== undefined ? { adapterRoot: o.adapterRoot } : {}),
        host: o.host,
        port: o.port,
        ...(apiKey ? { apiKey } : {}),
        maxLoras: o.maxLoras,
        ...(o.maxCpuLoras !== undefined ? { maxCpuLoras: o.maxCpuLoras } : {}),
        maxConcurrent: o.maxConcurrent,
        maxQueue: o.maxQueue,
        maxTokens: o.maxTokens,
        ...(o.maxModelLen !== undefined ? { maxModelLen: o.maxModelLen } : {}),
        bodyLimit: o.bodyLimit,
        ...(o.threads !== undefined ? { threads: o.threads } : {}),
        ...(o.state !== undefined ? { stateDir: o.state } : {}),
        ...(queue && QueueExecutor ? { fineTuneExecutor: (sink: JobSink) => new QueueExecutor(sink, queue, { onError: (e) => ctx.err(`peft serve: queue: ${e instanceof Error ? e.message : String(e)}`) }) } : {}),
        maxFileBytes: o.maxFileBytes,
        itlSloMs: o.itlSloMs,
        logger: o.quiet ? false : { level: "info", stream: { write: (line: string) => ctx.io.stderr(line) } },
      }).catch(async (e: unknown) => {
        await queue?.close();
        throw e;
      });
      const url = await server.listen();
      const m = server.context.model;
      ctx.out(`peft serve: ${m.id} (${m.task}${m.tokenizer ? "" : ", token-id prompts only"}) with ${server.context.adapters.names().length} adapter(s) on ${url}`);
      await new Promise<void>((done) => {
        const stop = (signal: string) => {
          ctx.out(`peft serve: ${signal}: finishing running requests, refusing new ones`);
          process.off("SIGTERM", onTerm);
          process.off("SIGINT", onInt);
          void server.close().finally(() => queue?.close()).then(
            () => {
              ctx.out("peft serve: stopped");
              done();
            },
            (e: unknown) => {
              ctx.err(`peft serve: error while stopping: ${e instanceof Error ? e.message : String(e)}`);
              done();
            },
          );
        };
        const onTerm = () => stop("SIGTERM");
        const onInt = () => stop("SIGINT");
        process.on("SIGTERM", onTerm);
        process.on("SIGINT", onInt);
      });
    });
}
