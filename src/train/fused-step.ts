/**
 * A training step whose graph also applies the optimizer: forward, loss, backward, optional
 * global-norm gradient clipping and the AdamW update in one `session.run`. Parameters and Adam
 * moments are graph inputs and the updated ones graph outputs, kept in onnxruntime between steps
 * (`CompiledGraph.runResident`, on webgpu as GPU buffers), so a step sends the batch and a few
 * scalars in and gets the loss (and gradient norm) out.
 *
 * The update is `torch.optim.AdamW`'s, as `optim/adamw.ts` implements it, per element in float32:
 *
 *     g ← g · min(1, maxNorm / (‖g‖ + 1e-6))             only with maxGradNorm (clip_grad_norm_)
 *     m ← β1·m + (1 − β1)·g
 *     v ← β2·v + (1 − β2)·g²
 *     p ← p·(1 − lr·wd) − (lr / (1 − β1^t)) · m / (sqrt(v) / sqrt(1 − β2^t) + eps)
 *
 * The learning rate and the bias corrections are inputs computed in JavaScript each step (float64,
 * rounded to float32 once): per parameter `adamw::step_size` = lr / (1 − β1^t),
 * `adamw::bias_correction2_sqrt` = sqrt(1 − β2^t) and `adamw::decay` = 1 − lr·wd (its own weight
 * decay and step count, as PyTorch keeps them), so one session serves every step of a schedule
 * and a state loaded from a checkpoint. β1, β2, eps and the clipping norm are inputs too.
 * amsgrad is not implemented here (the trainer keeps the host optimizer for it).
 *
 * Mixed precision (`dtype: "float16"`, or any dtype with a `scaler`): the backward pass is seeded
 * with the loss scale, the gradients are unscaled in the graph (multiplied by the float32
 * reciprocal, as `GradScaler.unscale_`), and when any of them is inf or NaN the graph leaves the
 * parameters and moments as they were; the step reports `skipped`, the optimizer's step counts do
 * not advance and the `GradScaler` backs off, as `scaler.step(optimizer)` + `scaler.update()` in
 * PyTorch. Clipping sees the unscaled gradients.
 */
import { ConfigError, ShapeMismatchError, UnsupportedOptionError } from "../errors.js";
import * as G from "../graph/api.js";
import { grad } from "../graph/autodiff.js";
import type { Graph } from "../graph/graph.js";
import type { Value } from "../graph/types.js";
import type { PeftModel } from "../peft/peft-model.js";
import { CompiledGraph, type OutputLocation, ResidentValue, type SessionOptions } from "../runtime/session.js";
import type { Tensor } from "../tensor.js";
import { ADAMW_DEFAULTS } from "./optim/adamw.js";
import { buildState, checkAdamHyperparams, checkNumber, checkState, savedNumber, takeBuffer } from "./optim/common.js";
import type { NamedParam, OptimizerState } from "./optim/types.js";
import { GradScaler, LOSS_SCALE_INPUT } from "./grad-scaler.js";
import { type Batch, type LossGraphOptions, buildLossGraph } from "./step.js";

/** Graph names of the fused step's optimizer inputs and outputs. */
export const FUSED_NAMES = {
  expAvg: (p: string) => `exp_avg::${p}`,
  expAvgSq: (p: string) => `exp_avg_sq::${p}`,
  nextParam: (p: string) => `next::${p}`,
  nextExpAvg: (p: string) => `next_exp_avg::${p}`,
  nextExpAvgSq: (p: string) => `next_exp_avg_sq::${p}`,
  stepSize: "adamw::step_size",
  biasCorrection2Sqrt: "adamw::bias_correction2_sqrt",
  decay: "adamw::decay",
  beta1: "adamw::beta1",
  oneMinusBeta1: "adamw::one_minus_beta1",
  beta2: "adamw::beta2",
  oneMinusBeta2: "adamw::one_minus_beta2",
  eps: "adamw::eps",
  maxNorm: "clip::max_norm",
  gradNorm: "grad_norm",
  lossScale: LOSS_SCALE_INPUT,
  invLossScale: "loss_scale::inverse",
  gradsFinite: "grads_finite",
} as const;

