/**
 * `npm run bench -- infer`: forward throughput of one base model serving many LoRA adapters in
 * one mixed batch (`PeftModel.forward({ adapterNames })`, each row its own adapter) against the
 * same batch on the base with a single adapter merged into its weights (the fastest a single
 * adapter can run). Also reported: the single adapter unmerged (LoRA applied as a side branch).
 *
 * Default shape (runs in seconds on 2 cores): GPT-2 L6 d512 h8 vocab 8192, batch 64 × seq 32,
 * LoRA r 16 on `c_attn` of every layer; mixed batches with N = 1, 8, 64 adapters (row i uses
 * adapter i mod N). Logits are returned to JavaScript in every variant, as `forward` does.
 */
import { cpus } from "node:os";
import { performance } from "node:perf_hooks";
import { type Command, InvalidArgumentError, Option } from "commander";
import { PeftModel } from "../src/peft/peft-model.js";
import type { ExecutionProvider } from "../src/runtime/session.js";
import type { Tensor } from "../src/tensor.js";
import { benchEnvironment, emitResult, positiveInt, progress } from "./env.js";
import { type Gpt2Shape, addRandomLora, randomGpt2, randomValues } from "./models.js";

export const INFER_SHAPE: Gpt2Shape = { layers: 6, hidden: 512, heads: 8, vocab: 8192, positions: 1024 };

export interface InferBenchOptions {
  readonly threads?: number;
  readonly ep?: ExecutionProvider;
  readonly shape?: Gpt2Shape;
  readonly batch?: number;
  readonly seq?: number;
  readonly rank?: number;
  /** Adapter counts of the mixed batches (default 1, 8, 64). */
  readonly adapters?: readonly number[];
  /** Timed rounds (every variant once per round, order rotating; best and median count). */
  readonly repeat?: number;
  readonly warmup?: number;
  /** Compute dtype of every variant (default float32; float16: float16 weights and activations, float32 logits). */
  readonly dtype?: "float32" | "float16";
  readonly onProgress?: (msg: string) => void;
}

export interface InferTiming {
  readonly bestMs: number;
  readonly medianMs: number;
  readonly tokensPerSecond: number;
  /** Least process CPU time of a run (all threads). */
  readonly bestCpuMs: number;
}

export interface InferBenchResult {
  readonly shape: Gpt2Shape;
  readonly dtype: "float32" | "float16";
  readonly batch: number;
  readonly seq: number;
  readonly rank: number;
  readonly repeat: number;
  readonly merged: InferTiming;
  readonly unmerged: InferTiming;
  readonly mixed: readonly (InferTiming & {
    readonly adapters: number;
    /** tokens/s mixed ÷ tokens/s merged (wall clock, best runs). */
    readonly ratioToMerged: number;
    /** The same from CPU time (merged CPU ÷ mixed CPU): robust to other work on the machine. */
    readonly cpuRatioToMerged: number;
    readonly maxAbsDiffVsMerged: number;
  })[];
}

function timingOf(times: readonly number[], cpu: readonly number[], tokens: number): InferTiming {
  const s = [...times].sort((a, b) => a - b);
  const med = s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
  return {
    bestMs: Math.round(s[0]! * 10) / 10,
    medianMs: Math.round(med * 10) / 10,
    tokensPerSecond: Math.round(tokens / (s[0]! / 1e3)),
    bestCpuMs: Math.round(Math.min(...cpu) * 10) / 10,
  };
}

function maxAbsDiffRows(a: Tensor, b: Tensor, rows: readonly number[]): number {
  const per = a.data.length / (a.shape[0] as number);
  const x = a.data as Float32Array;
  const y = b.data as Float32Array;
  let m = 0;
  for (const r of rows) for (let i = r * per; i < (r + 1) * per; i++) m = Math.max(m, Math.abs(x[i]! - y[i]!));
  return m;
}

