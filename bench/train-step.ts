/**
 * `npm run bench -- train-step`: one LoRA training step (loss + LoRA gradients in one
 * `session.run`, `TrainStep`) of a model built from random weights, timed, with its achieved model
 * FLOP/s and MFU = achieved / plain-MatMul ceiling measured in the same run at the same threads.
 *
 * Models: `gpt2-small` (12 layers, d 768, vocab 50257; LoRA r 16 on `c_attn`, batch 8 × seq 128,
 * causal LM), `tiny` (GPT-2 L4 d256 vocab 8192, same LoRA and batch), `use-lite` (the installed
 * USE-lite with a 2-way head, LoRA r 16 on q/k/v/attention output, seq-cls, batch 32 × seq 32).
 *
 * `--resident` times `FusedAdamWStep` instead: the same step plus gradient clipping (max norm 1,
 * the Hugging Face Trainer default) and the AdamW update in the graph, with parameters and moments
 * kept in onnxruntime between steps (GPU buffers with `--ep webgpu`). The FLOP count is the same
 * (the update's elementwise work is not counted).
 */
import { mkdirSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { cpus, tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { type Command, Option } from "commander";
import type { LoadedModel } from "../src/models/load.js";
import { PeftModel } from "../src/peft/peft-model.js";
import type { ExecutionProvider } from "../src/runtime/session.js";
import type { Tensor } from "../src/tensor.js";
import { FusedAdamWStep } from "../src/train/fused-step.js";
import { type Batch, TrainStep } from "../src/train/step.js";
import { benchEnvironment, emitResult, positiveInt, progress } from "./env.js";
import { type MatmulCeiling, type MatmulShape, PlainCeiling, mixCeilingGflops } from "./matmul.js";
import { GPT2_SMALL, GPT2_TINY, type Gpt2Shape, type StepFlops, gpt2Flops, randomGpt2, useLiteClassifier, useLiteFlops } from "./models.js";
import { type ProfileSummary, summarizeProfile } from "./profile.js";

export const TRAIN_MODELS = ["gpt2-small", "tiny", "use-lite"] as const;
export type TrainModel = (typeof TRAIN_MODELS)[number];

export interface TrainStepBenchOptions {
  readonly model?: TrainModel;
  readonly threads?: number;
  readonly ep?: ExecutionProvider;
  /** Timed steps (default 3 for gpt2-small, 10 otherwise). */
  readonly steps?: number;
  /** Untimed steps first (default 1). */
  readonly warmup?: number;
  readonly batch?: number;
  readonly seq?: number;
  /** LoRA rank (default 16). */
  readonly rank?: number;
  /** onnxruntime's memory pattern (default: the session default). */
  readonly memoryPattern?: boolean;
  /** Let idle onnxruntime worker threads spin (default false, the session default). */
  readonly spinning?: boolean;
  /** Measure the matmul ceiling in the same run, interleaved with the timed steps (default true). */
  readonly ceiling?: boolean;
  /** Ceiling rounds after each timed step (default 1); a round runs the forward products of one step. */
  readonly ceilingRounds?: number;
  /** Write an onnxruntime profile of the timed steps and summarise it per op type. */
  readonly profile?: boolean;
  /** Keep the profile file in this folder (default: a temporary folder, removed afterwards). */
  readonly profileDir?: string;
  /** Time the fused step (clipping + AdamW in the graph, state kept in onnxruntime) instead of loss + gradients. */
  readonly resident?: boolean;
  /**
   * Compute dtype of the frozen model (default float32). `float16`: mixed precision (float32 LoRA
   * master weights and gradients, docs/training.md); the ceiling is then a float16 MatMul.
   */
  readonly dtype?: "float32" | "float16";
  readonly onProgress?: (msg: string) => void;
}

export interface TrainStepBenchResult {
  readonly model: TrainModel;
  readonly shape: Readonly<Record<string, unknown>>;
  readonly batch: number;
  readonly seq: number;
  readonly rank: number;
  readonly loraTargets: readonly string[];
  readonly trainableParams: number;
  readonly steps: number;
  readonly warmup: number;
  /** PeftModel.create (adapter initialisation). */
  readonly buildSeconds: number;
  /** TrainStep.create: graph and its backward, ONNX export, onnxruntime session (optimisation, pre-packing). */
  readonly sessionSeconds: number;
  readonly stepMs: { readonly best: number; readonly median: number; readonly all: readonly number[] };
  /** Process CPU time per step (all threads), best and median: robust to other work on the machine. */
  readonly cpuMs: { readonly best: number; readonly median: number };
  readonly tokensPerSecond: number;
  readonly flops: StepFlops & { readonly perStep: number };
  readonly achievedGflops: number;
  /** perStep / (best CPU time / threads). */
  readonly achievedCpuGflops: number;
  readonly loss: number;
  readonly memoryPattern: boolean;
  readonly spinning: boolean;
  /** The fused resident step was timed (optimizer update included, state kept in onnxruntime). */
  readonly resident: boolean;
  /** Compute dtype of the frozen model (the ceiling's MatMuls use it too). */
  readonly dtype: "float32" | "float16";
  /** Peak RSS (getrusage maxRSS) after the first timed step, before the ceiling's sessions exist. */
  readonly peakRssMiB: number;
  readonly ceiling?: {
    /**
     * The ceiling: the step's forward products (each shape as many times as the step runs it)
     * as plain MatMuls back to back, best round: Σ flops / best round time.
     */
    readonly mixGflops: number;
    /** The same from the median round. */
    readonly mixMedianGflops: number;
    /** The same from CPU time (least-CPU round, per thread). */
    readonly mixCpuGflops: number;
    /** Each shape's best single run, weighted by the step's FLOPs in it (luckier than a whole round under a fluctuating load). */
    readonly mixBestShapesGflops: number;
    /** Σ flops / Σ best time over the distinct shapes, each once (as `bench matmul`). */
    readonly shapeSetGflops: number;
    /** Rounds timed (interleaved with the steps). */
    readonly rounds: number;
    readonly shapes: MatmulCeiling["shapes"];
  };
  /** Best step's achieved FLOP/s ÷ ceiling.mixGflops: the headline MFU. */
  readonly mfu?: number;
  /** Median step ÷ ceiling.mixMedianGflops. */
  readonly mfuMedian?: number;
  /**
   * achievedCpuGflops ÷ ceiling.mixCpuGflops: the ratio with the cores to ourselves. It ignores
   * idle time (a waiting thread costs no CPU), so it is an upper bound of the idle-machine MFU.
   */
  readonly mfuCpu?: number;
  /** achieved ÷ ceiling.mixBestShapesGflops and ÷ ceiling.shapeSetGflops. */
  readonly mfuBestShapes?: number;
  readonly mfuShapeSet?: number;
  readonly profile?: ProfileSummary & { readonly file: string | null };
}

interface Workload {
  readonly model: LoadedModel;
  readonly shape: Record<string, unknown>;
  readonly task: "causal-lm" | "seq-cls";
  readonly peft: Record<string, unknown>;
  readonly loraTargets: readonly string[];
  readonly batch: number;
  readonly seq: number;
  readonly vocab: number;
  readonly numLabels: number;
  readonly flops: StepFlops;
  /** Forward matmul shapes of one step at `batch·seq` tokens, with how many times each runs. */
  readonly shapes: readonly (MatmulShape & { readonly count: number })[];
}

function gpt2Workload(s: Gpt2Shape, batch: number, seq: number, r: number): Workload {
  const m = batch * seq;
  const d = s.hidden;
  return {
    model: randomGpt2(s),
    shape: { arch: "gpt2", ...s },
    task: "causal-lm",
    peft: { peft_type: "LORA", r, lora_alpha: 2 * r, target_modules: ["c_attn"], fan_in_fan_out: true, task_type: "CAUSAL_LM" },
    loraTargets: ["c_attn"],
    batch,
    seq,
    vocab: s.vocab,
    numLabels: 0,
    flops: gpt2Flops(s, seq, r),
    shapes: [
      { name: "c_attn", m, k: d, n: 3 * d, count: s.layers },
      { name: "attn_proj", m, k: d, n: d, count: s.layers },
      { name: "mlp_up", m, k: d, n: 4 * d, count: s.layers },
      { name: "mlp_down", m, k: 4 * d, n: d, count: s.layers },
      { name: "lm_head", m, k: d, n: s.vocab, count: 1 },
    ],
  };
}

function useLiteWorkload(batch: number, seq: number, r: number): Workload {
  const model = useLiteClassifier(2);
  const c = model.config;
  const m = batch * seq;
  const [d0, d1] = [c.embeddingSize, c.hiddenSize];
  return {
    model,
    shape: { arch: "use-lite", layers: c.numLayers, embedding: d0, hidden: d1, intermediate: c.intermediateSize, heads: c.numHeads, vocab: c.vocabSize },
    task: "seq-cls",
    peft: { peft_type: "LORA", r, lora_alpha: 2 * r, target_modules: ["query", "key", "value", "attention.output.dense"], task_type: "SEQ_CLS" },
    loraTargets: ["query", "key", "value", "attention.output.dense"],
    batch,
    seq,
    vocab: c.vocabSize,
    numLabels: 2,
    flops: useLiteFlops(c, seq, r, 2, ["q", "k", "v", "o"]),
    shapes: [
      { name: "qkv0", m, k: d0, n: d0, count: 3 },
      { name: "o0_res0", m, k: d0, n: d1, count: 2 },
      { name: "qkvo1", m, k: d1, n: d1, count: 4 },
      { name: "ffn_up", m, k: d1, n: c.intermediateSize, count: c.numLayers },
      { name: "ffn_down", m, k: c.intermediateSize, n: d1, count: c.numLayers },
    ],
  };
}

export function trainWorkload(model: TrainModel, opts: { batch?: number; seq?: number; rank?: number } = {}): Workload {
  const r = opts.rank ?? 16;
  if (model === "use-lite") return useLiteWorkload(opts.batch ?? 32, opts.seq ?? 32, r);
  return gpt2Workload(model === "tiny" ? GPT2_TINY : GPT2_SMALL, opts.batch ?? 8, opts.seq ?? 128, r);
}

/** Deterministic token ids in [1, vocab) and labels (next-token = the ids, or classes). */
export function randomBatch(w: { batch: number; seq: number; vocab: number; task: "causal-lm" | "seq-cls"; numLabels: number }, seed = 7) {
  let s = seed >>> 0 || 1;
  const next = () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return s >>> 0;
  };
  const n = w.batch * w.seq;
  const ids = BigInt64Array.from({ length: n }, () => BigInt(1 + (next() % (w.vocab - 1))));
  const inputIds: Tensor<"int64"> = { dtype: "int64", shape: [w.batch, w.seq], data: ids };
  const attentionMask: Tensor<"int64"> = { dtype: "int64", shape: [w.batch, w.seq], data: new BigInt64Array(n).fill(1n) };
  const labels: Tensor<"int64"> =
    w.task === "causal-lm"
      ? { dtype: "int64", shape: [w.batch, w.seq], data: ids.slice() }
      : { dtype: "int64", shape: [w.batch], data: BigInt64Array.from({ length: w.batch }, () => BigInt(next() % w.numLabels)) };
  return { inputIds, attentionMask, labels };
}

function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
}

