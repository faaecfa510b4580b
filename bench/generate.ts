/**
 * `npm run bench -- generate`: incremental decoding on a GPT-2-small-shaped model (random
 * weights): decode tokens/s at several batch sizes with N distinct LoRA adapters in the batch
 * (row i uses adapter i mod N, each row its own adapter from the pool) against the same batch on
 * one adapter merged into the weights; batch-1 decode against the memory-bandwidth roofline
 * (bytes of weights read per token ÷ step time, over a copy bandwidth measured in the same run);
 * time to first token against prompt length; KV cache bytes per token.
 *
 * A decode step is `Decoder.step` (one token per row, KV cache appended in place) plus the
 * arg-max of each row's logits, as the engine does when decoding greedily.
 */
import { cpus } from "node:os";
import { performance } from "node:perf_hooks";
import { type Command, InvalidArgumentError } from "commander";
import { Decoder, moduleShapes } from "../src/generate/decoder.js";
import { GenerationEngine } from "../src/generate/engine.js";
import { AdapterPool, planLayout } from "../src/peft/adapter-pool.js";
import { PeftModel } from "../src/peft/peft-model.js";
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

/** Decode step times of `dec` at each batch size: rows get `context` cached tokens, then `steps` timed steps. */
async function timeDecode(dec: Decoder, batches: readonly number[], adapterOf: (row: number) => number, context: number, steps: number, say: (m: string) => void, label: string): Promise<DecodeTiming[]> {
  const out: DecodeTiming[] = [];
  for (const B of batches) {
    for (let s = 0; s < B; s++) dec.cache.reset(s);
    const prompt = Array.from({ length: context }, (_, i) => 1 + ((i * 7919) % 1000));
    // prefill in chunks of 8 rows (bounded memory), then decode
    let next: number[] = [];
    for (let s0 = 0; s0 < B; s0 += 8) {
      const rows = Array.from({ length: Math.min(8, B - s0) }, (_, i) => ({ slot: s0 + i, ids: prompt, adapterSlot: adapterOf(s0 + i) }));
      next = next.concat((await dec.step(rows)).map(argmax));
    }
    const times: number[] = [];
    for (let t = 0; t < steps + 1; t++) {
      const t0 = performance.now();
      const logits = await dec.step(next.map((id, s) => ({ slot: s, ids: [id], adapterSlot: adapterOf(s) })));
      next = logits.map(argmax);
      if (t > 0) times.push(performance.now() - t0); // the first step after a prefill is a warm-up
    }
    const best = Math.min(...times);
    out.push({ batch: B, bestStepMs: r1(best), medianStepMs: r1(median(times)), tokensPerSecond: r1(B / (best / 1e3)) });
    say(`${label} batch ${B}: best step ${best.toFixed(1)} ms (${(B / (best / 1e3)).toFixed(1)} tok/s), median ${median(times).toFixed(1)} ms`);
  }
  return out;
}

/** Best copy bandwidth (bytes read + written per second) of a `mib`-MiB Float32Array copy. */
export function copyBandwidth(mib = 256, rounds = 5): number {
  const n = (mib * 2 ** 20) / 4;
  const a = new Float32Array(n).fill(1);
  const b = new Float32Array(n);
  let best = Infinity;
  for (let r = 0; r < rounds; r++) {
    const t0 = performance.now();
    b.set(a);
    best = Math.min(best, performance.now() - t0);
  }
  return (2 * n * 4) / (best / 1e3);
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

  // merged: one adapter folded into the weights, no pool
  const merged = new PeftModel(base);
  addRandomLora(merged, "a0", config, 1);
  merged.mergeAdapter(["a0"]);
  const mergedPool = new AdapterPool(planLayout([], moduleShapes(merged), shape.hidden), (n) => merged.weights.get(n), (n) => merged.weights.has(n));
  let dec = await Decoder.create(merged, mergedPool, { sessionOptions });
  const bytesPerToken = dec.cache.bytesPerToken;
  const mergedTimes = await timeDecode(dec, batches, () => 0, context, steps, say, "merged");
  // the roofline: bytes of weights per token over the copy bandwidth, measured between the same steps
  const bandwidth = copyBandwidth();
  const weightBytes = weightBytesPerToken(shape);
  const b1 = mergedTimes.find((t) => t.batch === 1);
  await dec.release();

  const many = new PeftModel(base);
  for (let i = 0; i < nMax; i++) addRandomLora(many, `a${i}`, config, i + 1);
  const pooled: { adapters: number; decode: (DecodeTiming & { ratioToMerged: number })[] }[] = [];
  for (const n of counts) {
    const adapters = Array.from({ length: n }, (_, i) => many.adapter(`a${i}`));
    const pool = new AdapterPool(planLayout(adapters, moduleShapes(many), shape.hidden), (k) => many.weights.get(k), (k) => many.weights.has(k));
    adapters.forEach((a, i) => pool.assign(i + 1, a));
    dec = await Decoder.create(many, pool, { sessionOptions });
    const t = await timeDecode(dec, batches, (row) => 1 + (row % n), context, steps, say, `${n} adapters`);
    await dec.release();
    pooled.push({
      adapters: n,
      decode: t.map((x) => ({ ...x, ratioToMerged: r3(x.tokensPerSecond / mergedTimes.find((m) => m.batch === x.batch)!.tokensPerSecond) })),
    });
  }
  await many.dispose();

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
    roofline: b1
      ? {
          weightBytesPerToken: weightBytes,
          copyBandwidthGBps: r3(bandwidth / 1e9),
          achievedGBps: r3(weightBytes / (b1.bestStepMs / 1e3) / 1e9),
          fractionOfRoofline: r3(weightBytes / (b1.bestStepMs / 1e3) / bandwidth),
          rooflineStepMs: r1((weightBytes / bandwidth) * 1e3),
        }
      : null,
    ttft,
  };
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
    .action(async (opts: { threads?: number; batches: number[]; adapters: number[]; rank: number; context: number; steps: number; promptLengths: number[]; small?: boolean }) => {
      const threads = opts.threads ?? cpus().length;
      const t0 = performance.now();
      const shape: Gpt2Shape = opts.small ? { layers: 4, hidden: 256, heads: 4, vocab: 8192, positions: 1024 } : GPT2_SMALL;
      const r = await benchGenerate({ ...opts, threads, shape, onProgress: progress });
      emitResult({ bench: "generate", env: benchEnvironment({ threads, ep: "cpu" }), ...r, wallSeconds: Math.round((performance.now() - t0) / 100) / 10 });
    });
}
