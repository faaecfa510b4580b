/**
 * `npm run bench -- generate`: incremental decoding on a GPT-2-small-shaped model (random
 * weights): decode tokens/s at several batch sizes with N distinct LoRA adapters in the batch
 * (row i uses adapter i mod N, each row its own adapter from the pool) against the same batch on
 * one adapter merged into the weights, the steps of both interleaved (same load on a shared
 * machine); batch-1 decode against the memory-bandwidth roofline (bytes of weights read per token
 * ÷ step time, over onnxruntime's read bandwidth with the same threads, measured between the
 * steps); time to first token against prompt length; KV cache bytes per token.
 *
 * A decode step is `Decoder.step` (one token per row, KV cache appended in place) plus the
 * arg-max of each row's logits, as the engine does when decoding greedily.
 */
import { cpus } from "node:os";
import { performance } from "node:perf_hooks";
import { type Command, InvalidArgumentError } from "commander";
import { Decoder, moduleShapes } from "../src/generate/decoder.js";
import * as G from "../src/graph/api.js";
import { Graph } from "../src/graph/graph.js";
import { GenerationEngine } from "../src/generate/engine.js";
import { ALL_CONTRIB_OPS, type ContribOps } from "../src/models/context.js";
import { AdapterPool, planLayout } from "../src/peft/adapter-pool.js";
import { PeftModel } from "../src/peft/peft-model.js";
import { CompiledGraph } from "../src/runtime/session.js";
import { benchEnvironment, emitResult, positiveInt, progress } from "./env.js";
import { GPT2_SMALL, type Gpt2Shape, addRandomLora, randomGpt2 } from "./models.js";

export interface GenerateBenchOptions {
  readonly threads?: number;
  readonly shape?: Gpt2Shape;
  readonly batches?: readonly number[];
  readonly adapters?: readonly number[];
  readonly rank?: number;
  /** Prompt tokens cached per row before the timed decode steps. */
  readonly context?: number;
  /** Timed decode steps per (variant, batch); the best and the median count. */
  readonly steps?: number;
  readonly promptLengths?: readonly number[];
  readonly onProgress?: (msg: string) => void;
}

interface DecodeTiming {
  readonly batch: number;
  readonly bestStepMs: number;
  readonly medianStepMs: number;
  readonly tokensPerSecond: number;
  /** Median CPU milliseconds of the process (all threads) per step: the work, less sensitive to other processes' load. */
  readonly cpuMs?: number;
}

function argmax(x: Float32Array): number {
  let b = 0;
  for (let i = 1; i < x.length; i++) if (x[i]! > x[b]!) b = i;
  return b;
}

function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
}

const r1 = (x: number) => Math.round(x * 10) / 10;
const r3 = (x: number) => Math.round(x * 1000) / 1000;

/** One decoder under test and the pool slot of each of its rows. */
interface Variant {
  readonly dec: Decoder;
  readonly adapterOf: (row: number) => number;
}

const PROMPT = (n: number) => Array.from({ length: n }, (_, i) => 1 + ((i * 7919) % 1000));

/** Caches `context` prompt tokens in slots 0..B−1 (chunks of 8 rows: bounded memory); returns the arg-max of each row. */
async function prefill(v: Variant, B: number, context: number): Promise<number[]> {
  for (let s = 0; s < B; s++) v.dec.cache.reset(s);
  let next: number[] = [];
  for (let s0 = 0; s0 < B; s0 += 8) {
    const rows = Array.from({ length: Math.min(8, B - s0) }, (_, i) => ({ slot: s0 + i, ids: PROMPT(context), adapterSlot: v.adapterOf(s0 + i) }));
    next = next.concat((await v.dec.step(rows)).map(argmax));
  }
  return next;
}

function timing(batch: number, times: readonly number[]): DecodeTiming {
  const best = Math.min(...times);
  return { batch, bestStepMs: r1(best), medianStepMs: r1(median(times)), tokensPerSecond: r1(batch / (best / 1e3)) };
}