export interface FusedAdamWStepOptions extends LossGraphOptions {
  readonly session?: SessionOptions;
  /** Base learning rate (default 1e-3), used when `run` gets none and saved in the state. */
  readonly lr?: number;
  /** Default [0.9, 0.999]. */
  readonly betas?: readonly [number, number];
  /** Default 1e-8. */
  readonly eps?: number;
  /** Default 1e-2. */
  readonly weightDecay?: number;
  /**
   * Per-parameter weight decay (as `NamedParam.weightDecay`): graph input name → its own value, or
   * a function of the name returning one (undefined: the default), e.g. 0 for biases and norms.
   */
  readonly weightDecayOverrides?: ReadonlyMap<string, number> | ((name: string) => number | undefined);
  /** Must be false (default): AMSGrad's extra buffer is not part of the fused graph. */
  readonly amsgrad?: boolean;
  /** Clip the global gradient L2 norm in the graph (`clip_grad_norm_`); 0 or undefined: no clipping. */
  readonly maxGradNorm?: number;
  /**
   * Loss scaling (PyTorch `GradScaler` semantics, see the file comment). Default: a dynamic
   * `GradScaler` with PyTorch's defaults when `dtype` is float16, none otherwise. The step updates
   * it; pass your own to read or checkpoint its state.
   */
  readonly scaler?: GradScaler;
}

export interface FusedStepResult {
  readonly loss: number;
  /** Global gradient norm before clipping (only with `maxGradNorm`; unscaled). */
  readonly gradNorm?: number;
  /** With loss scaling: the scale this step's backward pass was seeded with. */
  readonly lossScale?: number;
  /** With loss scaling: a gradient was inf or NaN, so the update was skipped. */
  readonly skipped?: boolean;
}

/** Host tensor or a value a run left in onnxruntime. */
type Slot = Tensor | ResidentValue;

function zeros(t: Tensor): Tensor<"float32"> {
  return { dtype: "float32", shape: [...t.shape], data: new Float32Array(t.data.length) };
}

function f32Vector(values: readonly number[]): Tensor<"float32"> {
  return { dtype: "float32", shape: [values.length], data: Float32Array.from(values) };
}

function f32Scalar(v: number): Tensor<"float32"> {
  return { dtype: "float32", shape: [], data: Float32Array.of(v) };
}

function release(s: Slot): void {
  if (s instanceof ResidentValue) s.dispose();
}

/** A host copy of a slot (never aliasing the step's own buffers). */
async function toHost(s: Slot): Promise<Tensor> {
  return s instanceof ResidentValue ? s.download() : { ...s, shape: [...s.shape], data: s.data.slice() as Tensor["data"] };
}

/** The AdamW update of one parameter, appended to the graph; returns [p, m, v] after the step. */
function adamwUpdate(p: Value, g: Value, m: Value, v: Value, k: { ss: Value; bc2: Value; decay: Value; b1: Value; omb1: Value; b2: Value; omb2: Value; eps: Value }): Value[] {
  const m1 = G.add(G.mul(m, k.b1), G.mul(g, k.omb1));
  const v1 = G.add(G.mul(v, k.b2), G.mul(G.mul(g, k.omb2), g));
  const denom = G.add(G.div(G.sqrt(v1), k.bc2), k.eps);
  const p1 = G.sub(G.mul(p, k.decay), G.div(G.mul(k.ss, m1), denom));
  return [p1, m1, v1];
}

/** The fused step's graph, before a session is made of it (see `buildFusedAdamWGraph`). */
export interface FusedAdamWGraph {
  readonly graph: Graph;
  readonly names: readonly string[];
  readonly owners: ReadonlyMap<string, { adapter: string; key: string }>;
  readonly initial: ReadonlyMap<string, Tensor>;
  /** Whether the graph clips the gradient norm (and outputs `grad_norm`). */
  readonly clips: boolean;
  /** Whether the graph scales the loss (inputs `loss_scale`, its inverse; output `grads_finite`). */
  readonly scaled: boolean;
  /** Per trainable input: its weight-decay override, or undefined for the default. */
  readonly weightDecays: readonly (number | undefined)[];
  /** The outputs that stay on the device between steps (new parameters and moments). */
  readonly stateOutputs: readonly string[];
}

