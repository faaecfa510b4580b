/**
 * `npm run bench -- placement`: where onnxruntime 1.30's WebGPU execution provider would run each
 * node of a LoRA training step (forward + loss + gradients, as `TrainStep` builds it) and of the
 * forward (logits) graph, predicted statically (`predictWebgpuPlacement`, no GPU needed): nodes on
 * the CPU per op type and reason, and the host ↔ GPU copies per step with their bytes at the
 * workload's batch × seq. Models and shapes as `bench train-step` (`gpt2-small` batch 8 × 128,
 * `tiny`, `use-lite` batch 32 × 32; LoRA r 16, dropout off unless `--dropout`). Each graph is
 * predicted as built and after `lowerForWebgpu`, the rewrite `CompiledGraph.create` applies on
 * webgpu (`lowered`: what a webgpu session actually runs).
 */
import { performance } from "node:perf_hooks";
import { type Command, Option } from "commander";
import { grad } from "../src/graph/autodiff.js";
import type { Graph } from "../src/graph/graph.js";
import { PeftModel } from "../src/peft/peft-model.js";
import { type WebgpuCrossing, type WebgpuPlacementPrediction, describeWebgpuCpuNodes, predictWebgpuPlacement } from "../src/runtime/webgpu-kernels.js";
import { type WebgpuLoweringResult, lowerForWebgpu } from "../src/runtime/webgpu-lowering.js";
import { GRAD_PREFIX, buildLossGraph } from "../src/train/step.js";
import { benchEnvironment, emitResult, positiveInt, progress } from "./env.js";
import { TRAIN_MODELS, type TrainModel, trainWorkload } from "./train-step.js";

export interface PlacementBenchOptions {
  readonly model?: TrainModel;
  readonly batch?: number;
  readonly seq?: number;
  readonly rank?: number;
  /** Dropout layers in the training graph (default false, as `bench train-step`). */
  readonly dropout?: boolean;
  /** How many of the largest copies to list per graph (default 8). */
  readonly top?: number;
}

export interface GraphPlacementReport {
  readonly nodes: number;
  readonly gpuNodes: number;
  readonly cpuNodes: number;
  readonly cpuByOp: Readonly<Record<string, number>>;
  readonly cpuByReason: Readonly<Record<string, number>>;
  /** `op — reason (detail) ×count`, most frequent first. */
  readonly cpuGroups: readonly string[];
  readonly crossingsPerStep: number;
  readonly crossingsByKind: Readonly<Record<string, number>>;
  /** Copies host → GPU and GPU → host (each GPU → host read drains the GPU queue). */
  readonly toDevice: number;
  readonly toHost: number;
  readonly bytesPerStep: number;
  readonly bytesByKind: Readonly<Record<string, number>>;
  readonly unknownSizeCrossings: number;
  readonly largest: readonly { value: string; kind: string; direction: string; dtype: string | null; shape: string; bytes: number | null; producer: string | null }[];
}

/** One graph as built (`asBuilt`, what a CPU session runs) and after the WebGPU lowering pass. */
export interface LoweredPlacementReport {
  readonly asBuilt: GraphPlacementReport;
  readonly lowered: GraphPlacementReport;
  /** Nodes rewritten per op, and nodes of those ops left as they were (with the reason). */
  readonly rewrites: Pick<WebgpuLoweringResult, "lowered" | "skipped" | "nodesBefore" | "nodesAfter">;
}

export interface PlacementBenchResult {
  readonly model: TrainModel;
  readonly batch: number;
  readonly seq: number;
  readonly rank: number;
  readonly dropout: boolean;
  readonly trainStep: LoweredPlacementReport;
  readonly forward: LoweredPlacementReport;
}