/**
 * Decode steps of two variants at batch `B`, interleaved: after a prefill of `context` tokens per
 * row and one warm-up step each, `steps` rounds of one step of each, the order alternating
 * between rounds, so both see the same load of a shared machine. `ratio` is the median over
 * rounds of (step time of `a` ÷ step time of `b`): b's speed relative to a's; `cpuRatio` the same
 * from the median CPU time per step (onnxruntime's threads do not spin, so CPU time is work done).
 */
async function timePair(a: Variant, b: Variant, B: number, context: number, steps: number): Promise<{ a: DecodeTiming; b: DecodeTiming; ratio: number; cpuRatio: number }> {
  const next = [await prefill(a, B, context), await prefill(b, B, context)];
  const vs = [a, b];
  const times: number[][] = [[], []];
  const cpu: number[][] = [[], []];
  for (let t = 0; t < steps + 1; t++) {
    for (const k of t % 2 ? [1, 0] : [0, 1]) {
      const v = vs[k]!;
      const c0 = process.cpuUsage();
      const t0 = performance.now();
      const logits = await v.dec.step(next[k]!.map((id, s) => ({ slot: s, ids: [id], adapterSlot: v.adapterOf(s) })));
      next[k] = logits.map(argmax);
      const wall = performance.now() - t0;
      const c = process.cpuUsage(c0);
      if (t === 0) continue; // the first step after a prefill is a warm-up
      times[k]!.push(wall);
      cpu[k]!.push((c.user + c.system) / 1e3);
    }
  }
  const ratio = median(times[0]!.map((ta, i) => ta / times[1]![i]!));
  const cpuRatio = median(cpu[0]!) / median(cpu[1]!);
  return { a: { ...timing(B, times[0]!), cpuMs: r1(median(cpu[0]!)) }, b: { ...timing(B, times[1]!), cpuMs: r1(median(cpu[1]!)) }, ratio: r3(ratio), cpuRatio: r3(cpuRatio) };
}

/**
 * Read bandwidth (bytes per second) of onnxruntime streaming a `mib`-MiB float32 tensor with
 * `threads` intra-op threads (a ReduceMax over rows of 4096, parallel over rows; the tensor is a
 * fed input, not a constant, so nothing is folded): the best of `rounds` runs. The same threads
 * and the same kind of access (reading each weight once) as a batch-1 decode step.
 */
export async function readBandwidth(threads: number, mib = 256, rounds = 8): Promise<number> {
  const cols = 4096;
  const rows = Math.floor((mib * 2 ** 20) / 4 / cols);
  const g = new Graph("read_bandwidth");
  const x = g.input("x", "float32", [rows, cols]);
  g.output(G.reduceMax(x, [1], false), "y");
  const session = await CompiledGraph.create(g, { threads });
  try {
    const data = new Float32Array(rows * cols);
    for (let i = 0; i < data.length; i += 1024) data[i] = i; // touch every page before timing
    const feeds = { x: { dtype: "float32" as const, shape: [rows, cols], data } };
    let best = Infinity;
    for (let r = 0; r < rounds; r++) {
      const t0 = performance.now();
      await session.run(feeds);
      best = Math.min(best, performance.now() - t0);
    }
    return (rows * cols * 4) / (best / 1e3);
  } finally {
    await session.release();
  }
}

/** Bytes of weights one batch-1 decode step reads: every matrix and vector once (the embedding table once, as the LM head), one row of each embedding. */
export function weightBytesPerToken(shape: Gpt2Shape): number {
  const d = shape.hidden;
  const perLayer = d * 3 * d + 3 * d + d * d + d + d * 4 * d + 4 * d + 4 * d * d + d + 4 * d; // c_attn, c_proj, c_fc, mlp.c_proj, two layer norms
  return 4 * (shape.layers * perLayer + shape.vocab * d + 2 * d + 2 * d);
}

