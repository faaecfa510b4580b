/**
 * Subspace training (Li et al. 2018): the parameters θ of a problem (named blocks, D values in
 * all) are θ₀ + P·d, and only d ∈ R^dim is trained. The projection (projection.ts), the problem's
 * forward pass, its loss and ∂loss/∂d are one graph; `SubspaceTrainer` runs it with the project's
 * AdamW, learning-rate schedules and gradient clipping.
 *
 * A `SubspaceProblem` builds its graph reading each block as θ₀ + δ(name) (δ: the block's slice of
 * P·d, reshaped). `classifierProblem` is a sequence classifier of any architecture through a
 * `ModelContext` whose `param` adds δ; tests build toy problems directly.
 */
import { ConfigError, GraphBuildError } from "../../errors.js";
import * as G from "../../graph/api.js";
import { grad } from "../../graph/autodiff.js";
import { crossEntropy } from "../../graph/composite.js";
import { Graph } from "../../graph/graph.js";
import type { Value } from "../../graph/types.js";
import { type ContextOptions, ModelContext, type WeightSource } from "../../models/context.js";
import type { LoadedModel } from "../../models/load.js";
import { CompiledGraph, type Feeds, type SessionOptions } from "../../runtime/session.js";
import { type Tensor, numel, tensor } from "../../tensor.js";
import { collate, type TokenizedExample } from "../../train/batch.js";
import { AdamW } from "../../train/optim/adamw.js";
import { clipGradNorm } from "../../train/optim/clip.js";
import { createSchedule } from "../../train/schedule.js";
import { type ProjectionKind, type ProjectionSpec, checkProjection, projectGraph, projectHost } from "./projection.js";

export const SUBSPACE_INPUT = "subspace_d";
export const SUBSPACE_OUTPUTS = { loss: "loss", metric: "metric", grad: "grad_d", delta: "theta_delta" } as const;

export interface SubspaceBlock {
  readonly name: string;
  readonly shape: readonly number[];
}

export interface SubspaceLayout {
  readonly blocks: readonly (SubspaceBlock & { readonly offset: number; readonly size: number })[];
  /** D: all the blocks' values. */
  readonly size: number;
}

export function subspaceLayout(blocks: readonly SubspaceBlock[]): SubspaceLayout {
  let offset = 0;
  const out = blocks.map((b) => {
    const size = numel(b.shape);
    const r = { name: b.name, shape: [...b.shape], offset, size };
    offset += size;
    return r;
  });
  if (new Set(blocks.map((b) => b.name)).size !== blocks.length) throw new ConfigError("subspace", "blocks", "block names must be unique");
  if (offset === 0) throw new ConfigError("subspace", "blocks", "no parameters to train");
  return { blocks: out, size: offset };
}

/** δ of a block (its slice of P·d, in the block's shape), or null when the name is not a block. */
export type DeltaFn = (name: string) => Value | null;

export interface SubspaceProblem {
  readonly blocks: readonly SubspaceBlock[];
  /**
   * Emits the problem's graph into `g` with every block read as θ₀ + delta(name). Returns the
   * scalar loss (mean over the batch) and a scalar metric (mean performance over the batch, e.g.
   * accuracy), and how many rows a batch of feeds has is the caller's business.
   */
  build(g: Graph, delta: DeltaFn, dtype: "float32" | "float64"): { loss: Value; metric: Value };
}

export interface SubspaceOptions {
  readonly projection: ProjectionKind;
  readonly dim: number;
  readonly seed: number;
  readonly dtype?: "float32" | "float64";
  readonly session?: SessionOptions;
}

export interface SubspaceFitConfig {
  readonly steps: number;
  readonly lr: number;
  /** Feeds of optimizer step `step` (0-based). */
  readonly batch: (step: number) => Feeds;
  readonly weightDecay?: number;
  /** Default constant. */
  readonly schedule?: "constant" | "linear" | "cosine";
  readonly warmupSteps?: number;
  /** Global norm clip (default 0: off). */
  readonly maxGradNorm?: number;
  readonly onStep?: (info: { step: number; totalSteps: number; loss: number; lr: number }) => void | Promise<void>;
}

/** Mean loss and metric over batches, weighted by rows. */
export interface SubspaceEval {
  readonly loss: number;
  readonly metric: number;
  readonly rows: number;
}

