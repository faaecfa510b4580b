/**
 * `AtlasComposer`: learns aTLAS coefficients λ on a frozen model and frozen task vectors.
 *
 * One compiled graph (graph.ts) gives logits, both objectives and their gradients with respect to
 * λ. Training reuses the peft-ts optimisers: AdamW over the single parameter λ, an HF learning-rate
 * schedule and global-norm clipping, as the paper's code does (AdamW, cosine schedule without
 * warm-up, clip 1.0, λ initialised to 0). Objectives, per task:
 * - `cross-entropy`: supervised (e.g. k examples per class);
 * - `entropy`: mean softmax entropy of unlabelled examples (test-time adaptation).
 * With several tasks (task addition), each optimiser step takes one batch of every task and sums
 * their gradients (the paper sums the per-dataset losses); an epoch is the smallest task's
 * number of batches. Heads are per task when the composer feeds them (`fedParams`).
 *
 * Block selection keeps the most informative (t, b) pairs before training: by |∂L/∂λ_{t,b}| at the
 * current λ (measured with an anisotropic graph, whatever the mode) or by ‖τ_{t,b}‖₂; the graph is
 * rebuilt with only the kept task-vector blocks, which is what cuts memory.
 */
import { ConfigError } from "../../errors.js";
import { CompiledGraph, type SessionOptions } from "../../runtime/session.js";
import type { LoadedModel } from "../../models/load.js";
import { type Tensor, tensor } from "../../tensor.js";
import { accuracy, argmaxRows } from "../../train/metrics.js";
import { BestKeeper } from "../../train/best-keeper.js";
import { AdamW } from "../../train/optim/adamw.js";
import { clipGradNorm } from "../../train/optim/clip.js";
import { createSchedule, type LrSchedule } from "../../train/schedule.js";
import { collate, type TokenizedExample } from "../../train/trainer.js";
import { Rng } from "../../util/rng.js";
import { ATLAS_COEF_INPUT, ATLAS_OUTPUTS, buildAtlasGraph } from "./graph.js";
import {
  type AtlasLayout,
  type AtlasMode,
  coefficientIndex,
  coefficientShape,
  composeAtlasWeights,
  createAtlasLayout,
  initialCoefficients,
  keptSize,
  restrictLayout,
} from "./layout.js";
import type { AtlasTaskVector } from "./task-vectors.js";

export type AtlasObjective = "cross-entropy" | "entropy";

/** A task head fed at run time: parameter name → value (e.g. `classifier.weight`, `classifier.bias`). */
export type AtlasHead = ReadonlyMap<string, Tensor>;

export interface AtlasTaskData {
  readonly name: string;
  /** Token ids and (for cross-entropy) labels. */
  readonly examples: readonly TokenizedExample[];
  /** Default `cross-entropy`. */
  readonly objective?: AtlasObjective;
  /** The task's head, when the composer feeds heads. */
  readonly head?: AtlasHead;
}

export interface AtlasComposerOptions {
  readonly mode?: AtlasMode;
  /** Initial λ (default 0, as the paper), one value or one per task vector. */
  readonly init?: number | readonly number[];
  /** Model parameters fed per task (heads), e.g. `["classifier.weight", "classifier.bias"]`. */
  readonly fedParams?: readonly string[];
  readonly dtype?: "float32" | "float64";
  readonly session?: SessionOptions;
  /** Pad id for batching (default 0) and truncation length. */
  readonly padId?: number;
  readonly maxLength?: number;
}

export interface AtlasFitConfig {
  readonly epochs: number;
  /** Examples per batch, per task. */
  readonly batchSize: number;
  /** Default 0.1 (the paper's few-shot setting). */
  readonly lr?: number;
  /** AdamW weight decay (default 0.1, pulling λ towards 0). */
  readonly weightDecay?: number;
  /** Default cosine without warm-up. */
  readonly schedule?: "cosine" | "linear" | "constant";
  /** Global gradient-norm clip (default 1.0; 0 disables). */
  readonly maxGradNorm?: number;
  readonly seed: number;
  readonly maxSteps?: number;
  /** Evaluated (accuracy, heads as given) after every epoch; the best λ is kept, as in the paper. */
  readonly validation?: readonly AtlasTaskData[];
  readonly onStep?: (info: { step: number; totalSteps: number; loss: number; lr: number }) => void;
  readonly onEval?: (info: { epoch: number; accuracy: number; perTask: Record<string, number> }) => void;
}