function report(p: WebgpuPlacementPrediction, top: number): GraphPlacementReport {
  const s = p.summary;
  const largest = [...p.crossings]
    .sort((a: WebgpuCrossing, b: WebgpuCrossing) => (b.bytes ?? -1) - (a.bytes ?? -1))
    .slice(0, top)
    .map((c) => ({ value: c.value, kind: c.kind, direction: c.direction, dtype: c.dtype, shape: `[${(c.shape ?? []).map((d) => (d === null ? "?" : String(d))).join(", ")}]`, bytes: c.bytes, producer: c.producer }));
  return {
    nodes: s.nodes,
    gpuNodes: s.gpuNodes,
    cpuNodes: s.cpuNodes,
    cpuByOp: s.cpuByOp,
    cpuByReason: s.cpuByReason,
    cpuGroups: describeWebgpuCpuNodes(p),
    crossingsPerStep: s.crossings,
    crossingsByKind: s.crossingsByKind,
    toDevice: s.toDevice,
    toHost: s.toHost,
    bytesPerStep: s.bytes,
    bytesByKind: s.bytesByKind,
    unknownSizeCrossings: s.unknownSizeCrossings,
    largest,
  };
}

/** The training-step graph exactly as `TrainStep.create` builds it, without creating a session. */
function trainStepGraph(pm: PeftModel, task: "causal-lm" | "seq-cls", dropout: boolean): Graph {
  const { graph, loss, names, params } = buildLossGraph(pm, { task, dropout, seed: 0 });
  grad(loss, params).forEach((gv, i) => graph.output(gv, GRAD_PREFIX + names[i]!));
  return graph;
}

export function benchPlacement(o: PlacementBenchOptions = {}): PlacementBenchResult {
  const modelName = o.model ?? "gpt2-small";
  const w = trainWorkload(modelName, o);
  const pm = PeftModel.create(w.model, w.peft, "default", { seed: 0 });
  const dims = { batch: w.batch, seq: w.seq };
  const top = o.top ?? 8;
  const both = (g: Graph): LoweredPlacementReport => {
    const l = lowerForWebgpu(g, { annotate: true });
    return {
      asBuilt: report(predictWebgpuPlacement(g, { dims }), top),
      lowered: report(predictWebgpuPlacement(l.bytes, { dims }), top),
      rewrites: { lowered: l.lowered, skipped: l.skipped, nodesBefore: l.nodesBefore, nodesAfter: l.nodesAfter },
    };
  };
  const trainStep = both(trainStepGraph(pm, w.task, o.dropout ?? false));
  const fwd = pm.buildGraph({});
  fwd.graph.output(fwd.outputs.logits, "logits");
  return { model: modelName, batch: w.batch, seq: w.seq, rank: o.rank ?? 16, dropout: o.dropout ?? false, trainStep, forward: both(fwd.graph) };
}

export function register(program: Command): void {
  program
    .command("placement")
    .description("predicted WebGPU placement (onnxruntime 1.30, no GPU needed): CPU nodes per op, host↔GPU copies and bytes per step, training step and forward, as built and after the WebGPU lowering pass")
    .addOption(new Option("--model <name>", "workload").choices([...TRAIN_MODELS]).default("gpt2-small"))
    .option("--batch <n>", "batch size (default 8, use-lite 32)", positiveInt("--batch"))
    .option("--seq <n>", "sequence length (default 128, use-lite 32)", positiveInt("--seq"))
    .option("--rank <n>", "LoRA rank", positiveInt("--rank"), 16)
    .option("--dropout", "keep the dropout layers in the training graph")
    .option("--top <n>", "largest copies listed per graph", positiveInt("--top"), 8)
    .action((opts: { model: TrainModel; batch?: number; seq?: number; rank: number; dropout?: boolean; top: number }) => {
      const t0 = performance.now();
      progress(`${opts.model}: building the training-step and forward graphs`);
      const r = benchPlacement(opts);
      emitResult({ bench: "placement", env: benchEnvironment({ threads: 1, ep: "webgpu" }), ...r, wallSeconds: Math.round((performance.now() - t0) / 100) / 10 });
    });
}
