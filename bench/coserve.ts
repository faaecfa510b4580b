/**
 * `npm run bench -- coserve`: FlexLLM's co-serving claim at this scale. One process holds a
 * GPT-2-shaped model with random weights (default L4 d256 vocab 8192; `--gpt2-small`: GPT-2
 * small's shape, too slow for these windows on 2 shared cores), a
 * `GenerationEngine` serving closed-loop clients (light / medium / heavy: 1 / 4 / 12 clients, each
 * streaming one request after another: 16 prompt tokens, 32 new tokens, greedy) and a LoRA
 * fine-tuning job (`Trainer`, causal LM, batch 4 × 64 tokens) on the same `PeftModel`. Windows
 * of `--duration` seconds each measure:
 *   1. fine-tuning alone (peak; measured first and again after the co-served windows, the mean
 *      counts): trained tokens/s (padded rows × length of the slices run);
 *   2. inference alone at each load: inter-token latency p50/p99 (time between consecutive tokens
 *      of a request, as clients see them), generated tokens/s;
 *   3. co-served at each load: the job's gate is `engine.trainingGate({ itlSloMs })`; both figures,
 *      the fraction of peak fine-tuning throughput kept and whether the target held (p99 ≤ SLO);
 *   4. the naive alternative at each load: the same job in a separate process
 *      (`coserve-naive.ts`) training freely beside the engine, both competing for the cores.
 * The target defaults to the worst p99 inter-token latency of inference alone over the loads (the
 * tightest one inference alone meets; `--slo-ms` sets it). Fine-tuning through the gate with no
 * traffic is measured too (the cost of slicing when idle).
 * Between windows the job is paused (its gate holds it), so each window measures only its mix.
 */
import { fork } from "node:child_process";
import { cpus } from "node:os";
import { performance } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import type { Command } from "commander";
import { GenerationEngine } from "../src/generate/engine.js";
import { PeftModel } from "../src/peft/peft-model.js";
import type { TrainingGate } from "../src/train/gate.js";
import { type TokenizedExample, Trainer } from "../src/train/trainer.js";
import { benchEnvironment, emitResult, positiveInt, progress } from "./env.js";
import { GPT2_SMALL, GPT2_TINY, type Gpt2Shape, randomGpt2 } from "./models.js";

export interface CoserveJob {
  readonly rank: number;
  readonly batch: number;
  readonly seq: number;
}

export const DEFAULT_JOB: CoserveJob = { rank: 8, batch: 4, seq: 64 };

/** The job's LoRA on `pm` (made active for the trainer). */
export function addJobAdapter(pm: PeftModel, job: CoserveJob): void {
  pm.addAdapter("job", { peft_type: "LORA", r: job.rank, lora_alpha: 2 * job.rank, target_modules: ["c_attn", "c_proj"], fan_in_fan_out: true, lora_dropout: 0 }, { seed: 1 });
  pm.setAdapter("job");
}

/** Random token sequences of the job's length. */
export function jobData(job: CoserveJob, vocab: number, n = 64): TokenizedExample[] {
  let s = 12345;
  const next = () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return s >>> 0;
  };
  return Array.from({ length: n }, () => ({ ids: Array.from({ length: job.seq }, () => 1 + (next() % (vocab - 1))) }));
}

type Mode = { kind: "paused" } | { kind: "free" } | { kind: "gated"; gate: TrainingGate };

/**
 * The bench's gate around the job: paused (holds the trainer), free (whole micro-batches) or
 * delegating to an engine gate. Counts trained tokens (rows × padded length of each slice) in a
 * window, a slice that straddles its end by the share of its time inside.
 */
export class SwitchGate implements TrainingGate {
  private mode: Mode = { kind: "paused" };
  private wake: (() => void) | null = null;
  private held: TrainingGate | null = null;
  private slice: { t0: number; tokens: number; done: Promise<void>; end: () => void } | null = null;
  private window: { t0: number; t1: number | null; tokens: number } | null = null;
  private firstAsk: (() => void) | null = null;
  /** Resolves when the trainer first asks (its graph is compiled). */
  readonly ready = new Promise<void>((r) => (this.firstAsk = r));

  set(mode: Mode): void {
    this.mode = mode;
    this.wake?.();
    this.wake = null;
  }

  /** Opens a counting window; `stop()` closes it and resolves, once the slice in flight ends, to the tokens trained in it. */
  count(): { stop(): Promise<number> } {
    const w = { t0: performance.now(), t1: null as number | null, tokens: 0 };
    this.window = w;
    return {
      stop: async () => {
        w.t1 = performance.now();
        await this.slice?.done;
        return w.tokens;
      },
    };
  }