export interface AtlasFitResult {
  readonly steps: number;
  readonly losses: number[];
  /** Mean validation accuracy per epoch (when validation sets were given). */
  readonly validation: { epoch: number; accuracy: number; perTask: Record<string, number> }[];
  readonly bestEpoch: number | null;
  readonly seconds: number;
}

export interface AtlasEvalResult {
  readonly accuracy: number;
  readonly loss: number;
  readonly entropy: number;
  readonly predictions: Int32Array;
}

export interface AtlasBlockSelection {
  readonly criterion: "gradient" | "norm";
  /** Fraction (0, 1] of the existing (t, b) pairs to keep, or an integer count ≥ 1 when `count` is set. */
  readonly keep: number;
  readonly count?: boolean;
  /** Data for the gradient criterion (summed |∂L/∂λ| over one batch per task, up to `batches` batches). */
  readonly data?: readonly AtlasTaskData[];
  readonly batchSize?: number;
  readonly batches?: number;
}

/** Score given to padded classes: they never win and get no probability. */
const MASKED_LOGIT = -1e9;

/**
 * A head parameter padded to the model's head shape: extra rows of 2-D weights are 0, extra
 * entries of 1-D biases are −1e9 (masked classes). Heads with more labels than the model's are refused.
 */
export function padHead(name: string, t: Tensor, shape: readonly number[], dtype: "float32" | "float64"): Tensor {
  const rows = t.shape[0]!;
  if (t.shape.length !== shape.length || rows > shape[0]! || t.shape.slice(1).some((d, i) => d !== shape[i + 1])) {
    throw new ConfigError("aTLAS head", name, `shape [${t.shape.join(", ")}] does not fit the model's [${shape.join(", ")}] (at most ${shape[0]} labels; load the model with the largest label count)`);
  }
  const inner = shape.slice(1).reduce((a, b) => a * b, 1);
  const src = t.data as Float32Array | Float64Array;
  const out = dtype === "float64" ? new Float64Array(shape[0]! * inner) : new Float32Array(shape[0]! * inner);
  out.set(src.subarray(0, rows * inner));
  if (shape.length === 1) out.fill(MASKED_LOGIT, rows);
  return dtype === "float64" ? tensor("float64", shape, out as Float64Array) : tensor("float32", shape, out as Float32Array);
}

type GraphKind = AtlasObjective | "eval";

export class AtlasComposer {
  private readonly sessions = new Map<GraphKind, Promise<CompiledGraph>>();
  /** λ, flat: [T·B] (anisotropic, row-major [T, B]) or [T]. Mutable. */
  coefficients: Float32Array;
  private currentLayout: AtlasLayout;

  private constructor(
    readonly model: LoadedModel,
    readonly taskVectors: readonly AtlasTaskVector[],
    layout: AtlasLayout,
    readonly options: AtlasComposerOptions,
  ) {
    this.currentLayout = layout;
    this.coefficients = initialCoefficients(layout, options.init ?? 0);
  }

  static create(model: LoadedModel, taskVectors: readonly AtlasTaskVector[], options: AtlasComposerOptions = {}): AtlasComposer {
    const layout = createAtlasLayout(taskVectors, model.weights, options.mode ?? "anisotropic");
    return new AtlasComposer(model, taskVectors, layout, options);
  }

  get layout(): AtlasLayout {
    return this.currentLayout;
  }

  get fedParams(): readonly string[] {
    return this.options.fedParams ?? [];
  }

  /** λ_{t,b} (for isotropic layouts, λ_t whatever b is). */
  coefficient(task: number | string, block: number | string): number {
    const t = typeof task === "number" ? task : this.layout.tasks.indexOf(task);
    const b = typeof block === "number" ? block : this.layout.blocks.indexOf(block);
    if (t < 0 || b < 0 || t >= this.layout.tasks.length || b >= this.layout.blocks.length) throw new ConfigError("aTLAS", "coefficient", `no coefficient for task ${task}, block ${block}`);
    return this.coefficients[coefficientIndex(this.layout, t, b)]!;
  }

  /** The compiled graph of one kind (evaluation, or one objective with its gradient), built on first use. */
  private compiled(kind: GraphKind): Promise<CompiledGraph> {
    let s = this.sessions.get(kind);
    if (!s) {
      const built = buildAtlasGraph(this.model, this.taskVectors, this.layout, {
        ...(this.options.dtype ? { dtype: this.options.dtype } : {}),
        fedParams: this.fedParams,
        objective: kind === "eval" ? null : kind,
      });
      s = CompiledGraph.create(built.graph, this.options.session ?? {});
      this.sessions.set(kind, s);
      s.catch(() => this.sessions.delete(kind));
    }
    return s;
  }

