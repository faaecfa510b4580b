/**
 * `npm run bench -- memory`: peak RSS of LoRA training (the `train-step` workloads) against an
 * estimate of what training must hold: the frozen weights, the trainable tensors with their
 * gradients and AdamW moments, and the activations the backward pass reads (every forward value a
 * backward node consumes, sized at the batch's shape, read off the training graph). RSS is
 * sampled after each stage, so the report shows where memory goes: weights in JavaScript, the
 * session (model bytes, onnxruntime's initializers and pre-packed weights), the first step
 * (activation arena), the optimizer.
 */
import { cpus } from "node:os";
import { performance } from "node:perf_hooks";
import { type Command, Option } from "commander";
import { evalDim } from "../src/graph/dim.js";
import { grad } from "../src/graph/autodiff.js";
import type { Value } from "../src/graph/types.js";
import { liveNodes } from "../src/graph/onnx.js";
import { PeftModel } from "../src/peft/peft-model.js";
import type { ExecutionProvider } from "../src/runtime/session.js";
import type { Tensor } from "../src/tensor.js";
import { taskLoss } from "../src/train/loss.js";
import { AdamW } from "../src/train/optim/adamw.js";
import { TrainStep } from "../src/train/step.js";
import { benchEnvironment, emitResult, positiveInt, progress } from "./env.js";
import { TRAIN_MODELS, type TrainModel, randomBatch, trainWorkload } from "./train-step.js";

/** Dims (`8`, `"batch"`, `"batch*seq"`, `"seq+4"`) evaluate with the graph layer's one evaluator. */
export { evalDim };

const MiB = 2 ** 20;
const mib = (bytes: number) => Math.round((bytes / MiB) * 10) / 10;

export interface MemoryBenchOptions {
  readonly model?: TrainModel;
  readonly threads?: number;
  readonly ep?: ExecutionProvider;
  readonly batch?: number;
  readonly seq?: number;
  readonly rank?: number;
  readonly steps?: number;
  /** onnxruntime's CPU memory arena (default true). */
  readonly memoryArena?: boolean;
  /** onnxruntime's memory pattern (default: the session default). */
  readonly memoryPattern?: boolean;
  /** Weight pre-packing (default true). */
  readonly prepacking?: boolean;
  readonly onProgress?: (msg: string) => void;
}

export interface ActivationEstimate {
  /** Forward values read by backward nodes (saved activations), MiB. */
  readonly savedMiB: number;
  /** The largest single tensor of the graph (a working buffer the backward also needs), MiB. */
  readonly largestMiB: number;
  /** Values whose size could not be evaluated (unknown dims). */
  readonly unsized: number;
}

export interface MemoryBenchResult {
  readonly model: TrainModel;
  readonly batch: number;
  readonly seq: number;
  readonly memoryArena: boolean;
  readonly memoryPattern: boolean;
  readonly prepacking: boolean;
  /** RSS (MiB) after each stage. */
  readonly rssMiB: Readonly<Record<string, number>>;
  /** Peak RSS of the process (MiB), from getrusage. */
  readonly peakRssMiB: number;
  readonly estimateMiB: {
    readonly weights: number;
    readonly initializers: number;
    /** Trainable tensors, their gradients and the two AdamW moments (4 copies). */
    readonly trainableWithOptimizer: number;
    readonly activations: ActivationEstimate;
    /** weights + trainableWithOptimizer + saved activations + largest buffer. */
    readonly total: number;
  };
  /** peakRssMiB / estimate total. */
  readonly peakOverEstimate: number;
  /** peak − RSS before anything was built: what training added to the process. */
  readonly addedByTrainingMiB: number;
  readonly addedOverEstimate: number;
}

const BYTES: Record<string, number> = { float32: 4, float64: 8, float16: 2, bfloat16: 2, int64: 8, int32: 4, int16: 2, int8: 1, uint8: 1, bool: 1 };

function bytesOf(v: Value, symbols: Readonly<Record<string, number>>): number | null {
  let n = 1;
  for (const d of v.shape) {
    const x = evalDim(d, symbols);
    if (x === null) return null;
    n *= x;
  }
  return n * (BYTES[v.dtype] ?? 4);
}

/**
 * Saved activations of a training graph: forward node outputs (scope not under `grad`) read by
 * a backward node (scope under `grad`), each counted once.
 */
export function activationEstimate(nodes: ReturnType<typeof liveNodes>, symbols: Readonly<Record<string, number>>): ActivationEstimate {
  const isGrad = (name: string) => name === "grad" || name.startsWith("grad/") || name.startsWith("grad.");
  const saved = new Map<number, Value>();
  let largest = 0;
  let unsized = 0;
  for (const n of nodes) {
    for (const o of n.outputs) largest = Math.max(largest, bytesOf(o, symbols) ?? 0);
    if (!isGrad(n.name)) continue;
    for (const i of n.inputs) if (i.kind === "node" && i.producer && !isGrad(i.producer.name)) saved.set(i.id, i);
  }
  let total = 0;
  for (const v of saved.values()) {
    const b = bytesOf(v, symbols);
    if (b === null) unsized++;
    else total += b;
  }
  return { savedMiB: mib(total), largestMiB: mib(largest), unsized };
}

