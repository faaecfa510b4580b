/**
 * The training loop: batches → one `session.run` per micro-batch (loss + gradients) → gradient
 * accumulation → clipping → optimizer step with a learning-rate schedule; periodic evaluation,
 * early stopping with the best parameters kept, atomic checkpoints and exact resume.
 *
 * With `residentOptimizer` (AdamW, no accumulation) the clipping and the AdamW update run inside
 * the step's graph (`FusedAdamWStep`): parameters and moments stay in onnxruntime between steps
 * and are downloaded only for evaluation, checkpoints and the end of training.
 */
import { ConfigError } from "../errors.js";
import type { PeftModel } from "../peft/peft-model.js";
import type { SessionOptions } from "../runtime/session.js";
import type { Tensor } from "../tensor.js";
import type { TrainingAllocator } from "../tuners/common/types.js";
import { Rng } from "../util/rng.js";
import { type JsonValue, type LoadedCheckpoint, hasCheckpoint, loadCheckpoint, saveCheckpoint } from "./checkpoint.js";
import { GradScaler, type GradScalerState, LossScaledStep, type LossScaling } from "./grad-scaler.js";
import type { LossTask } from "./loss.js";
import { type TokenizedExample, collate } from "./batch.js";
import { createEvalStep, evaluateWith } from "./evaluate.js";
import { checkTrainerArgs } from "./args.js";
import { BestKeeper } from "./best-keeper.js";
import { AdamW, AdamW8bit, Sgd, excludeFromWeightDecay, isNoDecayParamName } from "./optim/index.js";
import type { NamedParam, Optimizer } from "./optim/types.js";
import { createSchedule, type LrSchedule, warmupStepsFromRatio } from "./schedule.js";
import { FusedAdamWStep } from "./fused-step.js";
import { lengthGroupedOrder } from "./sampler.js";
import { TrainStep } from "./step.js";
import { type TrainingGate, runGated } from "./gate.js";
import { HostStepStrategy, ResidentStepStrategy, type StepSpec, type StepStrategy, commitParams } from "./step-strategy.js";

export { collate, type TokenizedExample } from "./batch.js";

export interface TrainerConfig {
  readonly task: LossTask;
  readonly epochs: number;
  readonly batchSize: number;
  readonly lr: number;
  readonly weightDecay?: number;
  /** `adamw8bit`: AdamW with block-wise 8-bit moments (bitsandbytes' scheme). */
  readonly optimizer?: "adamw" | "adamw8bit" | "sgd";
  readonly momentum?: number;
  readonly schedule?: "constant" | "linear" | "cosine";
  readonly warmupSteps?: number;
  readonly warmupRatio?: number;
  /** Clip the global gradient norm (0 or undefined: no clipping). */
  readonly maxGradNorm?: number;
  readonly gradientAccumulation?: number;
  /** Evaluate every N optimizer steps (default: at the end of each epoch). */
  readonly evalEvery?: number;
  /** Stop after this many evaluations without improvement of `metric`. */
  readonly earlyStopping?: { readonly patience: number; readonly metric?: string };
  readonly seed: number;
  /** Dropout active while training (default true). */
  readonly dropout?: boolean;
  /** Pad id for batching (default 0). */
  readonly padId?: number;
  /** Truncate sequences to this length. */
  readonly maxLength?: number;
  /**
   * Batch examples of similar length together (transformers' `group_by_length`: random
   * megabatches of up to 50 batches, each sorted by length), so that batches carry little padding.
   * Default false (a plain permutation each epoch).
   */
  readonly groupByLength?: boolean;
  readonly session?: SessionOptions;
  readonly checkpointDir?: string;
  readonly checkpointEvery?: number;
  /**
   * Total optimizer steps, as transformers' `max_steps`: overrides `epochs` (the data is cycled as
   * often as needed) and is the learning-rate schedule's length (warm-up and decay happen within it).
   */
  readonly maxSteps?: number;
  /**
   * Stop after this many optimizer steps without changing the schedule (which still spans
   * `maxSteps` or the epochs): the run's checkpoint then resumes to the end as if it had never
   * stopped. For tests and for running a job in slices.
   */
  readonly stopAfterSteps?: number;
  /**
   * Compute dtype (default float32). `float16`: mixed precision — the frozen model in float16,
   * float32 master weights, and loss scaling (`lossScaling`); see docs/training.md.
   */
  readonly dtype?: "float32" | "float16";
  /** Loss scaling for `dtype: "float16"` (default dynamic with PyTorch GradScaler's defaults). */
  readonly lossScaling?: LossScaling;
  /**
   * Clip and apply AdamW inside the step's graph, keeping parameters and moments in onnxruntime
   * between steps (on webgpu: on the GPU). Default: true when `session.ep` is `webgpu`. Used only
   * where it gives the same update: optimizer `adamw` and gradient accumulation 1; otherwise the
   * host optimizer runs (`Trainer.usesResidentOptimizer` says which).
   */
  readonly residentOptimizer?: boolean;
  /**
   * LoRA+ (PEFT's `create_loraplus_optimizer`, `loraplus_lr_ratio`): the learning rate of every
   * low-rank B factor (tensor role `lowRank: "B"`) and of every 1-D trainable tensor is lr × ratio;
   * the rest keep lr. Default 1 (off). With a ratio the host optimizer runs (not the resident one).
   */
  readonly loraplusLrRatio?: number;
  /**
   * Share the machine with something that has priority (e.g. `GenerationEngine.trainingGate`):
   * each run of the training graph (and of evaluation) waits for the gate, and runs as many rows
   * of its micro-batch as granted. The slices' gradients are accumulated weighted by their share
   * of the batch's loss, so the result equals the ungated run to float rounding (dropout masks
   * included: onnxruntime draws them in row order from one stream per layer). With a gate the host
   * optimizer runs (not the resident one).
   */
  readonly gate?: TrainingGate;
}

