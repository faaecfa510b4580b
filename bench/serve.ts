/**
 * `npm run bench -- serve`: a bounded load test of `peft serve` on loopback with autocannon. The
 * server runs as its own process (`bin/peft.js serve`) on a random GPT-2 (default L4 d256, vocab
 * 8192) written to a temp folder with N random LoRA adapters (default 16) under --adapter-root.
 * Each variant drives `POST /v1/completions` (token-id prompt, greedy, `ignore_eos`, a fixed
 * number of new tokens) with C connections for D seconds:
 * - `adapters`: request i names adapter i mod N (every batch mixes adapters);
 * - `base`: every request on the base model (the cost of one merged adapter: same FLOPs).
 * Reported per variant and connection count: requests/s, generated tokens/s, latency p50/p99,
 * status counts (zero 5xx expected), errors/timeouts; the server's peak RSS (sampled from
 * /metrics) and the ratio adapters ÷ base.
 */
import { spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { cpus, tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { type Command, InvalidArgumentError } from "commander";
import { saveSafetensors } from "../src/io/safetensors.js";
import { PeftModel } from "../src/peft/peft-model.js";
import type { Tensor } from "../src/tensor.js";
import { packageRoot } from "../src/util/paths.js";
import { benchEnvironment, emitResult, positiveInt, progress } from "./env.js";
import { type Gpt2Shape, gpt2ConfigJson, randomGpt2 } from "./models.js";

export const SERVE_SHAPE: Gpt2Shape = { layers: 4, hidden: 256, heads: 4, vocab: 8192, positions: 256 };

/** The part of autocannon's API this bench uses (the package ships no types). */
interface AutocannonResult {
  readonly requests: { readonly average: number; readonly total: number };
  readonly latency: { readonly p50: number; readonly p99: number; readonly average: number; readonly max: number };
  readonly statusCodeStats: Record<string, { count: number }>;
  readonly errors: number;
  readonly timeouts: number;
  readonly non2xx: number;
  readonly duration: number;
}
interface AutocannonRequest {
  readonly method: string;
  readonly path: string;
  readonly headers: Record<string, string>;
  setupRequest(req: { body?: string }): { body: string };
}
type Autocannon = (opts: { url: string; connections: number; duration: number; requests: AutocannonRequest[]; timeout: number }) => Promise<AutocannonResult>;

export interface ServeBenchOptions {
  readonly shape?: Gpt2Shape;
  readonly adapters?: number;
  readonly connections?: readonly number[];
  readonly duration?: number;
  readonly promptTokens?: number;
  readonly maxTokens?: number;
  readonly onProgress?: (msg: string) => void;
}

export interface ServeVariantResult {
  readonly variant: "adapters" | "base";
  readonly connections: number;
  readonly requestsPerSecond: number;
  readonly tokensPerSecond: number;
  readonly latencyP50Ms: number;
  readonly latencyP99Ms: number;
  readonly completed: number;
  readonly status: Record<string, number>;
  readonly status5xx: number;
  readonly errors: number;
  readonly timeouts: number;
}

/** Writes the model folder and N adapter folders; returns their paths. */
function writeFixtures(dir: string, shape: Gpt2Shape, adapters: number): { model: string; root: string } {
  const model = join(dir, "model");
  const root = join(dir, "adapters");
  mkdirSync(model, { recursive: true });
  const m = randomGpt2(shape);
  writeFileSync(join(model, "config.json"), JSON.stringify(gpt2ConfigJson(shape)));
  const tensors = new Map<string, Tensor>(m.weights.keys().filter((k) => k !== "lm_head.weight").map((k) => [k, m.weights.get(k)]));
  saveSafetensors(join(model, "model.safetensors"), tensors);
  for (let i = 0; i < adapters; i++) {
    const pm = PeftModel.create(m, { peft_type: "LORA", r: 8, lora_alpha: 16, target_modules: ["c_attn", "c_proj"], fan_in_fan_out: true, init_lora_weights: false }, "default", { seed: i + 1 });
    pm.savePretrained(join(root, `a${i}`));
  }
  return { model, root };
}

async function startServer(model: string, root: string, adapters: number): Promise<{ url: string; pid: number; stop(): Promise<void> }> {
  const args = [join(packageRoot(), "bin", "peft.js"), "serve", "--model", model, "--adapter-root", root, "--port", "0", "--quiet", "--max-loras", String(adapters), "--max-concurrent", "64", "--max-queue", "512"];
  const child = spawn(process.execPath, args, { stdio: ["ignore", "pipe", "inherit"] });
  let out = "";
  const url = await new Promise<string>((resolve, reject) => {
    child.stdout.on("data", (d: Buffer) => {
      out += d.toString();
      const m = /on (http:\/\/[\d.]+:\d+)/.exec(out);
      if (m) resolve(m[1]!);
    });
    child.on("exit", (code) => reject(new Error(`peft serve exited with ${code}: ${out}`)));
  });
  const exited = new Promise<void>((r) => child.on("exit", () => r()));
  return {
    url,
    pid: child.pid!,
    stop: async () => {
      child.kill("SIGTERM");
      await exited;
    },
  };
}

async function residentBytes(url: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const m = /^peft_process_resident_memory_bytes (\S+)$/m.exec(text);
  return m ? Number(m[1]) : 0;
}

export async function benchServe(opts: ServeBenchOptions = {}): Promise<Record<string, unknown>> {
  const shape = opts.shape ?? SERVE_SHAPE;
  const nAdapters = opts.adapters ?? 16;
  const connections = opts.connections ?? [1, 8, 32];
  const duration = opts.duration ?? 5;
  const promptTokens = opts.promptTokens ?? 16;
  const maxTokens = opts.maxTokens ?? 16;
  const say = opts.onProgress ?? (() => undefined);
  const autocannon = createRequire(import.meta.url)("autocannon") as Autocannon;
  const dir = mkdtempSync(join(tmpdir(), "peft-bench-serve-"));
  try {
    say(`writing a random GPT-2 (L${shape.layers} d${shape.hidden}) and ${nAdapters} LoRA adapters`);
    const { model, root } = writeFixtures(dir, shape, nAdapters);
    const server = await startServer(model, root, nAdapters);
    let peakRss = 0;
    const sampler = setInterval(() => {
      void residentBytes(server.url).then((b) => (peakRss = Math.max(peakRss, b)), () => undefined);
    }, 250);
    try {
      const prompt = Array.from({ length: promptTokens }, (_, i) => (i * 37 + 11) % shape.vocab);
      const body = (model: string) => JSON.stringify({ model, prompt, max_tokens: maxTokens, temperature: 0, ignore_eos: true });
      say("warm-up: one request per adapter and on the base");
      for (const m of ["model", ...Array.from({ length: nAdapters }, (_, i) => `a${i}`)]) {
        const r = await fetch(`${server.url}/v1/completions`, { method: "POST", headers: { "content-type": "application/json" }, body: body(m) });
        if (!r.ok) throw new Error(`warm-up on ${m}: ${r.status} ${await r.text()}`);
      }
      const rssAfterWarmup = await residentBytes(server.url);
      const results: ServeVariantResult[] = [];
      for (const c of connections) {
        for (const variant of ["adapters", "base"] as const) {
          let i = 0;
          const request: AutocannonRequest = {
            method: "POST",
            path: "/v1/completions",
            headers: { "content-type": "application/json" },
            setupRequest: (req) => ({ ...req, body: body(variant === "base" ? "model" : `a${i++ % nAdapters}`) }),
          };
          say(`${variant}: ${c} connection(s) for ${duration} s`);
          const r = await autocannon({ url: server.url, connections: c, duration, requests: [request], timeout: 60 });
          const status = Object.fromEntries(Object.entries(r.statusCodeStats).map(([k, v]) => [k, v.count]));
          const ok = status["200"] ?? 0;
          results.push({
            variant,
            connections: c,
            requestsPerSecond: Math.round((ok / r.duration) * 10) / 10,
            tokensPerSecond: Math.round((ok * maxTokens) / r.duration),
            latencyP50Ms: r.latency.p50,
            latencyP99Ms: r.latency.p99,
            completed: ok,
            status,
            status5xx: Object.entries(status).reduce((s, [k, v]) => s + (k.startsWith("5") ? v : 0), 0),
            errors: r.errors,
            timeouts: r.timeouts,
          });
        }
      }
      const ratios = connections.map((c) => {
        const a = results.find((r) => r.variant === "adapters" && r.connections === c)!;
        const b = results.find((r) => r.variant === "base" && r.connections === c)!;
        return { connections: c, adaptersOverBase: Math.round((a.tokensPerSecond / Math.max(1, b.tokensPerSecond)) * 100) / 100 };
      });
      return {
        shape,
        adapters: nAdapters,
        promptTokens,
        maxTokens,
        durationSeconds: duration,
        results,
        ratios,
        total5xx: results.reduce((s, r) => s + r.status5xx, 0),
        rssAfterWarmupMiB: Math.round(rssAfterWarmup / 2 ** 20),
        peakRssMiB: Math.round(peakRss / 2 ** 20),
      };
    } finally {
      clearInterval(sampler);
      await server.stop();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function parseCounts(v: string): number[] {
  const list = v.split(",").map((s) => Number(s.trim()));
  if (list.length === 0 || list.some((n) => !Number.isInteger(n) || n < 1)) throw new InvalidArgumentError(`expected positive integers separated by commas, got '${v}'`);
  return list;
}

export function register(program: Command): void {
  program
    .command("serve")
    .description("load test of peft serve on loopback (autocannon): completions on N adapters vs the base model at C connections — tokens/s, p50/p99, 5xx, RSS")
    .option("--adapters <n>", "LoRA adapters under --adapter-root", positiveInt("--adapters"), 16)
    .option("--connections <list>", "concurrent connections per run", parseCounts, [1, 8, 32])
    .option("--duration <s>", "seconds per run", positiveInt("--duration"), 5)
    .option("--prompt-tokens <n>", "prompt length", positiveInt("--prompt-tokens"), 16)
    .option("--max-tokens <n>", "tokens generated per request", positiveInt("--max-tokens"), 16)
    .action(async (o: { adapters: number; connections: number[]; duration: number; promptTokens: number; maxTokens: number }) => {
      const t0 = performance.now();
      const r = await benchServe({ ...o, onProgress: progress });
      emitResult({ bench: "serve", env: benchEnvironment({ threads: cpus().length, ep: "cpu" }), ...r, wallSeconds: Math.round((performance.now() - t0) / 100) / 10 });
    });
}