  async acquire(wantRows: number, tokensPerRow: number): Promise<number> {
    this.firstAsk?.();
    this.firstAsk = null;
    for (;;) {
      const m = this.mode;
      if (m.kind === "paused") {
        await new Promise<void>((r) => (this.wake = r));
        continue;
      }
      let n = wantRows;
      if (m.kind === "gated") {
        n = await m.gate.acquire(wantRows, tokensPerRow);
        if (this.mode !== m) {
          // the window ended while it waited: hand the slice back unused (this gate is not reused)
          m.gate.release();
          continue;
        }
        this.held = m.gate;
      }
      let end!: () => void;
      const done = new Promise<void>((r) => (end = r));
      this.slice = { t0: performance.now(), tokens: n * tokensPerRow, done, end };
      return n;
    }
  }

  release(): void {
    const s = this.slice;
    this.slice = null;
    const w = this.window;
    if (s && w) {
      const t = performance.now();
      const inside = Math.min(t, w.t1 ?? t) - Math.max(s.t0, w.t0);
      if (inside > 0) w.tokens += (s.tokens * inside) / Math.max(1e-9, t - s.t0);
    }
    const h = this.held;
    this.held = null;
    h?.release();
    s?.end();
  }
}

const STOP = new Error("bench: stop training");

/** Trains until `stop()` is true at the end of a step; returns once the trainer is released. */
export async function trainUntil(pm: PeftModel, gate: TrainingGate, job: CoserveJob, vocab: number, threads: number, stop: () => boolean): Promise<void> {
  const trainer = new Trainer(pm, { task: "causal-lm", epochs: 1e6, batchSize: job.batch, lr: 1e-4, seed: 1, schedule: "constant", dropout: false, gate, session: { threads } }, jobData(job, vocab));
  try {
    await trainer.fit({
      onStep: () => {
        if (stop()) throw STOP;
      },
    });
  } catch (e) {
    if (e !== STOP) throw e;
    await trainer.release();
  }
}

interface LoadFigures {
  readonly itlP50Ms: number;
  readonly itlP99Ms: number;
  /** Share of inter-token gaps within the target (co-served and naive windows). */
  readonly withinSlo?: number;
  readonly tokensPerSecond: number;
  readonly requests: number;
}

function quantile(xs: readonly number[], q: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))]!;
}

const r1 = (x: number) => Math.round(x * 10) / 10;
const r3 = (x: number) => Math.round(x * 1000) / 1000;

/** `clients` closed-loop streaming clients for `seconds`; inter-token gaps as the clients see them. */
async function traffic(engine: GenerationEngine, clients: number, seconds: number, vocab: number, sloMs: number | null): Promise<LoadFigures> {
  const gaps: number[] = [];
  let tokens = 0;
  let requests = 0;
  const t0 = performance.now();
  const end = t0 + seconds * 1000;
  const client = async (k: number) => {
    let i = 0;
    while (performance.now() < end) {
      const promptIds = Array.from({ length: 16 }, (_, j) => 1 + ((k * 7919 + i * 104729 + j * 31) % (vocab - 1)));
      i++;
      let last = -1;
      for await (const _ of engine.stream({ promptIds, params: { maxNewTokens: 32, ignoreEos: true } })) {
        const now = performance.now();
        if (now > end) continue; // finish the request, count nothing after the window
        if (last >= 0) gaps.push(now - last);
        last = now;
        tokens++;
      }
      if (performance.now() <= end) requests++;
    }
  };
  await Promise.all(Array.from({ length: clients }, (_, k) => client(k)));
  return {
    itlP50Ms: r1(quantile(gaps, 0.5)),
    itlP99Ms: r1(quantile(gaps, 0.99)),
    ...(sloMs !== null ? { withinSlo: r3(gaps.filter((g) => g <= sloMs).length / Math.max(1, gaps.length)) } : {}),
    tokensPerSecond: r1(tokens / seconds),
    requests,
  };
}

/** The job in its own process (`coserve-naive.ts`), paused until `run` windows. */
class NaiveJob {
  private readonly child;
  private readonly replies: ((m: { tokens: number }) => void)[] = [];
  readonly ready: Promise<void>;