export async function benchGenerate(o: GenerateBenchOptions = {}) {
  const threads = o.threads ?? cpus().length;
  const shape = o.shape ?? GPT2_SMALL;
  const batches = o.batches ?? [1, 8, 32, 64];
  const counts = o.adapters ?? [1, 8, 64];
  const rank = o.rank ?? 8;
  const context = o.context ?? 32;
  const steps = o.steps ?? 5;
  const promptLengths = o.promptLengths ?? [16, 64, 256, 512];
  const say = o.onProgress ?? (() => undefined);
  const sessionOptions = { threads };
  const base = randomGpt2(shape, 3);
  const config = { peft_type: "LORA", r: rank, lora_alpha: 2 * rank, target_modules: ["c_attn"], fan_in_fan_out: true };
  const nMax = Math.max(...counts);

  // merged: one adapter folded into the weights, no pool; its decoder stays up to be timed against each pool
  const merged = new PeftModel(base);
  addRandomLora(merged, "a0", config, 1);
  merged.mergeAdapter(["a0"]);
  const mergedPool = new AdapterPool(planLayout([], moduleShapes(merged), shape.hidden), (n) => merged.weights.get(n), (n) => merged.weights.has(n));
  const mergedV: Variant = { dec: await Decoder.create(merged, mergedPool, { sessionOptions }), adapterOf: () => 0 };
  const bytesPerToken = mergedV.dec.cache.bytesPerToken;

  // the roofline: batch-1 steps of the merged model and the read-bandwidth probe (same threads), alternating
  const weightBytes = weightBytesPerToken(shape);
  let bandwidth = 0;
  let bestStep = Infinity;
  let next = await prefill(mergedV, 1, context);
  for (let round = 0; round < 3; round++) {
    bandwidth = Math.max(bandwidth, await readBandwidth(threads));
    for (let t = 0; t < steps + 1; t++) {
      const t0 = performance.now();
      next = (await mergedV.dec.step([{ slot: 0, ids: next, adapterSlot: 0 }])).map(argmax);
      if (t > 0) bestStep = Math.min(bestStep, performance.now() - t0);
    }
  }
  say(`roofline: batch-1 step ${bestStep.toFixed(1)} ms for ${(weightBytes / 1e6).toFixed(0)} MB of weights, read bandwidth ${(bandwidth / 1e9).toFixed(2)} GB/s with ${threads} threads: ${(weightBytes / (bestStep / 1e3) / bandwidth).toFixed(2)} of the roofline`);

  const many = new PeftModel(base);
  for (let i = 0; i < nMax; i++) addRandomLora(many, `a${i}`, config, i + 1);
  const mergedBest = new Map<number, DecodeTiming>();
  const pooled: { adapters: number; decode: (DecodeTiming & { ratioToMerged: number; cpuRatioToMerged: number; mergedStepMs: number })[] }[] = [];
  for (const n of counts) {
    const adapters = Array.from({ length: n }, (_, i) => many.adapter(`a${i}`));
    const pool = new AdapterPool(planLayout(adapters, moduleShapes(many), shape.hidden), (k) => many.weights.get(k), (k) => many.weights.has(k));
    adapters.forEach((a, i) => pool.assign(i + 1, a));
    const pooledV: Variant = { dec: await Decoder.create(many, pool, { sessionOptions }), adapterOf: (row) => 1 + (row % n) };
    const decode: (DecodeTiming & { ratioToMerged: number; cpuRatioToMerged: number; mergedStepMs: number })[] = [];
    for (const B of batches) {
      const r = await timePair(mergedV, pooledV, B, context, steps);
      const old = mergedBest.get(B);
      if (!old || r.a.bestStepMs < old.bestStepMs) mergedBest.set(B, r.a);
      decode.push({ ...r.b, ratioToMerged: r.ratio, cpuRatioToMerged: r.cpuRatio, mergedStepMs: r.a.medianStepMs });
      say(`${n} adapters batch ${B}: median step ${r.b.medianStepMs} ms, CPU ${r.b.cpuMs} ms (merged ${r.a.medianStepMs} ms, CPU ${r.a.cpuMs} ms in the same rounds); ${n} adapters ÷ merged ${r.ratio} (wall), ${r.cpuRatio} (CPU)`);
    }
    await pooledV.dec.release();
    pooled.push({ adapters: n, decode });
  }
  await many.dispose();
  await mergedV.dec.release();
  const mergedTimes = batches.map((B) => mergedBest.get(B)!);

  // time to first token: one request at a time through the engine, the whole prompt in one chunk
  const engine = new GenerationEngine(merged, { maxSlots: 1, prefillTokenBudget: Math.max(...promptLengths), sessionOptions });
  await engine.warmup();
  const ttft: { promptTokens: number; bestMs: number }[] = [];
  for (const len of promptLengths) {
    if (len >= shape.positions) throw new InvalidArgumentError(`--prompt-lengths: ${len} does not fit the model's ${shape.positions} positions`);
    let best = Infinity;
    for (let r = 0; r < 2; r++) {
      const t0 = performance.now();
      const s = engine.stream({ promptIds: Array.from({ length: len }, (_, i) => 1 + ((i * 31) % 1000)), params: { maxNewTokens: 1, ignoreEos: true } });
      for await (const _ of s) break;
      best = Math.min(best, performance.now() - t0);
      await s.result;
    }
    ttft.push({ promptTokens: len, bestMs: r1(best) });
    say(`TTFT ${len} prompt tokens: ${best.toFixed(1)} ms`);
  }
  await engine.close();
  await merged.dispose();
  return {
    shape,
    rank,
    context,
    steps,
    cacheBytesPerToken: bytesPerToken,
    merged: mergedTimes,
    pooled,
    roofline: {
      weightBytesPerToken: weightBytes,
      threads,
      readBandwidthGBps: r3(bandwidth / 1e9),
      bestStepMs: r1(bestStep),
      achievedGBps: r3(weightBytes / (bestStep / 1e3) / 1e9),
      fractionOfRoofline: r3(weightBytes / (bestStep / 1e3) / bandwidth),
      rooflineStepMs: r1((weightBytes / bandwidth) * 1e3),
    },
    ttft,
  };
}

