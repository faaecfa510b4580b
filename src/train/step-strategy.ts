/**
 * How the `Trainer` executes one optimizer step, behind one interface, in two strategies:
 *   - host: a loss + gradients run per micro-batch, accumulation, loss-scale unscaling, clipping
 *     and the optimizer in JavaScript (any optimizer, any accumulation);
 *   - resident: clipping and AdamW inside the step's graph (`FusedAdamWStep`), parameters and
 *     moments kept in onnxruntime between steps and downloaded only when the host reads them.
 * The trainer's loop (batches, schedule, evaluation, early stopping, checkpoints) is the same for
 * both.
 */
import type { PeftModel } from "../peft/peft-model.js";
import type { Tensor } from "../tensor.js";
import type { FusedAdamWStep } from "./fused-step.js";
import type { GradScaler, LossScaledStep } from "./grad-scaler.js";
import { clipGradNorm } from "./optim/index.js";
import type { Optimizer, OptimizerState } from "./optim/types.js";
import type { Batch, TrainStep } from "./step.js";

/** The trainable inputs of a step. */
export interface StepSpec {
  readonly names: readonly string[];
  readonly owners: ReadonlyMap<string, { adapter: string; key: string }>;
  readonly initial: ReadonlyMap<string, Tensor>;
}

/** Writes trained values (graph input name → data) back into the adapters of `model` that own them (copies). */
export function commitParams(model: PeftModel, spec: StepSpec, values: ReadonlyMap<string, Float32Array>): void {
  const byAdapter = new Map<string, Map<string, Tensor>>();
  for (const [n, d] of values) {
    const o = spec.owners.get(n)!;
    if (!byAdapter.has(o.adapter)) byAdapter.set(o.adapter, new Map());
    byAdapter.get(o.adapter)!.set(o.key, { dtype: "float32", shape: spec.initial.get(n)!.shape, data: Float32Array.from(d) });
  }
  for (const [a, m] of byAdapter) model.updateAdapterTensors(a, m);
}

/** How an optimizer step ended. */
export interface StepOutcome {
  /** Global gradient norm before clipping (0 when not clipped). */
  readonly gradNorm: number;
  /** False when the gradients overflowed (float16) and the update was skipped. */
  readonly applied: boolean;
}

export interface StepStrategy {
  readonly spec: StepSpec;
  /** Starts an optimizer step at learning rate `lr`. */
  begin(lr: number): void;
  /**
   * Runs one micro-batch of the step; returns its loss × `weight`. `weight` (default 1): the
   * micro-batch's share of its batch's loss when a `TrainingGate` split the batch into slices
   * (the host strategy scales its gradients by it; the resident one runs whole batches only).
   */
  microBatch(batch: Batch, weight?: number): Promise<number>;
  /** Applies the step's update; null when no micro-batch ran. */
  finish(): StepOutcome | null;
  /** The last step's gradients (graph input name → data, after unscaling and clipping); null when they stay on the device. */
  gradients(): ReadonlyMap<string, Float32Array> | null;
  /** Brings the host parameters up to date (the resident strategy downloads when a step ran since). */
  sync(): Promise<void>;
  /** The optimizer's state, for a checkpoint (call `sync` first). */
  optimizerState(): Promise<OptimizerState>;
  /** Continues from a checkpoint: the host parameters were just restored, and this optimizer state. */
  resume(state: OptimizerState): void;
  release(): Promise<void>;
}

/** The host strategy: gradients to JavaScript, accumulated, unscaled, clipped, then `optimizer.step`. */
export class HostStepStrategy implements StepStrategy {
  private gsum = new Map<string, Float32Array>();
  private lr = 0;

  constructor(
    private readonly step: TrainStep | LossScaledStep,
    private readonly optimizer: Optimizer,
    private readonly currentParams: () => ReadonlyMap<string, Tensor>,
    private readonly opts: { accumulation: number; maxGradNorm?: number; scaler: GradScaler | null },
  ) {}

