/**
 * Loss scaling for float16 (mixed-precision) training, with PyTorch `torch.amp.GradScaler`
 * semantics. Gradients computed in float16 underflow to zero below 6·10⁻⁸ (and lose precision
 * below 6·10⁻⁵), so the backward pass is seeded with `scale` instead of 1: every gradient in the
 * graph is `scale` times larger. The float32 gradients that come out are divided by `scale`
 * (`unscale`) before clipping and the optimizer; if any is inf or NaN (the scaled backward
 * overflowed float16's 65504), the optimizer step is skipped and the scale is multiplied by
 * `backoffFactor`; after `growthInterval` consecutive good steps it is multiplied by
 * `growthFactor`. Static scaling keeps one scale and still skips steps that overflow.
 *
 * `LossScaledStep` is the training step for this: the model and task loss of `TrainStep`,
 * differentiated with the graph input `loss_scale` as the seed of the backward pass. The `loss`
 * output is the unscaled loss; only the gradients are scaled.
 */
import { ConfigError } from "../errors.js";
import * as G from "../graph/api.js";
import { grad } from "../graph/autodiff.js";
import type { PeftModel } from "../peft/peft-model.js";
import { CompiledGraph, type SessionOptions } from "../runtime/session.js";
import type { DType, Tensor } from "../tensor.js";
import type { LossTask } from "./loss.js";
import { type Batch, GRAD_PREFIX, type StepResult, buildLossGraph } from "./step.js";

/** How the loss is scaled in float16 training. */
export type LossScaling =
  | {
      readonly kind: "dynamic";
      /** First scale (PyTorch default 2¹⁶ = 65536). */
      readonly initScale?: number;
      /** Multiplier after `growthInterval` good steps (default 2). */
      readonly growthFactor?: number;
      /** Multiplier after a step with inf/NaN gradients (default 0.5). */
      readonly backoffFactor?: number;
      /** Consecutive good steps before the scale grows (default 2000). */
      readonly growthInterval?: number;
    }
  | { readonly kind: "static"; readonly scale: number };

/** PyTorch `GradScaler` defaults. */
export const GRAD_SCALER_DEFAULTS = { initScale: 65536, growthFactor: 2, backoffFactor: 0.5, growthInterval: 2000 } as const;

/** The scaler's state for checkpoints (PyTorch `GradScaler.state_dict()` fields that change). */
export interface GradScalerState {
  readonly scale: number;
  /** Good steps since the last change of the scale. */
  readonly growthTracker: number;
}

function positive(v: number, key: string, min = 0): number {
  if (typeof v !== "number" || !Number.isFinite(v) || !(v > min)) {
    throw new ConfigError("trainer", `lossScaling.${key}`, `must be a finite number > ${min}, got ${String(v)}`);
  }
  return v;
}

export class GradScaler {
  private current: number;
  private tracker = 0;
  readonly dynamic: boolean;
  readonly growthFactor: number;
  readonly backoffFactor: number;
  readonly growthInterval: number;

  constructor(cfg: LossScaling = { kind: "dynamic" }) {
    if (cfg.kind === "static") {
      this.dynamic = false;
      this.current = positive(cfg.scale, "scale");
      this.growthFactor = 1;
      this.backoffFactor = 1;
      this.growthInterval = Infinity;
      return;
    }
    if (cfg.kind !== "dynamic") throw new ConfigError("trainer", "lossScaling.kind", `must be "dynamic" or "static", got ${JSON.stringify((cfg as { kind: unknown }).kind)}`);
    this.dynamic = true;
    this.current = positive(cfg.initScale ?? GRAD_SCALER_DEFAULTS.initScale, "initScale");
    this.growthFactor = positive(cfg.growthFactor ?? GRAD_SCALER_DEFAULTS.growthFactor, "growthFactor", 1);
    const backoff = positive(cfg.backoffFactor ?? GRAD_SCALER_DEFAULTS.backoffFactor, "backoffFactor");
    if (backoff >= 1) throw new ConfigError("trainer", "lossScaling.backoffFactor", `must be < 1, got ${backoff}`);
    this.backoffFactor = backoff;
    const interval = cfg.growthInterval ?? GRAD_SCALER_DEFAULTS.growthInterval;
    if (!Number.isInteger(interval) || interval < 1) {
      throw new ConfigError("trainer", "lossScaling.growthInterval", `must be a positive integer, got ${String(interval)}`);
    }
    this.growthInterval = interval;
  }

  /** The factor the next backward pass is seeded with. */
  get scale(): number {
    return this.current;
  }

  /** Good steps since the scale last changed. */
  get growthTracker(): number {
    return this.tracker;
  }