/** `subspace_d` and the P·d delta of each block, for a built graph. */
function buildSubspaceGraph(problem: SubspaceProblem, layout: SubspaceLayout, spec: ProjectionSpec, dtype: "float32" | "float64", withGrad: boolean): Graph {
  const g = new Graph("subspace");
  const d = g.input(SUBSPACE_INPUT, dtype, [spec.dim]);
  const flat = g.withScope("subspace", () => projectGraph(g, d, spec, dtype));
  const index = new Map(layout.blocks.map((b) => [b.name, b]));
  const cache = new Map<string, Value>();
  const used = new Set<string>();
  const delta: DeltaFn = (name) => {
    const b = index.get(name);
    if (!b) return null;
    used.add(name);
    let v = cache.get(name);
    if (!v) {
      const part = layout.blocks.length === 1 ? flat : G.slice(flat, [b.offset], [b.offset + b.size], [0]);
      v = G.reshape(part, b.shape);
      cache.set(name, v);
    }
    return v;
  };
  const { loss, metric } = problem.build(g, delta, dtype);
  const unused = layout.blocks.filter((b) => !used.has(b.name)).map((b) => b.name);
  if (unused.length > 0) throw new GraphBuildError("subspace", `the problem's graph never reads ${unused.slice(0, 3).join(", ")}${unused.length > 3 ? ` and ${unused.length - 3} more` : ""}`);
  g.output(loss, SUBSPACE_OUTPUTS.loss);
  g.output(metric, SUBSPACE_OUTPUTS.metric);
  if (withGrad) g.output(grad(loss, [d])[0]!, SUBSPACE_OUTPUTS.grad);
  return g;
}

export class SubspaceTrainer {
  /** The trained coordinates d (start at 0: θ = θ₀; float32 like every optimizer's parameters). Mutable. */
  readonly d: Float32Array;
  private readonly sessions = new Map<"train" | "eval", Promise<CompiledGraph>>();

  private constructor(
    readonly problem: SubspaceProblem,
    readonly layout: SubspaceLayout,
    readonly spec: ProjectionSpec,
    readonly options: SubspaceOptions,
  ) {
    this.d = new Float32Array(spec.dim);
  }

  static create(problem: SubspaceProblem, options: SubspaceOptions): SubspaceTrainer {
    const layout = subspaceLayout(problem.blocks);
    const spec: ProjectionSpec = { kind: options.projection, dim: options.dim, size: layout.size, seed: options.seed };
    checkProjection(spec);
    return new SubspaceTrainer(problem, layout, spec, options);
  }

  get dtype(): "float32" | "float64" {
    return this.options.dtype ?? "float32";
  }

  private compiled(kind: "train" | "eval"): Promise<CompiledGraph> {
    let s = this.sessions.get(kind);
    if (!s) {
      s = CompiledGraph.create(buildSubspaceGraph(this.problem, this.layout, this.spec, this.dtype, kind === "train"), this.options.session ?? {});
      this.sessions.set(kind, s);
      s.catch(() => this.sessions.delete(kind));
    }
    return s;
  }

  private dTensor(values: ArrayLike<number> = this.d): Tensor {
    return this.dtype === "float64" ? tensor("float64", [this.spec.dim], Float64Array.from(values)) : tensor("float32", [this.spec.dim], Float32Array.from(values));
  }

  /** Loss, metric and ∂loss/∂d for one batch (at `d`, default the current coordinates). */
  async lossAndGradient(feeds: Feeds, d?: ArrayLike<number>): Promise<{ loss: number; metric: number; grad: Float64Array }> {
    const s = await this.compiled("train");
    const out = await s.run({ ...feeds, [SUBSPACE_INPUT]: this.dTensor(d) }, [SUBSPACE_OUTPUTS.loss, SUBSPACE_OUTPUTS.metric, SUBSPACE_OUTPUTS.grad]);
    return {
      loss: Number(out[SUBSPACE_OUTPUTS.loss]!.data[0]),
      metric: Number(out[SUBSPACE_OUTPUTS.metric]!.data[0]),
      grad: Float64Array.from(out[SUBSPACE_OUTPUTS.grad]!.data as Float32Array),
    };
  }

  /** Loss and metric over batches (each weighted by its row count), without gradients. */
  async evaluate(batches: Iterable<{ feeds: Feeds; rows: number }>, d?: ArrayLike<number>): Promise<SubspaceEval> {
    const s = await this.compiled("eval");
    let loss = 0;
    let metric = 0;
    let rows = 0;
    for (const b of batches) {
      const out = await s.run({ ...b.feeds, [SUBSPACE_INPUT]: this.dTensor(d) }, [SUBSPACE_OUTPUTS.loss, SUBSPACE_OUTPUTS.metric]);
      loss += Number(out[SUBSPACE_OUTPUTS.loss]!.data[0]) * b.rows;
      metric += Number(out[SUBSPACE_OUTPUTS.metric]!.data[0]) * b.rows;
      rows += b.rows;
    }
    return rows > 0 ? { loss: loss / rows, metric: metric / rows, rows } : { loss: Number.NaN, metric: Number.NaN, rows: 0 };
  }