  get spec(): StepSpec {
    return this.step;
  }

  begin(lr: number): void {
    this.lr = lr;
    this.gsum = new Map();
  }

  async microBatch(batch: Batch, weight = 1): Promise<number> {
    const accum = this.opts.accumulation;
    const r = await this.step.run(batch, this.currentParams());
    for (const [n, g] of r.grads) {
      let acc = this.gsum.get(n);
      if (weight === 0) {
        // a slice without labels (its loss is 0/0): nothing to add, but the step did run
        if (!acc) this.gsum.set(n, new Float32Array(g.length));
        continue;
      }
      if (weight === 1) {
        if (!acc) this.gsum.set(n, Float32Array.from(g as Float32Array, (v) => v / accum));
        else for (let i = 0; i < acc.length; i++) acc[i]! += g[i]! / accum;
        continue;
      }
      if (!acc) this.gsum.set(n, (acc = new Float32Array(g.length)));
      for (let i = 0; i < acc.length; i++) acc[i]! += (g[i]! * weight) / accum;
    }
    return weight === 0 ? 0 : r.loss * weight;
  }

  finish(): StepOutcome | null {
    if (this.gsum.size === 0) return null;
    // float16: unscale the gradients; skip the update (and lower the scale) when one overflowed
    const finite = this.opts.scaler ? this.opts.scaler.unscaleAndUpdate(this.gsum) : true;
    const gradNorm = this.opts.maxGradNorm && finite ? clipGradNorm(this.gsum, this.opts.maxGradNorm) : 0;
    if (finite) this.optimizer.step(this.gsum, this.lr);
    return { gradNorm, applied: finite };
  }

  gradients(): ReadonlyMap<string, Float32Array> | null {
    return this.gsum;
  }

  async sync(): Promise<void> {}

  async optimizerState(): Promise<OptimizerState> {
    return this.optimizer.stateDict();
  }

  resume(state: OptimizerState): void {
    this.optimizer.loadStateDict(state);
  }

  async release(): Promise<void> {
    await this.step.release();
  }
}

/** The resident strategy: one fused run per step (accumulation 1), the update inside the graph. */
export class ResidentStepStrategy implements StepStrategy {
  /** The fused step's parameters are newer than the host's (download before reading them). */
  private deviceAhead = false;
  private lr = 0;
  private outcome: StepOutcome | null = null;

  constructor(
    private readonly fused: FusedAdamWStep,
    private readonly params: ReadonlyMap<string, Float32Array>,
    private readonly currentParams: () => ReadonlyMap<string, Tensor>,
  ) {}

  get spec(): StepSpec {
    return this.fused;
  }

  begin(lr: number): void {
    this.lr = lr;
    this.outcome = null;
  }

  async microBatch(batch: Batch, weight = 1): Promise<number> {
    if (weight !== 1) throw new RangeError("the resident step runs whole batches (weight 1); a gated trainer uses the host strategy");
    // accumulation is 1 here: this micro-batch is the whole step, update included
    const r = await this.fused.run(batch, this.lr);
    this.deviceAhead = true;
    this.outcome = { gradNorm: r.gradNorm ?? 0, applied: !(r.skipped ?? false) };
    return r.loss;
  }

  finish(): StepOutcome | null {
    return this.outcome;
  }

  gradients(): null {
    return null;
  }

  async sync(): Promise<void> {
    if (!this.deviceAhead) return;
    for (const [n, t] of await this.fused.downloadParams()) this.params.get(n)!.set(t.data as Float32Array);
    this.deviceAhead = false;
  }

  optimizerState(): Promise<OptimizerState> {
    return this.fused.stateDict();
  }

  resume(state: OptimizerState): void {
    this.fused.setParams(this.currentParams());
    this.fused.loadStateDict(state);
  }

  async release(): Promise<void> {
    await this.sync();
    await this.fused.release();
  }
}