export interface EvalResult {
  readonly loss: number;
  readonly accuracy?: number;
  readonly f1?: number;
  readonly perplexity?: number;
}

export interface StepInfo {
  readonly step: number;
  readonly totalSteps: number;
  readonly epoch: number;
  readonly loss: number;
  readonly lr: number;
  readonly gradNorm: number;
  readonly examplesPerSecond: number;
  readonly tokensPerSecond: number;
  /** float16 training: the loss scale this step's gradients were computed with. */
  readonly lossScale?: number;
  /** float16 training: the gradients overflowed, so the optimizer step was skipped. */
  readonly skipped?: boolean;
}

export interface TrainHistory {
  readonly steps: StepInfo[];
  readonly evals: (EvalResult & { step: number; epoch: number })[];
}

export interface TrainCallbacks {
  /** After each optimizer step; the loop waits for a returned promise (a paused run resolves it to go on). */
  onStep?(info: StepInfo): void | Promise<void>;
  onEval?(result: EvalResult & { step: number; epoch: number }): void;
  /** After a periodic checkpoint (`checkpointEvery`) is written: a run killed from here on resumes at this step. */
  onCheckpoint?(info: { step: number; epoch: number; loss: number }): void | Promise<void>;
  /**
   * After each applied optimizer step whose gradients are on the host (not with the resident
   * optimizer): the step's gradients (after unscaling and clipping) and the updated parameters,
   * by graph input name, and the parameters' values before training. Read-only views, valid
   * during the call.
   */
  onGradients?(info: GradientInfo): void;
}

export interface GradientInfo {
  /** The optimizer step just taken (1-based). */
  readonly step: number;
  readonly gradients: ReadonlyMap<string, Float32Array>;
  readonly params: ReadonlyMap<string, Float32Array>;
  readonly initial: ReadonlyMap<string, Tensor>;
  /** Graph input name → owning adapter and its tensor key. */
  readonly owners: ReadonlyMap<string, { adapter: string; key: string }>;
}

export interface TrainResult {
  readonly history: TrainHistory;
  readonly steps: number;
  readonly best: (EvalResult & { step: number }) | null;
  readonly seconds: number;
  readonly stoppedEarly: boolean;
}