  private coefTensor(values: ArrayLike<number> = this.coefficients): Tensor {
    const shape = coefficientShape(this.layout);
    return this.options.dtype === "float64" ? tensor("float64", shape, Float64Array.from(values)) : tensor("float32", shape, Float32Array.from(values));
  }

  private headFeeds(head: AtlasHead | undefined, where: string): Record<string, Tensor> {
    const feeds: Record<string, Tensor> = {};
    if (this.fedParams.length === 0) {
      if (head) throw new ConfigError(where, "head", "this composer was created without fedParams, so heads cannot be fed");
      return feeds;
    }
    for (const p of this.fedParams) {
      const t = head?.get(p);
      if (!t) throw new ConfigError(where, "head", `missing '${p}' (the composer feeds ${this.fedParams.join(", ")})`);
      feeds[p] = padHead(p, t, this.model.weights.info(p).shape, this.options.dtype ?? "float32");
    }
    return feeds;
  }

  /**
   * One run on `examples` as one batch; returns the requested outputs. The graph is the one of the
   * objective whose gradient is requested (`grad_ce`, `grad_entropy`), else the evaluation graph.
   */
  async run(examples: readonly TokenizedExample[], outputs: readonly string[], opts: { head?: AtlasHead; coefficients?: ArrayLike<number> } = {}): Promise<Record<string, Tensor>> {
    const rows = examples.map((e) => ({ ids: e.ids, label: e.label ?? 0 }));
    const batch = collate(rows, "seq-cls", this.options.padId ?? 0, this.options.maxLength);
    const kind: GraphKind = outputs.includes(ATLAS_OUTPUTS.gradCe) ? "cross-entropy" : outputs.includes(ATLAS_OUTPUTS.gradEntropy) ? "entropy" : "eval";
    if (kind !== "eval" && outputs.includes(ATLAS_OUTPUTS.gradCe) && outputs.includes(ATLAS_OUTPUTS.gradEntropy)) {
      throw new ConfigError("aTLAS run", "outputs", "ask for one objective's gradient per run");
    }
    const s = await this.compiled(kind);
    return s.run(
      {
        input_ids: batch.inputIds,
        attention_mask: batch.attentionMask,
        labels: batch.labels,
        [ATLAS_COEF_INPUT]: this.coefTensor(opts.coefficients),
        ...this.headFeeds(opts.head, "aTLAS run"),
      },
      outputs,
    );
  }

  /** Loss and ∂loss/∂λ of one batch. */
  async lossAndGradient(examples: readonly TokenizedExample[], objective: AtlasObjective, opts: { head?: AtlasHead; coefficients?: ArrayLike<number> } = {}): Promise<{ loss: number; grad: Float64Array }> {
    const [lossName, gradName] = objective === "entropy" ? [ATLAS_OUTPUTS.lossEntropy, ATLAS_OUTPUTS.gradEntropy] : [ATLAS_OUTPUTS.lossCe, ATLAS_OUTPUTS.gradCe];
    if (objective === "cross-entropy" && examples.some((e) => e.label === undefined)) throw new ConfigError("aTLAS", "examples", "cross-entropy needs a label on every example; use the 'entropy' objective for unlabelled data");
    const out = await this.run(examples, [lossName, gradName], opts);
    return { loss: Number(out[lossName]!.data[0]), grad: Float64Array.from(out[gradName]!.data as Float32Array) };
  }

  /** Accuracy (labelled examples), mean cross-entropy and mean entropy with the current λ. */
  async evaluate(examples: readonly TokenizedExample[], opts: { head?: AtlasHead; batchSize?: number } = {}): Promise<AtlasEvalResult> {
    const bs = opts.batchSize ?? 64;
    const preds = new Int32Array(examples.length);
    let loss = 0;
    let ent = 0;
    // batches of similar lengths waste little on padding; results go back to input order
    const order = [...examples.keys()].sort((a, b) => examples[a]!.ids.length - examples[b]!.ids.length || a - b);
    for (let i = 0; i < order.length; i += bs) {
      const idx = order.slice(i, i + bs);
      const chunk = idx.map((j) => examples[j]!);
      const out = await this.run(chunk, [ATLAS_OUTPUTS.logits, ATLAS_OUTPUTS.lossCe, ATLAS_OUTPUTS.lossEntropy], opts);
      const logits = out[ATLAS_OUTPUTS.logits]!;
      // padded (masked) classes never win, so the argmax over all columns is the head's own
      argmaxRows(logits.data as Float32Array, logits.shape[1]!).forEach((p, k) => (preds[idx[k]!] = p));
      loss += Number(out[ATLAS_OUTPUTS.lossCe]!.data[0]) * chunk.length;
      ent += Number(out[ATLAS_OUTPUTS.lossEntropy]!.data[0]) * chunk.length;
    }
    const labelled = examples.every((e) => e.label !== undefined);
    const n = Math.max(1, examples.length);
    return {
      accuracy: labelled && examples.length > 0 ? accuracy(preds, examples.map((e) => e.label!)) : Number.NaN,
      loss: labelled ? loss / n : Number.NaN,
      entropy: ent / n,
      predictions: preds,
    };
  }