export async function benchInfer(o: InferBenchOptions = {}): Promise<InferBenchResult> {
  const threads = o.threads ?? cpus().length;
  const ep = o.ep ?? "cpu";
  const shape = o.shape ?? INFER_SHAPE;
  const batch = o.batch ?? 64;
  const seq = o.seq ?? 32;
  const rank = o.rank ?? 16;
  const counts = o.adapters ?? [1, 8, 64];
  const repeat = o.repeat ?? 5;
  const warmup = o.warmup ?? 1;
  const say = o.onProgress ?? (() => undefined);
  const nMax = Math.max(...counts);
  if (nMax > batch) throw new InvalidArgumentError(`--adapters: ${nMax} adapters need a batch of at least ${nMax} rows (have ${batch})`);

  const base = randomGpt2(shape, 3);
  const config = { peft_type: "LORA", r: rank, lora_alpha: 2 * rank, target_modules: ["c_attn"], fan_in_fan_out: true };
  const names = Array.from({ length: nMax }, (_, i) => `a${i}`);
  const many = new PeftModel(base);
  names.forEach((n, i) => addRandomLora(many, n, config, i + 1));
  const single = new PeftModel(base);
  addRandomLora(single, "a0", config, 1); // same seed: the same tensors as many's a0
  const merged = new PeftModel(base);
  addRandomLora(merged, "a0", config, 1);
  merged.mergeAdapter(["a0"]);
  for (const pm of [many, single, merged]) pm.sessionOptions = { threads, ep };

  const ids = BigInt64Array.from(randomValues(batch * seq, 99, 1), (v) => BigInt(1 + Math.floor(Math.abs(v) * (shape.vocab - 2))));
  const inputIds: Tensor<"int64"> = { dtype: "int64", shape: [batch, seq], data: ids };
  const attentionMask: Tensor<"int64"> = { dtype: "int64", shape: [batch, seq], data: new BigInt64Array(batch * seq).fill(1n) };
  const dtype = o.dtype ?? "float32";
  const fwd = { dtype };
  const variants: { name: string; run: () => Promise<Tensor> }[] = [
    { name: "merged", run: () => merged.forward({ inputIds, attentionMask }, fwd) },
    { name: "unmerged", run: () => single.forward({ inputIds, attentionMask }, fwd) },
    ...counts.map((n) => ({
      name: `mixed${n}`,
      run: () => many.forward({ inputIds, attentionMask, adapterNames: Array.from({ length: batch }, (_, r) => names[r % n]!) }, fwd),
    })),
  ];
  const outputs = new Map<string, Tensor>();
  const times = new Map<string, number[]>(variants.map((v) => [v.name, []]));
  const cpu = new Map<string, number[]>(variants.map((v) => [v.name, []]));
  try {
    for (const v of variants) {
      const t0 = performance.now();
      for (let i = 0; i < warmup; i++) outputs.set(v.name, await v.run());
      say(`${v.name}: session + ${warmup} warm-up run(s) ${((performance.now() - t0) / 1e3).toFixed(1)} s`);
    }
    for (let r = 0; r < repeat; r++) {
      for (let j = 0; j < variants.length; j++) {
        const v = variants[(r + j) % variants.length]!;
        const c0 = process.cpuUsage();
        const t0 = performance.now();
        await v.run();
        times.get(v.name)!.push(performance.now() - t0);
        const c = process.cpuUsage(c0);
        cpu.get(v.name)!.push((c.user + c.system) / 1e3);
      }
      say(`round ${r + 1}: ${variants.map((v) => `${v.name} ${times.get(v.name)!.at(-1)!.toFixed(0)} ms`).join(", ")}`);
    }
  } finally {
    await Promise.all([many.dispose(), single.dispose(), merged.dispose()]);
  }
  const tokens = batch * seq;
  const timing = (name: string) => timingOf(times.get(name)!, cpu.get(name)!, tokens);
  const m = timing("merged");
  const rowsOfA0 = (n: number) => Array.from({ length: batch }, (_, r) => r).filter((r) => r % n === 0);
  return {
    shape,
    dtype,
    batch,
    seq,
    rank,
    repeat,
    merged: m,
    unmerged: timing("unmerged"),
    mixed: counts.map((n) => {
      const t = timing(`mixed${n}`);
      return {
        adapters: n,
        ...t,
        ratioToMerged: Math.round((t.tokensPerSecond / m.tokensPerSecond) * 1000) / 1000,
        cpuRatioToMerged: Math.round((m.bestCpuMs / t.bestCpuMs) * 1000) / 1000,
        maxAbsDiffVsMerged: maxAbsDiffRows(outputs.get(`mixed${n}`)!, outputs.get("merged")!, rowsOfA0(n)),
      };
    }),
  };
}

function parseCounts(v: string): number[] {
  const out = v.split(",").map((p) => Number(p.trim()));
  if (out.some((n) => !Number.isInteger(n) || n < 1)) throw new InvalidArgumentError(`--adapters must be positive integers separated by commas, got '${v}'`);
  return out;
}

export function register(program: Command): void {
  program
    .command("infer")
    .description("mixed-adapter batches (one base + N LoRA adapters, N = 1, 8, 64) vs the same batch on a merged adapter: tokens/s and ratios")
    .option("--threads <n>", "intra-op threads (default: number of CPUs)", positiveInt("--threads"))
    .addOption(new Option("--ep <ep>", "execution provider").choices(["cpu", "webgpu"]).default("cpu"))
    .option("--batch <n>", "rows per batch (≥ the largest adapter count)", positiveInt("--batch"), 64)
    .option("--seq <n>", "sequence length", positiveInt("--seq"), 32)
    .option("--rank <n>", "LoRA rank", positiveInt("--rank"), 16)
    .option("--adapters <list>", "adapter counts of the mixed batches", parseCounts, [1, 8, 64])
    .option("--repeat <n>", "timed rounds", positiveInt("--repeat"), 5)
    .option("--warmup <n>", "untimed runs per variant", positiveInt("--warmup"), 1)
    .addOption(new Option("--dtype <dtype>", "compute dtype (float16: float16 weights and activations, float32 logits)").choices(["float32", "float16"]).default("float32"))
    .action(async (opts: { threads?: number; ep: ExecutionProvider; batch: number; seq: number; rank: number; adapters: number[]; repeat: number; warmup: number; dtype: "float32" | "float16" }) => {
      const threads = opts.threads ?? cpus().length;
      const t0 = performance.now();
      const r = await benchInfer({ ...opts, threads, onProgress: progress });
      emitResult({ bench: "infer", env: benchEnvironment({ threads, ep: opts.ep }), ...r, wallSeconds: Math.round((performance.now() - t0) / 100) / 10 });
    });
}