/** The early-stopping state a checkpoint keeps, so that a resumed run stops and restores as the straight run. */
interface EarlyStoppingRecord {
  readonly best: (EvalResult & { step: number }) | null;
  readonly sinceBest: number;
}

/** Checkpoint tensor names of the best parameters so far. */
const BEST_PREFIX = "best/";
/** Checkpoint tensors of a tuner's training allocator: `allocator/<adapter>/<name>`. */
const ALLOCATOR_PREFIX = "allocator/";

/** An evaluation record as JSON: non-finite values (an overflowing perplexity) are left out. */
function finiteFields(r: EvalResult & { step: number }): { [k: string]: number } {
  return Object.fromEntries(Object.entries(r).filter(([, v]) => typeof v === "number" && Number.isFinite(v)));
}

function higherIsBetter(metric: string): boolean {
  return metric !== "loss" && metric !== "perplexity";
}


export class Trainer {
  private spec!: StepSpec;
  /** Host or resident execution of each optimizer step (`step-strategy.ts`). */
  private strategy: StepStrategy | null = null;
  /** The allocators of the running `fit` (checkpointed with it). */
  private liveAllocators: readonly { adapter: string; allocator: TrainingAllocator }[] = [];
  private scaler: GradScaler | null = null;
  private evalStep: TrainStep | null = null;
  private params = new Map<string, Float32Array>();
  private schedule!: LrSchedule;
  private rng: Rng;

  constructor(
    readonly model: PeftModel,
    readonly config: TrainerConfig,
    readonly train: readonly TokenizedExample[],
    readonly validation: readonly TokenizedExample[] = [],
  ) {
    checkTrainerArgs(model, config, train, validation);
    if (config.batchSize < 1 || config.epochs <= 0) throw new ConfigError("trainer", "batchSize/epochs", "must be positive");
    if (train.length === 0) throw new ConfigError("trainer", "train", "no training examples");
    if (config.dtype !== undefined && config.dtype !== "float32" && config.dtype !== "float16") {
      throw new ConfigError("trainer", "dtype", `must be "float32" or "float16", got ${JSON.stringify(config.dtype)}`);
    }
    this.rng = new Rng(config.seed);
  }

  get stepsPerEpoch(): number {
    return Math.ceil(this.train.length / (this.config.batchSize * (this.config.gradientAccumulation ?? 1)));
  }

  /** The schedule's length: `maxSteps` when set (as transformers), else the epochs' steps. */
  get scheduleSteps(): number {
    return this.config.maxSteps ?? Math.ceil(this.stepsPerEpoch * this.config.epochs);
  }

  /** The steps this `fit` runs to: the schedule's length, or `stopAfterSteps` when that is sooner. */
  get totalSteps(): number {
    const all = this.scheduleSteps;
    return this.config.stopAfterSteps ? Math.min(all, this.config.stopAfterSteps) : all;
  }

  /** Whether `fit` runs (or ran) the fused resident optimizer (see `TrainerConfig.residentOptimizer`). */
  get usesResidentOptimizer(): boolean {
    const cfg = this.config;
    const wanted = cfg.residentOptimizer ?? cfg.session?.ep === "webgpu";
    // a tuner's allocator (AdaLoRA) reads each step's gradients on the host
    const allocates = this.model.activeAdapters.some((n) => {
      const a = this.model.adapter(n);
      return (a.tuner.training?.allocator?.(a) ?? null) !== null;
    });
    return wanted && !allocates && (cfg.optimizer ?? "adamw") === "adamw" && (cfg.gradientAccumulation ?? 1) === 1 && (cfg.loraplusLrRatio ?? 1) === 1 && !cfg.gate;
  }

