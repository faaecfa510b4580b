/**
 * Optimizer types. Optimizers update host `Float32Array` parameters in place from gradients
 * given each step, and expose their state as plain typed arrays and numbers for checkpoints.
 */

/**
 * A trainable parameter. `weightDecay` overrides the optimizer's default for this parameter;
 * `lrScale` multiplies the step's learning rate for it (a PyTorch parameter group with its own lr,
 * e.g. LoRA+'s B factors).
 */
export interface NamedParam {
  readonly name: string;
  readonly data: Float32Array;
  readonly weightDecay?: number;
  readonly lrScale?: number;
}

/**
 * Gradients for one step: an array aligned with the parameters (`null` = no gradient this step,
 * like a PyTorch parameter whose `.grad` is None: it is skipped and its state does not advance),
 * or a map from parameter name (absent names are skipped; unknown names are an error).
 */
export type Gradients = readonly (Float32Array | null)[] | ReadonlyMap<string, Float32Array>;

export type OptimizerKind = "adamw" | "sgd";

/** Per-parameter entry of an optimizer state: PyTorch keeps a step count per parameter. */
export interface ParamStateInfo {
  readonly name: string;
  /** Updates this parameter has received. */
  readonly step: number;
  readonly weightDecay: number;
}

/**
 * An optimizer's full state. `tensors` holds PyTorch's per-parameter buffers under
 * `<param name>.<buffer>` (`exp_avg`, `exp_avg_sq`, `max_exp_avg_sq`, `momentum_buffer`); a
 * parameter that has not been updated yet has none, as in PyTorch. Everything except `tensors`
 * is JSON; `tensors` goes to safetensors.
 */
export interface OptimizerState {
  readonly kind: OptimizerKind;
  /** Calls to `step()` so far. */
  readonly step: number;
  readonly hyperparams: Readonly<Record<string, number | boolean>>;
  readonly params: readonly ParamStateInfo[];
  readonly tensors: ReadonlyMap<string, Float32Array>;
}

export interface Optimizer {
  readonly kind: OptimizerKind;
  readonly params: readonly NamedParam[];
  /** The base learning rate (used when `step` gets no `lr`). */
  lr: number;
  /** Calls to `step()` so far. */
  readonly stepCount: number;
  /** One update of every parameter that has a gradient; `lr` (e.g. from a schedule) overrides the base rate for this step. */
  step(grads: Gradients, lr?: number): void;
  /** A copy of the state (tensors are copied). */
  stateDict(): OptimizerState;
  /** Restores a state from `stateDict()` (hyperparameters included, as `torch.optim` does). */
  loadStateDict(state: OptimizerState): void;
}