  constructor(shape: Gpt2Shape, job: CoserveJob, threads: number) {
    const script = fileURLToPath(new URL("./coserve-naive.js", import.meta.url));
    this.child = fork(script, [JSON.stringify({ shape, job, threads })], { stdio: ["ignore", "inherit", "inherit", "ipc"] });
    this.ready = new Promise<void>((resolve, reject) => {
      this.child.once("exit", (code) => reject(new Error(`the naive fine-tuning process exited with ${code}`)));
      this.child.on("message", (m: { ready?: boolean; tokens?: number }) => {
        if (m.ready) resolve();
        else if (m.tokens !== undefined) this.replies.shift()?.({ tokens: m.tokens });
      });
    });
  }

  start(): void {
    this.child.send({ cmd: "free" });
  }

  /** Pauses the job; resolves with the tokens it trained since `start`. */
  stop(): Promise<number> {
    return new Promise((r) => {
      this.replies.push((m) => r(m.tokens));
      this.child.send({ cmd: "pause" });
    });
  }

  async close(): Promise<void> {
    const exited = new Promise<void>((r) => this.child.once("exit", () => r()));
    this.child.send({ cmd: "exit" });
    await exited;
  }
}

export interface CoserveBenchOptions {
  readonly shape?: Gpt2Shape;
  readonly threads?: number;
  readonly duration?: number;
  readonly loads?: readonly { readonly name: string; readonly clients: number }[];
  readonly sloMs?: number;
  readonly job?: CoserveJob;
  readonly naive?: boolean;
  readonly onProgress?: (m: string) => void;
}

export async function benchCoserve(o: CoserveBenchOptions = {}): Promise<Record<string, unknown>> {
  const shape = o.shape ?? GPT2_TINY;
  const threads = o.threads ?? cpus().length;
  const seconds = o.duration ?? 10;
  const loads = o.loads ?? [
    { name: "light", clients: 1 },
    { name: "medium", clients: 4 },
    { name: "heavy", clients: 12 },
  ];
  const job = o.job ?? DEFAULT_JOB;
  const say = o.onProgress ?? (() => undefined);
  say(`random GPT-2 L${shape.layers} d${shape.hidden} vocab ${shape.vocab}; job: LoRA r${job.rank}, batch ${job.batch} × ${job.seq} tokens; ${seconds} s windows`);
  const pm = new PeftModel(randomGpt2(shape, 3));
  addJobAdapter(pm, job);
  const engine = new GenerationEngine(pm, { maxSlots: 16, maxContext: 64, sessionOptions: { threads } });
  await engine.warmup();
  await engine.generate({ promptIds: [1, 2, 3], params: { maxNewTokens: 4 } });
  const gate = new SwitchGate();
  let done = false;
  const training = trainUntil(pm, gate, job, shape.vocab, threads, () => done);
  training.catch(() => undefined);
  await gate.ready;
  // one free step as warm-up (first runs allocate)
  gate.set({ kind: "free" });
  await new Promise((r) => setTimeout(r, 1000));
  gate.set({ kind: "paused" });

  const ftWindow = async (mode: Mode, work: () => Promise<LoadFigures | void>) => {
    const counter = gate.count();
    gate.set(mode);
    const t0 = performance.now();
    const r = await work();
    gate.set({ kind: "paused" });
    const secs = (performance.now() - t0) / 1000;
    return { tokensPerSecond: r1((await counter.stop()) / secs), load: r ?? null };
  };
  // fine-tuning alone, at the start and again after the co-served windows (the machine's load drifts)
  const ftAlone = async () => (await ftWindow({ kind: "free" }, () => new Promise((r) => setTimeout(r, seconds * 1000)))).tokensPerSecond;
  say("fine-tuning alone");
  const peakBefore = await ftAlone();
  say(`  ${peakBefore} trained tokens/s`);

  const alone: Record<string, LoadFigures> = {};
  for (const l of loads) {
    alone[l.name] = await traffic(engine, l.clients, seconds, shape.vocab, null);
    say(`inference alone, ${l.name} (${l.clients} clients): ITL p50 ${alone[l.name]!.itlP50Ms} ms p99 ${alone[l.name]!.itlP99Ms} ms, ${alone[l.name]!.tokensPerSecond} tok/s`);
  }
  // the tightest target inference alone meets at every load (its worst p99), unless given
  const slo = o.sloMs ?? Math.ceil(Math.max(...Object.values(alone).map((a) => a.itlP99Ms)));
  say(`ITL target: ${slo} ms${o.sloMs === undefined ? " (the worst p99 of inference alone)" : ""}`);
  say("fine-tuning through the engine's gate, no traffic");
  const idle = await ftWindow({ kind: "gated", gate: engine.trainingGate({ itlSloMs: slo }) }, () => new Promise((r) => setTimeout(r, seconds * 1000)));
  say(`  ${idle.tokensPerSecond} trained tokens/s`);

  const coservedRaw: { name: string; f: LoadFigures; ft: number }[] = [];
  for (const l of loads) {
    const w = await ftWindow({ kind: "gated", gate: engine.trainingGate({ itlSloMs: slo }) }, () => traffic(engine, l.clients, seconds, shape.vocab, slo));
    const f = w.load!;
    coservedRaw.push({ name: l.name, f, ft: w.tokensPerSecond });
    say(`co-served, ${l.name}: ITL p50 ${f.itlP50Ms} p99 ${f.itlP99Ms} ms (target ${slo}: ${f.itlP99Ms <= slo ? "held" : "missed"}), ${f.tokensPerSecond} tok/s; fine-tuning ${w.tokensPerSecond} tok/s`);
  }
  const stats = engine.coServeStats();
  say("fine-tuning alone, again");
  const peakAfter = await ftAlone();
  const peak = r1((peakBefore + peakAfter) / 2);
  say(`  ${peakAfter} trained tokens/s; peak = the mean, ${peak}`);
  const coserved: Record<string, LoadFigures & { fineTuneTokensPerSecond: number; fractionOfPeak: number; sloHeld: boolean }> = {};
  for (const c of coservedRaw) coserved[c.name] = { ...c.f, fineTuneTokensPerSecond: c.ft, fractionOfPeak: r3(c.ft / peak), sloHeld: c.f.itlP99Ms <= slo };
  done = true;
  gate.set({ kind: "free" });
  await training;

  const naive: Record<string, LoadFigures & { fineTuneTokensPerSecond: number; fractionOfPeak: number; sloHeld: boolean }> = {};
  if (o.naive ?? true) {
    say("naive: the job in a separate process beside the engine");
    const proc = new NaiveJob(shape, job, threads);
    await proc.ready;
    try {
      for (const l of loads) {
        const t0 = performance.now();
        proc.start();
        const f = await traffic(engine, l.clients, seconds, shape.vocab, slo);
        const tokens = await proc.stop();
        const ft = r1(tokens / ((performance.now() - t0) / 1000));
        naive[l.name] = { ...f, fineTuneTokensPerSecond: ft, fractionOfPeak: r3(ft / peak), sloHeld: f.itlP99Ms <= slo };
        say(`naive, ${l.name}: ITL p50 ${f.itlP50Ms} p99 ${f.itlP99Ms} ms (${f.itlP99Ms <= slo ? "held" : "missed"}), ${f.tokensPerSecond} tok/s; fine-tuning ${ft} tok/s = ${(100 * ft / peak).toFixed(0)} % of peak`);
      }
    } finally {
      await proc.close();
    }
  }
  await engine.close();
  await pm.dispose();
  return { shape, job, seconds, loads, sloMs: slo, fineTuneAlone: { tokensPerSecond: peak, before: peakBefore, after: peakAfter }, fineTuneGatedIdle: { tokensPerSecond: idle.tokensPerSecond, fractionOfPeak: r3(idle.tokensPerSecond / peak) }, inferenceAlone: alone, coserved, naive, scheduler: stats };
}