  /** Trains d with AdamW (weight decay 0 by default: d starts at 0 and is not pulled back). */
  async fit(cfg: SubspaceFitConfig): Promise<{ steps: number; losses: number[]; seconds: number }> {
    if (!(Number.isInteger(cfg.steps) && cfg.steps >= 1)) throw new ConfigError("subspace fit", "steps", `must be a positive integer, got ${cfg.steps}`);
    if (!(cfg.lr > 0)) throw new ConfigError("subspace fit", "lr", `must be positive, got ${cfg.lr}`);
    const t0 = performance.now();
    const kind = cfg.schedule ?? "constant";
    const schedule = createSchedule(kind === "constant" ? { kind: "constant" } : { kind, warmupSteps: cfg.warmupSteps ?? 0, totalSteps: cfg.steps }, cfg.lr);
    const opt = new AdamW([{ name: SUBSPACE_INPUT, data: this.d }], { lr: cfg.lr, weightDecay: cfg.weightDecay ?? 0 });
    const losses: number[] = [];
    for (let step = 0; step < cfg.steps; step++) {
      const r = await this.lossAndGradient(cfg.batch(step));
      const g = Float32Array.from(r.grad);
      if ((cfg.maxGradNorm ?? 0) > 0) clipGradNorm([g], cfg.maxGradNorm!);
      const lr = schedule.lrAt(step);
      opt.step([g], lr);
      losses.push(r.loss);
      await cfg.onStep?.({ step: step + 1, totalSteps: cfg.steps, loss: r.loss, lr });
    }
    return { steps: cfg.steps, losses, seconds: (performance.now() - t0) / 1000 };
  }

  /** θ − θ₀ = P·d per block, on the host (float64). */
  deltas(d: ArrayLike<number> = this.d): Map<string, Float64Array> {
    const flat = projectHost(this.spec, d);
    return new Map(this.layout.blocks.map((b) => [b.name, flat.slice(b.offset, b.offset + b.size)]));
  }

  async release(): Promise<void> {
    const all = [...this.sessions.values()];
    this.sessions.clear();
    await Promise.all(all.map(async (p) => (await p).release()));
  }
}

/** A ModelContext whose subspace blocks read θ₀ + δ. */
class SubspaceContext extends ModelContext {
  private readonly shifted = new Map<string, Value>();

  constructor(g: Graph, weights: WeightSource, options: ContextOptions, private readonly delta: DeltaFn) {
    super(g, weights, options);
  }

  override param(name: string, expectShape?: readonly number[]): Value {
    const cached = this.shifted.get(name);
    if (cached) return cached;
    const base = super.param(name, expectShape);
    const dv = this.delta(name);
    if (!dv) return base;
    const v = G.add(base, dv);
    this.shifted.set(name, v);
    return v;
  }
}

/** Accuracy of logits [N, C] against labels [N] as a graph scalar (a row is right when its label's logit is the largest). */
export function accuracyValue(logits: Value, labels: Value): Value {
  const picked = G.gatherElements(logits, G.unsqueeze(labels, [1]), 1);
  const best = G.reduceMax(logits, [1], true);
  return G.meanAll(G.cast(G.not(G.less(picked, best)), logits.dtype));
}

/** Every parameter a model's graph reads (in the order it reads them), with shapes. */
export function modelParameters(model: LoadedModel): SubspaceBlock[] {
  const g = new Graph("params");
  const inputIds = g.input("input_ids", "int64", ["batch", "seq"]);
  const attentionMask = g.input("attention_mask", "int64", ["batch", "seq"]);
  const ctx = new ModelContext(g, model.weights, { dryRun: true });
  model.def.build(ctx, model.config, { inputIds, attentionMask });
  return g.inputs.filter((v) => v !== inputIds && v !== attentionMask).map((v) => ({ name: v.name!, shape: v.shape as number[] }));
}

export interface ClassifierProblem extends SubspaceProblem {
  /** Feeds of a batch of examples. */
  feeds(examples: readonly TokenizedExample[]): Feeds;
}

/** A sequence classifier (logits [batch, labels]) trained in a subspace of the parameters `params`. */
export function classifierProblem(model: LoadedModel, params: readonly string[], opts: { padId?: number; maxLength?: number } = {}): ClassifierProblem {
  const all = new Map(modelParameters(model).map((b) => [b.name, b]));
  const blocks = params.map((p) => {
    const b = all.get(p);
    if (!b) throw new ConfigError("subspace", "params", `'${p}' is not a parameter the ${model.config.modelType} graph reads`);
    return b;
  });
  return {
    blocks,
    build(g, delta, dtype) {
      const inputIds = g.input("input_ids", "int64", ["batch", "seq"]);
      const attentionMask = g.input("attention_mask", "int64", ["batch", "seq"]);
      const ctx = new SubspaceContext(g, model.weights, { dtype }, delta);
      const { logits } = model.def.build(ctx, model.config, { inputIds, attentionMask });
      if (logits.rank !== 2) throw new GraphBuildError("subspace", `needs a classifier (logits [batch, labels]); this ${model.config.modelType} model gives rank-${logits.rank} logits`);
      const labels = g.input("labels", "int64", ["batch"]);
      return { loss: crossEntropy(logits, labels), metric: accuracyValue(logits, labels) };
    },
    feeds(examples) {
      const b = collate(
        examples.map((e) => ({ ids: e.ids, label: e.label ?? 0 })),
        "seq-cls",
        opts.padId ?? 0,
        opts.maxLength,
      );
      return { input_ids: b.inputIds, attention_mask: b.attentionMask, labels: b.labels };
    },
  };
}