/**
 * Builds the fused step's graph: the loss graph of `pm`, its gradients, optional clipping and the
 * AdamW update (inputs and outputs named by `FUSED_NAMES`). Checks the options first.
 */
export function buildFusedAdamWGraph(pm: PeftModel, opts: FusedAdamWStepOptions): FusedAdamWGraph {
  const who = "FusedAdamWStep";
  if (opts.amsgrad) throw new UnsupportedOptionError(who, "amsgrad", true, "the fused step implements AdamW without AMSGrad; use the AdamW optimizer");
  const [beta1, beta2] = opts.betas ?? ADAMW_DEFAULTS.betas;
  checkAdamHyperparams(who, {
    lr: opts.lr ?? ADAMW_DEFAULTS.lr,
    beta1,
    beta2,
    eps: opts.eps ?? ADAMW_DEFAULTS.eps,
    weightDecay: opts.weightDecay ?? ADAMW_DEFAULTS.weightDecay,
  });
  const maxNorm = opts.maxGradNorm ?? 0;
  checkNumber(who, "maxGradNorm", maxNorm, 0);
  if (opts.dtype !== undefined && opts.dtype !== "float32" && opts.dtype !== "float16") {
    throw new UnsupportedOptionError(who, "dtype", opts.dtype, "the fused AdamW step computes in float32, or float16 with float32 master weights and moments");
  }
  const lg = buildLossGraph(pm, opts);
  const g = lg.graph;
  const overrides = opts.weightDecayOverrides;
  if (overrides instanceof Map) {
    for (const n of overrides.keys()) {
      if (!lg.names.includes(n)) throw new ConfigError(who, `weightDecayOverrides.${n}`, `'${n}' is not a trainable input (trainable: ${lg.names.join(", ")})`);
    }
  }
  const weightDecays = lg.names.map((n) => {
    const w = typeof overrides === "function" ? overrides(n) : overrides?.get(n);
    if (w !== undefined) checkNumber(who, `weightDecayOverrides.${n}`, w, 0);
    return w;
  });
  for (const n of lg.names) {
    const t = lg.initial.get(n)!;
    if (t.dtype !== "float32") throw new UnsupportedOptionError(who, `${n} dtype`, t.dtype, "the fused AdamW step trains float32 tensors only");
  }
  const scaled = opts.scaler !== undefined || opts.dtype === "float16";
  let grads: Value[];
  let finite: Value | null = null;
  const sumOfSquares = (gs: readonly Value[]): Value => {
    const squares = gs.map((gv) => G.reshape(G.sumAll(G.mul(gv, gv)), [1]));
    return G.sumAll(squares.length === 1 ? squares[0]! : G.concat(squares, 0));
  };
  let sq: Value | null = null;
  if (scaled) {
    const seed = G.cast(g.input(FUSED_NAMES.lossScale, "float32", []), lg.loss.dtype);
    const inv = g.input(FUSED_NAMES.invLossScale, "float32", []);
    grads = grad(lg.loss, lg.params, { seed }).map((gv) => G.mul(gv, inv));
    // inf and NaN make x − x NaN; unscaled gradients are far from float32's range otherwise
    sq = sumOfSquares(grads);
    finite = G.equal(G.sub(sq, sq), 0);
    g.output(finite, FUSED_NAMES.gradsFinite);
  } else {
    grads = grad(lg.loss, lg.params);
  }
  const clips = maxNorm > 0;
  if (clips) {
    const total = G.sqrt(sq ?? sumOfSquares(grads));
    g.output(total, FUSED_NAMES.gradNorm);
    const maxNormIn = g.input(FUSED_NAMES.maxNorm, "float32", []);
    const coef = G.minimum(G.div(maxNormIn, G.add(total, 1e-6)), 1);
    grads = grads.map((gv) => G.mul(gv, coef));
  }
  const count = lg.names.length;
  const vec = (name: string) => g.input(name, "float32", [count]);
  const [ssAll, bc2All, decayAll] = [vec(FUSED_NAMES.stepSize), vec(FUSED_NAMES.biasCorrection2Sqrt), vec(FUSED_NAMES.decay)];
  const scalar = (name: string) => g.input(name, "float32", []);
  const shared = {
    b1: scalar(FUSED_NAMES.beta1),
    omb1: scalar(FUSED_NAMES.oneMinusBeta1),
    b2: scalar(FUSED_NAMES.beta2),
    omb2: scalar(FUSED_NAMES.oneMinusBeta2),
    eps: scalar(FUSED_NAMES.eps),
  };
  const stateOutputs: string[] = [];
  lg.names.forEach((n, i) => {
    const p = lg.params[i]!;
    const m = g.input(FUSED_NAMES.expAvg(n), "float32", p.shape);
    const v = g.input(FUSED_NAMES.expAvgSq(n), "float32", p.shape);
    const at = g.scalar(i, "int64");
    const k = { ...shared, ss: G.gather(ssAll, at), bc2: G.gather(bc2All, at), decay: G.gather(decayAll, at) };
    const updated = adamwUpdate(p, grads[i]!, m, v, k);
    // a skipped step (a gradient overflowed) keeps the parameter and its moments
    const [p1, m1, v1] = finite ? updated.map((u, j) => G.where(finite, u, [p, m, v][j]!)) : updated;
    const outs: [Value, string][] = [
      [p1!, FUSED_NAMES.nextParam(n)],
      [m1!, FUSED_NAMES.nextExpAvg(n)],
      [v1!, FUSED_NAMES.nextExpAvgSq(n)],
    ];
    for (const [val, name] of outs) {
      g.output(val, name);
      stateOutputs.push(name);
    }
  });
  return { graph: g, names: lg.names, owners: lg.owners, initial: lg.initial, clips, scaled, weightDecays, stateOutputs };
}