  private async init(): Promise<void> {
    const cfg = this.config;
    const ratio = cfg.loraplusLrRatio;
    if (ratio !== undefined && !(Number.isFinite(ratio) && ratio > 0)) throw new ConfigError("TrainerConfig", "loraplusLrRatio", `must be a positive number, got ${ratio}`);
    const wd = cfg.weightDecay ?? (cfg.optimizer === "sgd" ? 0 : 0.01);
    const stepOpts = { task: cfg.task, seed: cfg.seed, dropout: cfg.dropout ?? true, session: cfg.session ?? {}, dtype: cfg.dtype ?? "float32" };
    this.scaler = cfg.dtype === "float16" ? new GradScaler(cfg.lossScaling) : null;
    if (this.usesResidentOptimizer) {
      const fused = await FusedAdamWStep.create(this.model, {
        ...stepOpts,
        lr: cfg.lr,
        weightDecay: wd,
        // as the host path's excludeFromWeightDecay: no decay for biases and norms
        weightDecayOverrides: (n) => (isNoDecayParamName(n) ? 0 : undefined),
        ...(cfg.maxGradNorm ? { maxGradNorm: cfg.maxGradNorm } : {}),
        ...(this.scaler ? { scaler: this.scaler } : {}),
      });
      this.spec = fused;
      this.initParams();
      this.strategy = new ResidentStepStrategy(fused, this.params, () => this.currentParams());
    } else {
      const step = this.scaler ? await LossScaledStep.create(this.model, this.scaler, stepOpts) : await TrainStep.create(this.model, stepOpts);
      this.spec = step;
      this.initParams();
      this.strategy = new HostStepStrategy(step, this.hostOptimizer(wd), () => this.currentParams(), {
        accumulation: cfg.gradientAccumulation ?? 1,
        ...(cfg.maxGradNorm ? { maxGradNorm: cfg.maxGradNorm } : {}),
        scaler: this.scaler,
      });
    }
    const total = this.scheduleSteps;
    const warmup = cfg.warmupSteps ?? (cfg.warmupRatio ? warmupStepsFromRatio(cfg.warmupRatio, total) : 0);
    const kind = cfg.schedule ?? "linear";
    this.schedule = createSchedule(
      kind === "constant" ? (warmup > 0 ? { kind: "constantWithWarmup", warmupSteps: warmup } : { kind: "constant" }) : { kind, warmupSteps: warmup, totalSteps: total },
      cfg.lr,
    );
  }

  private initParams(): void {
    this.params = new Map(this.spec.names.map((n) => [n, Float32Array.from(this.spec.initial.get(n)!.data as Float32Array)]));
  }

  private hostOptimizer(wd: number): Optimizer {
    const cfg = this.config;
    const named: NamedParam[] = this.spec.names.map((n) => ({ name: n, data: this.params.get(n)!, lrScale: this.lrScaleOf(n) }));
    const withDecay = excludeFromWeightDecay(named);
    return cfg.optimizer === "sgd"
      ? new Sgd(withDecay, { lr: cfg.lr, momentum: cfg.momentum ?? 0, weightDecay: wd })
      : cfg.optimizer === "adamw8bit"
        ? new AdamW8bit(withDecay, { lr: cfg.lr, weightDecay: wd })
        : new AdamW(withDecay, { lr: cfg.lr, weightDecay: wd });
  }

  /** LoRA+'s learning-rate multiplier of a trainable graph input (1 without `loraplusLrRatio`). */
  private lrScaleOf(name: string): number {
    const ratio = this.config.loraplusLrRatio ?? 1;
    if (ratio === 1) return 1;
    const o = this.spec.owners.get(name)!;
    const a = this.model.adapter(o.adapter);
    const role = a.tuner.role(o.key);
    const isB = role?.kind === "update" && role.lowRank === "B";
    return isB || this.spec.initial.get(name)!.shape.length === 1 ? ratio : 1;
  }

  /** Brings `params` up to date with the step's (the resident strategy downloads only when a step ran since). */
  private async pullParams(): Promise<void> {
    await this.strategy?.sync();
  }

  /**
   * Current trainable values as tensors (graph input name → tensor). During `fit` with the
   * resident optimizer these are the values of the last evaluation or checkpoint; `fit` brings
   * them up to date before it returns.
   */
  currentParams(): Map<string, Tensor> {
    const out = new Map<string, Tensor>();
    for (const [n, d] of this.params) out.set(n, { dtype: "float32", shape: this.spec.initial.get(n)!.shape, data: d });
    return out;
  }