export function register(program: Command): void {
  program
    .command("coserve")
    .description("co-serving (FlexLLM): inference alone at light/medium/heavy load, fine-tuning alone, both co-served under an ITL target, and a separate fine-tuning process beside the server")
    .option("--duration <s>", "seconds per measurement window", positiveInt("--duration"), 10)
    .option("--slo-ms <ms>", "inter-token latency target (default: the worst p99 of inference alone)", positiveInt("--slo-ms"))
    .option("--threads <n>", "onnxruntime intra-op threads per session (default: number of CPUs)", positiveInt("--threads"))
    .option("--gpt2-small", "GPT-2 small's shape (L12 d768 vocab 50257) instead of L4 d256 vocab 8192")
    .option("--no-naive", "skip the separate-process comparison")
    .action(async (opts: { duration: number; sloMs?: number; threads?: number; gpt2Small?: boolean; naive: boolean }) => {
      const threads = opts.threads ?? cpus().length;
      const t0 = performance.now();
      const r = await benchCoserve({
        duration: opts.duration,
        ...(opts.sloMs !== undefined ? { sloMs: opts.sloMs } : {}),
        threads,
        shape: opts.gpt2Small ? GPT2_SMALL : GPT2_TINY,
        naive: opts.naive,
        onProgress: progress,
      });
      emitResult({ bench: "coserve", env: benchEnvironment({ threads, ep: "cpu" }), ...r, wallSeconds: Math.round((performance.now() - t0) / 100) / 10 });
    });
}