export class FusedAdamWStep {
  readonly kind = "adamw" as const;
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  /** The clipping norm fed each step (used when `clips`: the graph was built with `maxGradNorm` > 0). */
  maxGradNorm: number;
  private steps = 0;
  private paramSteps: number[];
  private paramWeightDecay: number[];
  private params: Slot[];
  private expAvg: Slot[];
  private expAvgSq: Slot[];
  private readonly keep: string[];
  /** Trainable graph inputs, in order. */
  readonly names: readonly string[];
  /** Graph input → owning adapter and tensor key. */
  readonly owners: ReadonlyMap<string, { adapter: string; key: string }>;
  /** Initial values of the trainable inputs. */
  readonly initial: ReadonlyMap<string, Tensor>;
  /** Whether the graph clips the gradient norm (and outputs it). */
  readonly clips: boolean;
  /** The loss scaler, when the step scales the loss (float16). */
  readonly scaler: GradScaler | null;

  private constructor(
    readonly session: CompiledGraph,
    fg: FusedAdamWGraph,
    opts: FusedAdamWStepOptions,
  ) {
    this.names = fg.names;
    this.owners = fg.owners;
    this.initial = fg.initial;
    this.clips = fg.clips;
    this.scaler = fg.scaled ? (opts.scaler ?? new GradScaler()) : null;
    this.keep = [...fg.stateOutputs];
    this.lr = opts.lr ?? ADAMW_DEFAULTS.lr;
    [this.beta1, this.beta2] = opts.betas ?? ADAMW_DEFAULTS.betas;
    this.eps = opts.eps ?? ADAMW_DEFAULTS.eps;
    this.weightDecay = opts.weightDecay ?? ADAMW_DEFAULTS.weightDecay;
    this.maxGradNorm = opts.maxGradNorm ?? 0;
    this.paramWeightDecay = fg.weightDecays.map((w) => w ?? this.weightDecay);
    this.paramSteps = this.names.map(() => 0);
    this.params = this.names.map((n) => this.initial.get(n)!);
    this.expAvg = this.names.map((n) => zeros(this.initial.get(n)!));
    this.expAvgSq = this.names.map((n) => zeros(this.initial.get(n)!));
  }