  /** Write the current values back into the model's adapters. */
  commit(): void {
    commitParams(this.model, this.spec, this.params);
  }

  /** Loss and metrics on a list of examples with the current parameters (no dropout). */
  async evaluate(examples: readonly TokenizedExample[], batchSize = this.config.batchSize): Promise<EvalResult> {
    const cfg = this.config;
    this.evalStep ??= await createEvalStep(this.model, cfg.task, { dtype: cfg.dtype ?? "float32", session: cfg.session ?? {} });
    await this.pullParams();
    return evaluateWith(this.evalStep, this.currentParams(), examples, {
      task: cfg.task,
      batchSize,
      padId: cfg.padId ?? 0,
      ...(cfg.maxLength !== undefined ? { maxLength: cfg.maxLength } : {}),
      ...(cfg.gate ? { gate: cfg.gate } : {}),
    });
  }

  /** One epoch's example order: a permutation, or length-grouped batches (`groupByLength`). */
  private epochOrder(): Int32Array {
    const cfg = this.config;
    if (!cfg.groupByLength) return this.rng.permutation(this.train.length);
    return lengthGroupedOrder(this.train.map((e) => this.lengthOf(e)), cfg.batchSize, this.rng);
  }

  private lengthOf(e: TokenizedExample): number {
    return Math.min(e.ids.length, this.config.maxLength ?? Infinity);
  }