const r1 = (v: number, d = 1) => Math.round(v * 10 ** d) / 10 ** d;

function newestProfile(dir: string): string {
  const files = readdirSync(dir).filter((f) => f.startsWith("train") && f.endsWith(".json")).sort();
  if (files.length === 0) throw new Error(`onnxruntime wrote no profile in ${dir}`);
  return join(dir, files[files.length - 1]!);
}

export async function benchTrainStep(o: TrainStepBenchOptions = {}): Promise<TrainStepBenchResult> {
  const modelName = o.model ?? "gpt2-small";
  const threads = o.threads ?? cpus().length;
  const ep = o.ep ?? "cpu";
  const steps = o.steps ?? (modelName === "gpt2-small" ? 3 : 10);
  const warmup = o.warmup ?? 1;
  const say = o.onProgress ?? (() => undefined);
  const w = trainWorkload(modelName, o);
  const t0 = performance.now();
  const pm = PeftModel.create(w.model, w.peft, "default", { seed: 0 });
  const profileDir = o.profile || o.profileDir ? (o.profileDir ?? mkdtempSync(join(tmpdir(), "peft-bench-profile-"))) : null;
  if (o.profileDir) mkdirSync(o.profileDir, { recursive: true });
  const session = {
    threads,
    ep,
    spinning: o.spinning ?? false,
    ...(o.memoryPattern === undefined ? {} : { memoryPattern: o.memoryPattern }),
    ...(profileDir ? { profilePrefix: join(profileDir, "train") } : {}),
  };
  const t1 = performance.now();
  const dtype = o.dtype ?? "float32";
  const step = o.resident
    ? await FusedAdamWStep.create(pm, { task: w.task, dropout: false, session, lr: 1e-4, maxGradNorm: 1, dtype })
    : await TrainStep.create(pm, { task: w.task, dropout: false, session, dtype });
  const t2 = performance.now();
  say(`${modelName}${o.resident ? " (resident fused AdamW step)" : ""}: graph built in ${((t1 - t0) / 1e3).toFixed(1)} s, session in ${((t2 - t1) / 1e3).toFixed(1)} s`);
  const batch = randomBatch(w);
  const params = new Map(step.initial);
  const runStep = (b: Batch) => (step instanceof FusedAdamWStep ? step.run(b) : step.run(b, params));
  let trainable = 0;
  for (const t of step.initial.values()) trainable += t.data.length;
  const times: number[] = [];
  const cpu: number[] = [];
  let loss = Number.NaN;
  let peakRssMiB = 0;
  // the matmul ceiling is timed between the steps (same machine load), after the first timed step
  // (by then the arena and onnxruntime's memory pattern are allocated: the RSS peak is the step's)
  let ceiling: PlainCeiling | null = null;
  const rounds = o.ceilingRounds ?? 1;
  try {
    for (let i = 0; i < warmup + steps; i++) {
      const c0 = process.cpuUsage();
      const ts = performance.now();
      const res = await runStep(batch);
      const ms = performance.now() - ts;
      const c = process.cpuUsage(c0);
      loss = res.loss;
      if (i >= warmup) {
        times.push(ms);
        cpu.push((c.user + c.system) / 1e3);
      }
      say(`${i < warmup ? "warm-up" : "step"} ${i < warmup ? i + 1 : i - warmup + 1}: ${ms.toFixed(0)} ms (CPU ${((c.user + c.system) / 1e3).toFixed(0)} ms), loss ${res.loss.toFixed(4)}`);
      if (i === warmup) {
        peakRssMiB = r1(process.resourceUsage().maxRSS / 1024, 0);
        if (o.ceiling !== false) ceiling = await PlainCeiling.create(w.shapes, { threads, ep, dtype });
      }
      if (ceiling && i >= warmup) for (let r = 0; r < rounds; r++) await ceiling.round(w.shapes.map((x) => x.count));
    }
    if (profileDir) step.session.endProfiling();
  } catch (e) {
    await ceiling?.release();
    throw e;
  } finally {
    await step.release();
  }
  const profileFile = profileDir ? newestProfile(profileDir) : null;
  const profile = profileFile ? { file: o.profileDir ? profileFile : null, ...summarizeProfile(profileFile, { skipRuns: warmup }) } : undefined;
  if (profileDir && !o.profileDir) rmSync(profileDir, { recursive: true, force: true });

  const tokens = w.batch * w.seq;
  const best = Math.min(...times);
  const perStep = w.flops.trainPerToken * tokens;
  const achieved = perStep / (best / 1e3) / 1e9;
  const bestCpu = Math.min(...cpu);
  const achievedCpu = perStep / (bestCpu / 1e3 / threads) / 1e9;
  const result: TrainStepBenchResult = {
    model: modelName,
    shape: w.shape,
    batch: w.batch,
    seq: w.seq,
    rank: o.rank ?? 16,
    loraTargets: w.loraTargets,
    trainableParams: trainable,
    steps,
    warmup,
    buildSeconds: r1((t1 - t0) / 1e3, 2),
    sessionSeconds: r1((t2 - t1) / 1e3, 2),
    stepMs: { best: r1(best), median: r1(median(times)), all: times.map((t) => r1(t)) },
    cpuMs: { best: r1(bestCpu), median: r1(median(cpu)) },
    tokensPerSecond: r1(tokens / (best / 1e3), 0),
    flops: { ...w.flops, perStep },
    achievedGflops: r1(achieved, 2),
    achievedCpuGflops: r1(achievedCpu, 2),
    loss,
    memoryPattern: o.memoryPattern ?? false,
    spinning: o.spinning ?? false,
    resident: o.resident ?? false,
    dtype,
    peakRssMiB,
    ...(profile ? { profile } : {}),
  };
  if (!ceiling) return result;
  const c = ceiling.result();
  c.shapes.forEach((x) => say(`ceiling ${x.name} [${x.m}x${x.k}]·[${x.k}x${x.n}]: ${x.timings.plain!.gflops} GFLOP/s (CPU-time rate ${x.timings.plain!.cpuGflops})`));
  const mix = ceiling.mixResult();
  await ceiling.release();
  const bestShapes = mixCeilingGflops(c, w.shapes);
  const achievedMedian = perStep / (median(times) / 1e3) / 1e9;
  return {
    ...result,
    ceiling: {
      mixGflops: mix.bestGflops,
      mixMedianGflops: mix.medianGflops,
      mixCpuGflops: mix.cpuGflops,
      mixBestShapesGflops: bestShapes,
      shapeSetGflops: c.ceilingGflops,
      rounds: mix.rounds,
      shapes: c.shapes,
    },
    mfu: r1(achieved / mix.bestGflops, 3),
    mfuMedian: r1(achievedMedian / mix.medianGflops, 3),
    mfuCpu: r1(achievedCpu / mix.cpuGflops, 3),
    mfuBestShapes: r1(achieved / bestShapes, 3),
    mfuShapeSet: r1(achieved / c.ceilingGflops, 3),
  };
}