export async function benchMemory(o: MemoryBenchOptions = {}): Promise<MemoryBenchResult> {
  const modelName = o.model ?? "gpt2-small";
  const threads = o.threads ?? cpus().length;
  const ep = o.ep ?? "cpu";
  const steps = o.steps ?? 2;
  const memoryArena = o.memoryArena ?? true;
  const memoryPattern = o.memoryPattern ?? false;
  const prepacking = o.prepacking ?? true;
  const say = o.onProgress ?? (() => undefined);
  const rss: Record<string, number> = {};
  const mark = (stage: string) => {
    rss[stage] = mib(process.memoryUsage().rss);
    say(`${stage}: RSS ${rss[stage]} MiB`);
  };
  mark("start");
  const start = rss.start!;

  const w = trainWorkload(modelName, o);
  let weightBytes = 0;
  const seen = new Set<unknown>();
  for (const k of w.model.weights.keys()) {
    const t = w.model.weights.get(k);
    if (seen.has(t.data)) continue; // tied weights are one tensor
    seen.add(t.data);
    weightBytes += t.data.byteLength;
  }
  mark("weights");

  // the training graph, as TrainStep builds it, for the activation estimate
  const pm = PeftModel.create(w.model, w.peft, "default", { seed: 0 });
  const built = pm.buildGraph({ training: true, dropout: false });
  const g = built.graph;
  const labels = g.input("labels", "int64", w.task === "causal-lm" ? ["batch", "seq"] : ["batch"]);
  const loss = taskLoss(w.task, built.outputs.logits, labels, 0);
  g.output(loss, "loss");
  const names = [...built.trainable.keys()];
  grad(loss, names.map((n) => g.inputs.find((v) => v.name === n)!)).forEach((gv, i) => g.output(gv, `grad::${names[i]!}`));
  const nodes = liveNodes(g);
  const used = new Set<number>(nodes.flatMap((n) => n.inputs.map((i) => i.id)));
  const initializerBytes = g.initializers.filter((v) => used.has(v.id)).reduce((s, v) => s + v.data!.data.byteLength, 0);
  const acts = activationEstimate(nodes, { batch: w.batch, seq: w.seq });
  let trainable = 0;
  for (const t of built.trainable.values()) trainable += t.data.byteLength;
  mark("graph");

  const t0 = performance.now();
  const step = await TrainStep.create(pm, { task: w.task, dropout: false, session: { threads, ep, memoryArena, memoryPattern, prepacking } });
  mark("session");
  say(`session created in ${((performance.now() - t0) / 1e3).toFixed(1)} s`);
  const batch = randomBatch(w);
  const params = new Map<string, Tensor>();
  for (const [k, t] of step.initial) params.set(k, { dtype: "float32", shape: t.shape, data: Float32Array.from(t.data as Float32Array) });
  const opt = new AdamW(step.names.map((n) => ({ name: n, data: params.get(n)!.data as Float32Array })), { lr: 1e-4 });
  try {
    for (let i = 0; i < steps; i++) {
      const r = await step.run(batch, params);
      mark(`step${i + 1}`);
      opt.step(new Map([...r.grads].map(([k, v]) => [k, v as Float32Array])));
      mark(`step${i + 1}+adamw`);
    }
  } finally {
    await step.release();
  }
  const peak = mib(process.resourceUsage().maxRSS * 1024);
  const trainableWithOptimizer = mib(4 * trainable);
  const total = mib(weightBytes) + trainableWithOptimizer + acts.savedMiB + acts.largestMiB;
  return {
    model: modelName,
    batch: w.batch,
    seq: w.seq,
    memoryArena,
    memoryPattern,
    prepacking,
    rssMiB: rss,
    peakRssMiB: peak,
    estimateMiB: { weights: mib(weightBytes), initializers: mib(initializerBytes), trainableWithOptimizer, activations: acts, total: Math.round(total * 10) / 10 },
    peakOverEstimate: Math.round((peak / total) * 100) / 100,
    addedByTrainingMiB: Math.round((peak - start) * 10) / 10,
    addedOverEstimate: Math.round(((peak - start) / total) * 100) / 100,
  };
}

export function register(program: Command): void {
  program
    .command("memory")
    .description("peak RSS of a LoRA training step vs weights + trainable/optimizer state + saved activations, with RSS per stage")
    .addOption(new Option("--model <name>", "workload (as train-step)").choices([...TRAIN_MODELS]).default("gpt2-small"))
    .option("--threads <n>", "intra-op threads (default: number of CPUs)", positiveInt("--threads"))
    .addOption(new Option("--ep <ep>", "execution provider").choices(["cpu", "webgpu"]).default("cpu"))
    .option("--batch <n>", "batch size (default 8, use-lite 32)", positiveInt("--batch"))
    .option("--seq <n>", "sequence length (default 128, use-lite 32)", positiveInt("--seq"))
    .option("--steps <n>", "training steps (each followed by an AdamW update)", positiveInt("--steps"), 2)
    .option("--no-memory-arena", "disable onnxruntime's CPU memory arena")
    .option("--memory-pattern", "enable onnxruntime's memory pattern (off by default in peft-ts sessions)")
    .option("--no-prepacking", "disable weight pre-packing (less memory, slower products)")
    .action(async (opts: { model: TrainModel; threads?: number; ep: ExecutionProvider; batch?: number; seq?: number; steps: number; memoryArena: boolean; memoryPattern?: boolean; prepacking: boolean }) => {
      const threads = opts.threads ?? cpus().length;
      const t0 = performance.now();
      const r = await benchMemory({ ...opts, threads, onProgress: progress });
      emitResult({ bench: "memory", env: benchEnvironment({ threads, ep: opts.ep }), ...r, wallSeconds: Math.round((performance.now() - t0) / 100) / 10 });
    });
}