  /** Run the configured training; resumes from `checkpointDir` when a checkpoint is there. */
  async fit(callbacks: TrainCallbacks = {}): Promise<TrainResult> {
    const cfg = this.config;
    await this.init();
    const t0 = performance.now();
    const accum = cfg.gradientAccumulation ?? 1;
    const metric = cfg.earlyStopping?.metric ?? (cfg.task === "seq-cls" ? "accuracy" : "loss");
    const valueOf = (r: EvalResult) => (r as unknown as Record<string, number | undefined>)[metric];
    const better = (a: number, b: number) => (higherIsBetter(metric) ? a > b : a < b);
    // a best without the metric (a non-finite value a checkpoint left out) is beaten by any evaluation
    const keeper = new BestKeeper<EvalResult & { step: number }>((a, b) => {
      const bv = valueOf(b);
      return bv === undefined || better(valueOf(a)!, bv);
    }, cfg.earlyStopping?.patience);
    const strategy = this.strategy!;
    let step = 0;
    let epoch = 0;
    let pos = 0; // position in the epoch's order, in examples
    let order = this.epochOrder();
    const history: TrainHistory = { steps: [], evals: [] };
    let resumedFrom: LoadedCheckpoint | null = null;
    if (cfg.checkpointDir && hasCheckpoint(cfg.checkpointDir)) {
      const ck = loadCheckpoint(cfg.checkpointDir);
      resumedFrom = ck;
      for (const [n, t] of ck.params) this.params.get(n)?.set(t.data as Float32Array);
      strategy.resume(ck.optimizer);
      this.rng = Rng.fromState(ck.rng.data!);
      order = ck.dataOrder;
      step = ck.step;
      epoch = Math.floor(ck.epoch);
      pos = Number(ck.extras.position ?? 0);
      if (this.scaler && ck.extras.gradScaler) this.scaler.loadStateDict(ck.extras.gradScaler as unknown as GradScalerState);
      // the early-stopping record: the best evaluation so far, its parameters, evaluations since
      const es = ck.extras.earlyStopping as unknown as EarlyStoppingRecord | undefined;
      const saved = [...ck.tensors].filter(([k]) => k.startsWith(BEST_PREFIX));
      keeper.restore(es ?? { best: null, sinceBest: 0 }, saved.length > 0 ? new Map(saved.map(([k, t]) => [k.slice(BEST_PREFIX.length), t.data as Float32Array])) : null);
    }
    const total = this.totalSteps;
    const allocators = this.allocators();
    this.liveAllocators = allocators;
    if (resumedFrom) {
      // AdaLoRA's importance EMAs and mask: the allocator continues where the checkpoint left it
      const states = (resumedFrom.extras.allocators ?? {}) as Record<string, JsonValue>;
      for (const { adapter, allocator } of allocators) {
        const prefix = `${ALLOCATOR_PREFIX}${adapter}/`;
        if (!allocator.restore || !(adapter in states)) continue;
        const tensors = new Map([...resumedFrom.tensors].filter(([k]) => k.startsWith(prefix)).map(([k, t]) => [k.slice(prefix.length), t]));
        allocator.restore({ tensors, json: states[adapter] });
      }
    }
    const evaluateNow = async () => {
      if (this.validation.length === 0) return false;
      const r = await this.evaluate(this.validation);
      const rec = { ...r, step, epoch: step / this.stepsPerEpoch };
      history.evals.push(rec);
      callbacks.onEval?.(rec);
      if (valueOf(r) === undefined) throw new ConfigError("trainer", "earlyStopping.metric", `'${metric}' is not computed for ${cfg.task}`);
      return keeper.observe({ ...r, step }, this.params);
    };
    let stoppedEarly = false;
    while (step < total && !stoppedEarly) {
      const tStep = performance.now();
      const lr = this.schedule.lrAt(step);
      let lossSum = 0;
      let tokens = 0;
      let examplesSeen = 0;
      // the scale this step's backward passes are seeded with (the fused step updates the scaler itself)
      const lossScale = this.scaler?.scale;
      strategy.begin(lr);
      for (let m = 0; m < accum; m++) {
        if (pos >= order.length) {
          epoch++;
          pos = 0;
          order = this.epochOrder();
          if (cfg.evalEvery === undefined && (await evaluateNow())) {
            stoppedEarly = true;
            break;
          }
        }
        const idx = Array.from(order.subarray(pos, pos + cfg.batchSize));
        pos += idx.length;
        const batch = collate(idx.map((i) => this.train[i]!), cfg.task, cfg.padId ?? 0, cfg.maxLength);
        tokens += batch.inputIds.data.length;
        examplesSeen += idx.length;
        lossSum += cfg.gate ? await runGated(cfg.gate, batch, cfg.task, (slice, w) => strategy.microBatch(slice, w)) : await strategy.microBatch(batch);
      }
      if (stoppedEarly) break;
      const outcome = strategy.finish();
      if (!outcome) break;
      if (outcome.applied) this.runAllocators(allocators, step, strategy.gradients());
      if (outcome.applied && callbacks.onGradients) {
        const gradients = strategy.gradients();
        if (gradients) callbacks.onGradients({ step: step + 1, gradients, params: this.params, initial: this.spec.initial, owners: this.spec.owners });
      }
      step++;
      const secs = (performance.now() - tStep) / 1000;
      const info: StepInfo = {
        step,
        totalSteps: total,
        epoch: epoch + pos / order.length,
        loss: lossSum / accum,
        lr,
        gradNorm: outcome.gradNorm,
        examplesPerSecond: examplesSeen / secs,
        tokensPerSecond: tokens / secs,
        ...(lossScale !== undefined ? { lossScale, skipped: !outcome.applied } : {}),
      };
      history.steps.push(info);
      await callbacks.onStep?.(info);
      if (cfg.evalEvery && step % cfg.evalEvery === 0 && (await evaluateNow())) stoppedEarly = true;
      if (cfg.checkpointDir && cfg.checkpointEvery && step % cfg.checkpointEvery === 0) {
        await this.checkpoint(step, epoch, pos, order, keeper);
        await callbacks.onCheckpoint?.({ step, epoch: info.epoch, loss: info.loss });
      }
    }
    // the last steps are evaluated too, so they can be the best (also when evalEvery does not divide the run)
    if (!stoppedEarly && step >= total && history.evals.at(-1)?.step !== step) await evaluateNow();
    await this.pullParams();
    if (cfg.checkpointDir) await this.checkpoint(step, epoch, pos, order, keeper);
    if (cfg.earlyStopping) keeper.restoreInto(this.params);
    this.commit();
    for (const { adapter, allocator } of allocators) {
      const done = allocator.finish(this.model.adapter(adapter));
      if (!done) continue;
      this.model.replaceAdapterState(adapter, done.config, done.tensors);
      // the adapter's tensors changed shape (AdaLoRA keeps the kept triplets): later evaluations use the new ones
      // (IncreLoRA also drops its training-only probes)
      const initial = new Map(this.spec.initial);
      const owners = new Map(this.spec.owners);
      for (const [n, o] of this.spec.owners) {
        if (o.adapter !== adapter) continue;
        const t = done.tensors.get(o.key);
        if (!t) {
          initial.delete(n);
          owners.delete(n);
          this.params.delete(n);
          continue;
        }
        initial.set(n, t);
        this.params.set(n, Float32Array.from(t.data as Float32Array));
      }
      this.spec = { names: this.spec.names.filter((n) => initial.has(n)), owners, initial };
    }
    await this.release();
    return { history, steps: step, best: keeper.best, seconds: (performance.now() - t0) / 1000, stoppedEarly };
  }