  static async create(pm: PeftModel, opts: FusedAdamWStepOptions): Promise<FusedAdamWStep> {
    const fg = buildFusedAdamWGraph(pm, opts);
    const location: Record<string, OutputLocation> = { ...opts.session?.outputLocation };
    for (const n of fg.stateOutputs) location[n] = "device";
    const session = await CompiledGraph.create(fg.graph, { ...opts.session, outputLocation: location });
    return new FusedAdamWStep(session, fg, opts);
  }

  /** Optimizer steps taken (as `Optimizer.stepCount`). */
  get stepCount(): number {
    return this.steps;
  }

  /** One training step on `batch` with learning rate `lr` (default: the base rate): loss, gradient norm, updated state kept in onnxruntime. */
  async run(batch: Batch, lr = this.lr): Promise<FusedStepResult> {
    checkNumber("FusedAdamWStep", "lr", lr, 0);
    const t = this.paramSteps.map((s) => s + 1);
    const feeds: Record<string, Tensor | ResidentValue> = {
      input_ids: batch.inputIds,
      attention_mask: batch.attentionMask,
      labels: batch.labels,
      [FUSED_NAMES.stepSize]: f32Vector(t.map((ti) => lr / (1 - this.beta1 ** ti))),
      [FUSED_NAMES.biasCorrection2Sqrt]: f32Vector(t.map((ti) => Math.sqrt(1 - this.beta2 ** ti))),
      [FUSED_NAMES.decay]: f32Vector(this.paramWeightDecay.map((wd) => 1 - lr * wd)),
      [FUSED_NAMES.beta1]: f32Scalar(this.beta1),
      [FUSED_NAMES.oneMinusBeta1]: f32Scalar(1 - this.beta1),
      [FUSED_NAMES.beta2]: f32Scalar(this.beta2),
      [FUSED_NAMES.oneMinusBeta2]: f32Scalar(1 - this.beta2),
      [FUSED_NAMES.eps]: f32Scalar(this.eps),
    };
    if (this.clips) feeds[FUSED_NAMES.maxNorm] = f32Scalar(this.maxGradNorm);
    const lossScale = this.scaler?.scale;
    if (lossScale !== undefined) {
      feeds[FUSED_NAMES.lossScale] = f32Scalar(lossScale);
      feeds[FUSED_NAMES.invLossScale] = f32Scalar(1 / lossScale);
    }
    this.names.forEach((n, i) => {
      feeds[n] = this.params[i]!;
      feeds[FUSED_NAMES.expAvg(n)] = this.expAvg[i]!;
      feeds[FUSED_NAMES.expAvgSq(n)] = this.expAvgSq[i]!;
    });
    const { host, kept } = await this.session.runResident(feeds, { keep: this.keep });
    const old = [...this.params, ...this.expAvg, ...this.expAvgSq];
    this.params = this.names.map((n) => kept.get(FUSED_NAMES.nextParam(n))!);
    this.expAvg = this.names.map((n) => kept.get(FUSED_NAMES.nextExpAvg(n))!);
    this.expAvgSq = this.names.map((n) => kept.get(FUSED_NAMES.nextExpAvgSq(n))!);
    old.forEach(release);
    const finite = this.scaler ? Boolean(host[FUSED_NAMES.gradsFinite]!.data[0]) : true;
    this.scaler?.update(!finite);
    if (finite) {
      this.paramSteps = t;
      this.steps++;
    }
    const gradNorm = host[FUSED_NAMES.gradNorm];
    return {
      loss: Number(host.loss!.data[0]),
      ...(gradNorm ? { gradNorm: Number(gradNorm.data[0]) } : {}),
      ...(lossScale !== undefined ? { lossScale, skipped: !finite } : {}),
    };
  }

  /** The current parameter values, downloaded (graph input name → tensor). */
  async downloadParams(): Promise<Map<string, Tensor>> {
    const out = new Map<string, Tensor>();
    for (const [i, n] of this.names.entries()) out.set(n, await toHost(this.params[i]!));
    return out;
  }