  private async validate(sets: readonly AtlasTaskData[]): Promise<{ accuracy: number; perTask: Record<string, number> }> {
    const perTask: Record<string, number> = {};
    for (const v of sets) perTask[v.name] = (await this.evaluate(v.examples, v.head ? { head: v.head } : {})).accuracy;
    const vals = Object.values(perTask);
    return { accuracy: vals.reduce((s, x) => s + x, 0) / vals.length, perTask };
  }

  /** Learns λ on `tasks` (see the module comment); λ ends at the best validation epoch when validation sets are given. */
  async fit(tasks: readonly AtlasTaskData[], cfg: AtlasFitConfig): Promise<AtlasFitResult> {
    if (tasks.length === 0) throw new ConfigError("aTLAS fit", "tasks", "needs at least one task");
    for (const t of tasks) if (t.examples.length === 0) throw new ConfigError("aTLAS fit", `tasks.${t.name}`, "has no examples");
    if (!(cfg.batchSize >= 1) || !(cfg.epochs > 0)) throw new ConfigError("aTLAS fit", "batchSize/epochs", "must be positive");
    const t0 = performance.now();
    const rng = new Rng(cfg.seed);
    const stepsPerEpoch = Math.ceil(Math.min(...tasks.map((t) => t.examples.length)) / cfg.batchSize);
    const full = Math.ceil(stepsPerEpoch * cfg.epochs);
    const total = cfg.maxSteps ? Math.min(full, cfg.maxSteps) : full;
    const lr = cfg.lr ?? 0.1;
    const kind = cfg.schedule ?? "cosine";
    const schedule: LrSchedule = createSchedule(kind === "constant" ? { kind: "constant" } : { kind, warmupSteps: 0, totalSteps: full }, lr);
    const opt = new AdamW([{ name: ATLAS_COEF_INPUT, data: this.coefficients }], { lr, weightDecay: cfg.weightDecay ?? 0.1 });
    const clip = cfg.maxGradNorm ?? 1;
    const orders = tasks.map((t) => rng.permutation(t.examples.length));
    const positions = tasks.map(() => 0);
    const losses: number[] = [];
    const validation: AtlasFitResult["validation"] = [];
    const keeper = new BestKeeper<{ accuracy: number; epoch: number }>((a, b) => a.accuracy > b.accuracy);
    const coefficients = new Map([["coefficients", this.coefficients]]);
    if (cfg.validation && cfg.validation.length > 0) {
      const v = await this.validate(cfg.validation);
      validation.push({ epoch: 0, ...v });
      cfg.onEval?.({ epoch: 0, ...v });
      keeper.observe({ accuracy: v.accuracy, epoch: 0 }, coefficients);
    }
    let step = 0;
    while (step < total) {
      const g = new Float32Array(this.coefficients.length);
      let loss = 0;
      for (let k = 0; k < tasks.length; k++) {
        const task = tasks[k]!;
        if (positions[k]! >= orders[k]!.length) {
          orders[k] = rng.permutation(task.examples.length);
          positions[k] = 0;
        }
        const idx = orders[k]!.subarray(positions[k]!, positions[k]! + cfg.batchSize);
        positions[k]! += idx.length;
        const r = await this.lossAndGradient(Array.from(idx, (i) => task.examples[i]!), task.objective ?? "cross-entropy", task.head ? { head: task.head } : {});
        loss += r.loss;
        for (let i = 0; i < g.length; i++) g[i]! += r.grad[i]!;
      }
      if (clip > 0) clipGradNorm([g], clip);
      const stepLr = schedule.lrAt(step);
      opt.step([g], stepLr);
      step++;
      losses.push(loss);
      cfg.onStep?.({ step, totalSteps: total, loss, lr: stepLr });
      if (step % stepsPerEpoch === 0 || step === total) {
        // a new epoch starts every task from a fresh permutation
        for (let k = 0; k < tasks.length; k++) positions[k] = orders[k]!.length;
        if (cfg.validation && cfg.validation.length > 0) {
          const epoch = Math.ceil(step / stepsPerEpoch);
          const v = await this.validate(cfg.validation);
          validation.push({ epoch, ...v });
          cfg.onEval?.({ epoch, ...v });
          keeper.observe({ accuracy: v.accuracy, epoch }, coefficients);
        }
      }
    }
    keeper.restoreInto(coefficients);
    return { steps: step, losses, validation, bestEpoch: keeper.best?.epoch ?? null, seconds: (performance.now() - t0) / 1000 };
  }