/** The contrib-op variants `--contrib` measures, by name. */
export const CONTRIB_VARIANTS: Readonly<Record<string, ContribOps>> = {
  all: ALL_CONTRIB_OPS,
  attention: { attention: true },
  "skip-layer-norm": { skipLayerNorm: true },
  "fast-gelu": { fastGelu: true },
};

export interface ContribBenchOptions {
  readonly threads?: number;
  readonly shape?: Gpt2Shape;
  readonly batches?: readonly number[];
  readonly variants?: readonly string[];
  readonly context?: number;
  readonly steps?: number;
  readonly onProgress?: (msg: string) => void;
}

/**
 * The decode graph with onnxruntime's contrib kernels (`Decoder.create({ contribOps })`) against
 * the standard-op graph, on the base model: for each variant, the largest |Δ logit| over a
 * prefill of `context` tokens and `steps` decode steps fed the same tokens (batch 4, rows of
 * different lengths), then the decode steps of both interleaved at each batch size (`timePair`:
 * `ratio` > 1 means the contrib graph is faster).
 */
export async function benchContrib(o: ContribBenchOptions = {}) {
  const threads = o.threads ?? cpus().length;
  const shape = o.shape ?? GPT2_SMALL;
  const batches = o.batches ?? [1, 8, 32];
  const context = o.context ?? 32;
  const steps = o.steps ?? 5;
  const say = o.onProgress ?? (() => undefined);
  const sessionOptions = { threads };
  const model = new PeftModel(randomGpt2(shape, 3));
  const pool = () => new AdapterPool(planLayout([], moduleShapes(model), shape.hidden), (n) => model.weights.get(n), (n) => model.weights.has(n));
  const plain: Variant = { dec: await Decoder.create(model, pool(), { sessionOptions }), adapterOf: () => 0 };
  const results: { variant: string; ops: ContribOps; maxAbsLogitDiff: number; decode: { batch: number; plainStepMs: number; contribStepMs: number; ratio: number; cpuRatio: number }[] }[] = [];
  for (const name of o.variants ?? ["all"]) {
    const ops = CONTRIB_VARIANTS[name];
    if (!ops) throw new InvalidArgumentError(`--contrib: unknown variant '${name}' (known: ${Object.keys(CONTRIB_VARIANTS).join(", ")})`);
    const contrib: Variant = { dec: await Decoder.create(model, pool(), { sessionOptions, contribOps: ops }), adapterOf: () => 0 };
    // exactness: the same tokens through both, rows of different lengths (padding inside the run)
    let worst = 0;
    const lens = [context, Math.max(1, context >> 1), 3, 1];
    for (let s = 0; s < lens.length; s++) {
      plain.dec.cache.reset(s);
      contrib.dec.cache.reset(s);
    }
    let rows = lens.map((n, s) => ({ slot: s, ids: PROMPT(n), adapterSlot: 0 }));
    for (let t = 0; t <= steps; t++) {
      const [a, b] = [await plain.dec.step(rows), await contrib.dec.step(rows)];
      a.forEach((la, r) => la.forEach((x, j) => (worst = Math.max(worst, Math.abs(x - b[r]![j]!)))));
      rows = a.map((la, s) => ({ slot: s, ids: [argmax(la)], adapterSlot: 0 }));
    }
    const decode: (typeof results)[number]["decode"] = [];
    for (const B of batches) {
      const r = await timePair(plain, contrib, B, context, steps);
      decode.push({ batch: B, plainStepMs: r.a.medianStepMs, contribStepMs: r.b.medianStepMs, ratio: r.ratio, cpuRatio: r.cpuRatio });
      say(`contrib ${name} batch ${B}: median step ${r.b.medianStepMs} ms vs ${r.a.medianStepMs} ms plain; plain ÷ contrib ${r.ratio} (wall), ${r.cpuRatio} (CPU); max |Δ logit| ${worst.toExponential(2)}`);
    }
    await contrib.dec.release();
    results.push({ variant: name, ops, maxAbsLogitDiff: worst, decode });
  }
  await plain.dec.release();
  await model.dispose();
  return { shape, context, steps, contrib: results };
}