  /** The allocators of the trainable adapters whose tuner has one (AdaLoRA's rank allocator). */
  private allocators(): { adapter: string; allocator: TrainingAllocator }[] {
    const owners = new Set([...this.spec.owners.values()].map((o) => o.adapter));
    return [...owners].flatMap((n) => {
      const a = this.model.adapter(n);
      const allocator = a.tuner.training?.allocator?.(a) ?? null;
      return allocator ? [{ adapter: n, allocator }] : [];
    });
  }

  /** After optimizer step `step` (0-based): each allocator sees its adapter's values and gradients by tensor key. */
  private runAllocators(allocators: readonly { adapter: string; allocator: TrainingAllocator }[], step: number, grads: ReadonlyMap<string, Float32Array> | null): void {
    if (allocators.length === 0) return;
    if (!grads) throw new ConfigError("trainer", "residentOptimizer", "an adapter's allocator (AdaLoRA) needs the host optimizer");
    for (const { adapter, allocator } of allocators) {
      const values = new Map<string, Float32Array>();
      const g = new Map<string, Float32Array>();
      for (const [n, o] of this.spec.owners) {
        if (o.adapter !== adapter) continue;
        values.set(o.key, this.params.get(n)!);
        const gv = grads.get(n);
        if (gv) g.set(o.key, gv);
      }
      allocator.afterStep(step, values, g);
    }
  }

  private async checkpoint(step: number, epoch: number, pos: number, order: Int32Array, keeper: BestKeeper<EvalResult & { step: number }>): Promise<void> {
    await this.pullParams();
    const optimizer = await this.strategy!.optimizerState();
    const es = keeper.state();
    const bestParams = keeper.bestParams;
    const extraTensors = new Map<string, Tensor>();
    if (bestParams) for (const [k, v] of bestParams) extraTensors.set(BEST_PREFIX + k, { dtype: "float32", shape: [...this.spec.initial.get(k)!.shape], data: v } as Tensor);
    const allocatorStates: Record<string, JsonValue> = {};
    for (const { adapter, allocator } of this.liveAllocators) {
      const st = allocator.state?.();
      if (!st) continue;
      allocatorStates[adapter] = st.json as JsonValue;
      for (const [k, t] of st.tensors) extraTensors.set(`${ALLOCATOR_PREFIX}${adapter}/${k}`, t);
    }
    saveCheckpoint(this.config.checkpointDir!, {
      step,
      epoch: epoch + pos / order.length,
      params: this.currentParams(),
      optimizer,
      rng: { data: this.rng.state() },
      dataOrder: order,
      extras: {
        position: pos,
        ...(this.scaler ? { gradScaler: { ...this.scaler.stateDict() } } : {}),
        earlyStopping: { sinceBest: es.sinceBest, best: es.best ? finiteFields(es.best) : null },
        ...(Object.keys(allocatorStates).length > 0 ? { allocators: allocatorStates } : {}),
      },
      ...(extraTensors.size > 0 ? { tensors: extraTensors } : {}),
    });
  }

  async release(): Promise<void> {
    await this.pullParams();
    await this.strategy?.release();
    await this.evalStep?.release();
    this.strategy = null;
    this.evalStep = null;
  }
}