  /** Replaces the parameter values (e.g. from a checkpoint or early stopping's best); the moments stay. */
  setParams(values: ReadonlyMap<string, Tensor>): void {
    for (const [n] of values) if (!this.names.includes(n)) throw new ConfigError("FusedAdamWStep.setParams", n, `'${n}' is not a trainable input`);
    const next = this.names.map((n, i) => {
      const t = values.get(n);
      if (!t) return this.params[i]!;
      const want = this.initial.get(n)!;
      if (t.dtype !== "float32" || t.data.length !== want.data.length) {
        throw new ShapeMismatchError(n, want.shape, t.shape, `FusedAdamWStep.setParams needs float32 [${want.shape.join(", ")}], got ${t.dtype}`);
      }
      return { dtype: "float32" as const, shape: [...want.shape], data: Float32Array.from(t.data as Float32Array) };
    });
    this.params.forEach((s, i) => {
      if (s !== next[i]) release(s);
    });
    this.params = next;
  }

  private namedParams(): NamedParam[] {
    return this.names.map((n, i) => ({ name: n, data: new Float32Array(this.initial.get(n)!.data.length), weightDecay: this.paramWeightDecay[i]! }));
  }

  /** The optimizer state in `AdamW.stateDict()` form (moments downloaded), for checkpoints. */
  async stateDict(): Promise<OptimizerState> {
    const buffers: Record<string, Float32Array | null>[] = [];
    for (let i = 0; i < this.names.length; i++) {
      const started = this.paramSteps[i]! > 0;
      buffers.push({
        exp_avg: started ? ((await toHost(this.expAvg[i]!)).data as Float32Array) : null,
        exp_avg_sq: started ? ((await toHost(this.expAvgSq[i]!)).data as Float32Array) : null,
      });
    }
    return buildState(
      "adamw",
      this.steps,
      { lr: this.lr, beta1: this.beta1, beta2: this.beta2, eps: this.eps, weightDecay: this.weightDecay, amsgrad: false },
      this.namedParams(),
      this.paramSteps,
      this.paramWeightDecay,
      buffers,
    );
  }

  /** Restores a state from `AdamW.stateDict()` or `stateDict()` (hyperparameters included, as `torch.optim` does). */
  loadStateDict(state: OptimizerState): void {
    const who = "FusedAdamWStep";
    const params = this.namedParams();
    const info = checkState(who, "adamw", params, state);
    const h = state.hyperparams;
    if (h.amsgrad === true) throw new UnsupportedOptionError("optimizer state", "amsgrad", true, "the fused step has no AMSGrad buffer; resume with the AdamW optimizer");
    const num = (k: "lr" | "beta1" | "beta2" | "eps" | "weightDecay"): number => savedNumber(h, k, this[k]);
    const next = { lr: num("lr"), beta1: num("beta1"), beta2: num("beta2"), eps: num("eps"), weightDecay: num("weightDecay") };
    checkAdamHyperparams(who, next);
    const moments = params.map((p, i) => {
      const steps = info[i]!.step;
      const shape = this.initial.get(p.name)!.shape;
      const buf = (name: string): Tensor<"float32"> => ({ dtype: "float32", shape: [...shape], data: takeBuffer(state, p, steps, name, true) ?? new Float32Array(p.data.length) });
      return { m: buf("exp_avg"), v: buf("exp_avg_sq") };
    });
    Object.assign(this, next);
    [...this.expAvg, ...this.expAvgSq].forEach(release);
    this.expAvg = moments.map((x) => x.m);
    this.expAvgSq = moments.map((x) => x.v);
    this.paramSteps = info.map((p) => p.step);
    this.paramWeightDecay = info.map((p) => p.weightDecay);
    this.steps = state.step;
  }

  /** Frees the kept values and the session. */
  async release(): Promise<void> {
    [...this.params, ...this.expAvg, ...this.expAvgSq].forEach(release);
    await this.session.release();
  }
}