  /**
   * Divides the gradients by the scale in place (PyTorch `unscale_`: multiplication by the
   * float32 reciprocal) and returns true when every value is finite.
   */
  unscale(grads: ReadonlyMap<string, Float32Array | Float64Array>): boolean {
    const inv = Math.fround(1 / this.current);
    let finite = true;
    for (const g of grads.values()) {
      for (let i = 0; i < g.length; i++) {
        const v = g[i]! * inv;
        g[i] = v;
        if (!Number.isFinite(v)) finite = false;
      }
    }
    return finite;
  }

  /** PyTorch `update()`: back off after an overflow, grow after `growthInterval` good steps. */
  update(foundInf: boolean): void {
    if (!this.dynamic) return;
    if (foundInf) {
      this.current *= this.backoffFactor;
      this.tracker = 0;
      return;
    }
    this.tracker++;
    if (this.tracker >= this.growthInterval) {
      const grown = this.current * this.growthFactor;
      // PyTorch keeps the old scale when growing would overflow float32
      if (Number.isFinite(Math.fround(grown))) this.current = grown;
      this.tracker = 0;
    }
  }

  /**
   * One step's bookkeeping: unscale `grads` in place, update the scale, and return whether the
   * optimizer should step (false when the gradients had inf or NaN).
   */
  unscaleAndUpdate(grads: ReadonlyMap<string, Float32Array | Float64Array>): boolean {
    const finite = this.unscale(grads);
    this.update(!finite);
    return finite;
  }

  stateDict(): GradScalerState {
    return { scale: this.current, growthTracker: this.tracker };
  }

  loadStateDict(s: GradScalerState): void {
    this.current = positive(s.scale, "scale");
    if (!Number.isInteger(s.growthTracker) || s.growthTracker < 0) {
      throw new ConfigError("checkpoint", "grad_scaler.growthTracker", `must be a non-negative integer, got ${String(s.growthTracker)}`);
    }
    this.tracker = s.growthTracker;
  }
}

/** Graph input holding the loss scale (a float32 scalar). */
export const LOSS_SCALE_INPUT = "loss_scale";

/** The model-building options of `TrainStepOptions`. */
export interface LossScaledStepOptions {
  readonly task: LossTask;
  readonly dtype?: DType;
  readonly seed?: number;
  readonly dropout?: boolean;
  /** Virtual tokens in front of the sequence (prompt tuning). */
  readonly prefixTokens?: number;
  readonly session?: SessionOptions;
}

/**
 * A training step whose gradients are `scaler.scale` × ∂loss/∂θ (the backward pass seeded with the
 * `loss_scale` input), read at each `run`. Same inputs, loss output and gradient outputs as
 * `TrainStep`; the gradients it returns are still scaled (unscale them with the scaler).
 */
export class LossScaledStep {
  private constructor(
    readonly session: CompiledGraph,
    readonly names: readonly string[],
    readonly owners: ReadonlyMap<string, { adapter: string; key: string }>,
    readonly initial: ReadonlyMap<string, Tensor>,
    readonly scaler: GradScaler,
  ) {}

  static async create(pm: PeftModel, scaler: GradScaler, opts: LossScaledStepOptions): Promise<LossScaledStep> {
    const { graph: g, loss, names, params, owners, initial } = buildLossGraph(pm, opts);
    const seed = G.cast(g.input(LOSS_SCALE_INPUT, "float32", []), loss.dtype);
    grad(loss, params, { seed }).forEach((gv, i) => g.output(gv, GRAD_PREFIX + names[i]!));
    const session = await CompiledGraph.create(g, opts.session ?? {});
    return new LossScaledStep(session, names, owners, initial, scaler);
  }

  /** Loss (unscaled) and scaled gradients for a batch at the given parameter values. */
  async run(batch: Batch, params: ReadonlyMap<string, Tensor>): Promise<StepResult> {
    const feeds: Record<string, Tensor> = {
      input_ids: batch.inputIds,
      attention_mask: batch.attentionMask,
      labels: batch.labels,
      [LOSS_SCALE_INPUT]: { dtype: "float32", shape: [], data: Float32Array.of(this.scaler.scale) },
    };
    for (const n of this.names) feeds[n] = params.get(n) ?? this.initial.get(n)!;
    const out = await this.session.run(feeds);
    const grads = new Map<string, Float32Array | Float64Array>();
    for (const n of this.names) grads.set(n, out[GRAD_PREFIX + n]!.data as Float32Array | Float64Array);
    return { loss: Number(out.loss!.data[0]), grads };
  }

  async release(): Promise<void> {
    await this.session.release();
  }
}