  /** Per-pair scores of the kept pairs (NaN for pairs that are not kept), row-major [T, B]. */
  async blockScores(sel: Pick<AtlasBlockSelection, "criterion" | "data" | "batchSize" | "batches">): Promise<Float64Array> {
    const L = this.layout;
    const B = L.blocks.length;
    const scores = new Float64Array(L.tasks.length * B).fill(Number.NaN);
    if (sel.criterion === "norm") {
      L.kept.forEach((k, i) => {
        if (!k) return;
        const tau = this.taskVectors[Math.floor(i / B)]!.blocks.get(L.blocks[i % B]!)!;
        let s = 0;
        for (const v of tau) s += v * v;
        scores[i] = Math.sqrt(s);
      });
      return scores;
    }
    if (!sel.data || sel.data.length === 0) throw new ConfigError("aTLAS block selection", "data", "the gradient criterion needs data (examples per task)");
    // an anisotropic scorer at the current λ, so every pair gets its own derivative
    const aniso: AtlasLayout = { ...L, mode: "anisotropic" };
    const coef = new Float32Array(L.tasks.length * B);
    for (let t = 0; t < L.tasks.length; t++) for (let b = 0; b < B; b++) coef[t * B + b] = this.coefficients[coefficientIndex(L, t, b)]!;
    const scorer = new AtlasComposer(this.model, this.taskVectors, aniso, { ...this.options, mode: "anisotropic", init: 0 });
    scorer.coefficients.set(coef);
    const sum = new Float64Array(coef.length);
    try {
      const bs = sel.batchSize ?? 32;
      for (const task of sel.data) {
        const n = Math.min(task.examples.length, bs * (sel.batches ?? 1));
        for (let i = 0; i < n; i += bs) {
          const r = await scorer.lossAndGradient(task.examples.slice(i, Math.min(n, i + bs)), task.objective ?? "cross-entropy", task.head ? { head: task.head } : {});
          for (let k = 0; k < sum.length; k++) sum[k] += Math.abs(r.grad[k]!);
        }
      }
    } finally {
      await scorer.release();
    }
    L.kept.forEach((k, i) => (scores[i] = k ? sum[i]! : Number.NaN));
    return scores;
  }

  /**
   * Keeps only the highest-scoring (t, b) pairs (see `AtlasBlockSelection`); the graph is rebuilt
   * with just their task-vector blocks. Returns the kept pair count and parameters before/after.
   */
  async selectBlocks(sel: AtlasBlockSelection): Promise<{ before: { pairs: number; parameters: number }; after: { pairs: number; parameters: number } }> {
    const before = keptSize(this.layout, this.taskVectors);
    const n = sel.count ? sel.keep : Math.round(sel.keep * before.pairs);
    if (!(sel.count ? Number.isInteger(sel.keep) && sel.keep >= 1 : sel.keep > 0 && sel.keep <= 1)) {
      throw new ConfigError("aTLAS block selection", "keep", sel.count ? `must be an integer count >= 1, got ${sel.keep}` : `must be a fraction in (0, 1], got ${sel.keep}`);
    }
    const scores = await this.blockScores(sel);
    const order = [...scores.keys()].filter((i) => !Number.isNaN(scores[i]!)).sort((a, b) => scores[b]! - scores[a]! || a - b);
    const keep = new Set(order.slice(0, Math.max(1, Math.min(n, order.length))));
    const B = this.layout.blocks.length;
    this.currentLayout = restrictLayout(this.layout, (t, b) => keep.has(t * B + b));
    await this.release();
    return { before, after: keptSize(this.layout, this.taskVectors) };
  }

  /** The composed parameters θ_0 + Σ λ τ (only the blocks with kept pairs), on the host. */
  composedWeights(): Map<string, Tensor> {
    return composeAtlasWeights(this.model.weights, this.taskVectors, this.layout, this.coefficients);
  }

  /** Releases the compiled graphs (they are rebuilt on next use). */
  async release(): Promise<void> {
    const all = [...this.sessions.values()];
    this.sessions.clear();
    await Promise.all(all.map(async (p) => (await p).release()));
  }
}