export function register(program: Command): void {
  program
    .command("train-step")
    .description("LoRA training step (loss + gradients in one session.run): step time, tokens/s, achieved FLOP/s, MFU vs the matmul ceiling, peak RSS")
    .addOption(new Option("--model <name>", "workload").choices([...TRAIN_MODELS]).default("gpt2-small"))
    .option("--threads <n>", "intra-op threads (default: number of CPUs)", positiveInt("--threads"))
    .addOption(new Option("--ep <ep>", "execution provider").choices(["cpu", "webgpu"]).default("cpu"))
    .option("--steps <n>", "timed steps (default 3 for gpt2-small, 10 otherwise)", positiveInt("--steps"))
    .option("--warmup <n>", "untimed steps first", positiveInt("--warmup"), 1)
    .option("--batch <n>", "batch size (default 8, use-lite 32)", positiveInt("--batch"))
    .option("--seq <n>", "sequence length (default 128, use-lite 32)", positiveInt("--seq"))
    .option("--rank <n>", "LoRA rank", positiveInt("--rank"), 16)
    .option("--no-ceiling", "skip the matmul ceiling (no MFU)")
    .option("--ceiling-rounds <n>", "ceiling rounds after each timed step (a round: the step's forward products as plain MatMuls)", positiveInt("--ceiling-rounds"), 1)
    .option("--memory-pattern", "enable onnxruntime's memory pattern (off by default in peft-ts sessions)")
    .option("--spinning", "let idle onnxruntime worker threads spin")
    .option("--profile", "profile the timed steps with onnxruntime and report kernel time per op type")
    .option("--profile-dir <dir>", "like --profile, keeping the trace JSON in <dir>")
    .option("--resident", "time the fused step: clipping + AdamW in the graph, parameters and moments kept in onnxruntime (GPU buffers on webgpu)")
    .addOption(new Option("--dtype <dtype>", "compute dtype of the frozen model (float16: mixed precision, float16 ceiling)").choices(["float32", "float16"]).default("float32"))
    .action(async (opts: { model: TrainModel; threads?: number; ep: ExecutionProvider; steps?: number; warmup: number; batch?: number; seq?: number; rank: number; ceiling: boolean; ceilingRounds: number; memoryPattern?: boolean; spinning?: boolean; profile?: boolean; profileDir?: string; resident?: boolean; dtype: "float32" | "float16" }) => {
      const threads = opts.threads ?? cpus().length;
      const t0 = performance.now();
      const r = await benchTrainStep({ ...opts, threads, onProgress: progress });
      emitResult({ bench: "train-step", env: benchEnvironment({ threads, ep: opts.ep }), ...r, wallSeconds: r1((performance.now() - t0) / 1e3) });
    });
}