function parseList(name: string) {
  return (v: string): number[] => {
    const out = v.split(",").map((p) => Number(p.trim()));
    if (out.some((n) => !Number.isInteger(n) || n < 1)) throw new InvalidArgumentError(`${name} must be positive integers separated by commas, got '${v}'`);
    return out;
  };
}

export function register(program: Command): void {
  program
    .command("generate")
    .description("KV-cache decoding: tokens/s at batch 1/8/32/64 with 1/8/64 LoRA adapters vs merged, batch-1 vs the memory-bandwidth roofline, time to first token, cache bytes/token")
    .option("--threads <n>", "intra-op threads (default: number of CPUs)", positiveInt("--threads"))
    .option("--batches <list>", "decode batch sizes", parseList("--batches"), [1, 8, 32, 64])
    .option("--adapters <list>", "adapter counts of the pooled batches", parseList("--adapters"), [1, 8, 64])
    .option("--rank <n>", "LoRA rank (c_attn of every layer)", positiveInt("--rank"), 8)
    .option("--context <n>", "tokens cached per row before timing", positiveInt("--context"), 32)
    .option("--steps <n>", "timed decode steps per batch size", positiveInt("--steps"), 5)
    .option("--prompt-lengths <list>", "prompt lengths for time to first token", parseList("--prompt-lengths"), [16, 64, 256, 512])
    .option("--small", "a GPT-2 L4 d256 vocab 8192 model instead of GPT-2 small (quick check)")
    .option("--contrib <variants>", `only compare the decode graph with onnxruntime's contrib kernels against the standard one (speed and max |Δ logit|): ${Object.keys(CONTRIB_VARIANTS).join(", ")}`, (v: string) => v.split(",").map((s) => s.trim()))
    .action(async (opts: { threads?: number; batches: number[]; adapters: number[]; rank: number; context: number; steps: number; promptLengths: number[]; small?: boolean; contrib?: string[] }) => {
      const threads = opts.threads ?? cpus().length;
      const t0 = performance.now();
      const shape: Gpt2Shape = opts.small ? { layers: 4, hidden: 256, heads: 4, vocab: 8192, positions: 1024 } : GPT2_SMALL;
      if (opts.contrib) {
        const r = await benchContrib({ threads, shape, batches: opts.batches, variants: opts.contrib, context: opts.context, steps: opts.steps, onProgress: progress });
        emitResult({ bench: "generate", mode: "contrib", env: benchEnvironment({ threads, ep: "cpu" }), ...r, wallSeconds: Math.round((performance.now() - t0) / 100) / 10 });
        return;
      }
      const r = await benchGenerate({ ...opts, threads, shape, onProgress: progress });
      emitResult({ bench: "generate", env: benchEnvironment({ threads, ep: "cpu" }), ...r, wallSeconds: Math.round((performance.now() - t0) / 100) / 10 });
    });
}
