/**
 * AdamW with `torch.optim.AdamW` defaults and semantics (lr 1e-3, betas (0.9, 0.999),
 * eps 1e-8, weight_decay 1e-2, amsgrad false). For each parameter with a gradient, at its
 * step t (counted per parameter, as PyTorch does):
 *
 *     p      ← p · (1 − lr·wd)                          decoupled decay, before the Adam update
 *     m      ← β1·m + (1 − β1)·g                        (torch: m.lerp_(g, 1 − β1))
 *     v      ← β2·v + (1 − β2)·g²
 *     v̂max   ← max(v̂max, v)                             amsgrad only; the denominator then uses v̂max
 *     denom  = sqrt(v) / sqrt(1 − β2^t) + eps
 *     p      ← p − (lr / (1 − β1^t)) · m / denom
 *
 * Numerics: parameters and the state buffers `exp_avg`, `exp_avg_sq`, `max_exp_avg_sq` are
 * float32, as in PyTorch. Each element's update is computed in float64 from the stored float32
 * values, and each result (m, v, v̂max, p) is rounded to float32 once, when stored. PyTorch
 * rounds after every tensor op (and its vectorised CPU `lerp` uses fused multiply-add), so
 * results agree with PyTorch to about one float32 ulp per step, not bit for bit; the scalar
 * factors (bias corrections, step size) are float64 in both.
 */
import { assignHyperparams, buildState, checkAdamHyperparams, checkNumber, checkParams, checkState, resolveGradients, savedNumber, takeBuffer } from "./common.js";
import type { Gradients, NamedParam, Optimizer, OptimizerState } from "./types.js";

export interface AdamWOptions {
  /** Default 1e-3. */
  readonly lr?: number;
  /** Default [0.9, 0.999]. */
  readonly betas?: readonly [number, number];
  /** Default 1e-8. */
  readonly eps?: number;
  /** Default 1e-2 (a parameter's own `weightDecay` wins). */
  readonly weightDecay?: number;
  /** Default false. */
  readonly amsgrad?: boolean;
}

export const ADAMW_DEFAULTS = { lr: 1e-3, betas: [0.9, 0.999], eps: 1e-8, weightDecay: 1e-2, amsgrad: false } as const;

interface AdamWParamState {
  step: number;
  expAvg: Float32Array | null;
  expAvgSq: Float32Array | null;
  maxExpAvgSq: Float32Array | null;
}

export class AdamW implements Optimizer {
  readonly kind = "adamw" as const;
  readonly params: readonly NamedParam[];
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  amsgrad: boolean;
  private steps = 0;
  private paramWeightDecay: number[];
  private state: AdamWParamState[];

  constructor(params: readonly NamedParam[], options: AdamWOptions = {}) {
    checkParams("AdamW", params);
    this.params = [...params];
    this.lr = options.lr ?? ADAMW_DEFAULTS.lr;
    [this.beta1, this.beta2] = options.betas ?? ADAMW_DEFAULTS.betas;
    this.eps = options.eps ?? ADAMW_DEFAULTS.eps;
    this.weightDecay = options.weightDecay ?? ADAMW_DEFAULTS.weightDecay;
    this.amsgrad = options.amsgrad ?? ADAMW_DEFAULTS.amsgrad;
    this.checkHyperparams();
    this.paramWeightDecay = this.params.map((p) => p.weightDecay ?? this.weightDecay);
    this.state = this.params.map(() => ({ step: 0, expAvg: null, expAvgSq: null, maxExpAvgSq: null }));
  }

  private checkHyperparams(): void {
    checkAdamHyperparams("AdamW", this);
  }

  get stepCount(): number {
    return this.steps;
  }

  step(grads: Gradients, lr?: number): void {
    const rate = lr ?? this.lr;
    checkNumber("AdamW", "lr", rate, 0);
    const list = resolveGradients("AdamW", this.params, grads);
    const { beta1, beta2, eps, amsgrad } = this;
    list.forEach((g, i) => {
      if (!g) return;
      const p = this.params[i]!.data;
      const st = this.state[i]!;
      const n = p.length;
      const m = (st.expAvg ??= new Float32Array(n));
      const v = (st.expAvgSq ??= new Float32Array(n));
      const vmax = amsgrad ? (st.maxExpAvgSq ??= new Float32Array(n)) : null;
      const t = ++st.step;
      const bc1 = 1 - beta1 ** t;
      const bc2Sqrt = Math.sqrt(1 - beta2 ** t);
      const lrI = rate * (this.params[i]!.lrScale ?? 1);
      const stepSize = lrI / bc1;
      const decay = 1 - lrI * this.paramWeightDecay[i]!;
      for (let j = 0; j < n; j++) {
        const gj = g[j]!;
        m[j] = beta1 * m[j]! + (1 - beta1) * gj;
        v[j] = beta2 * v[j]! + (1 - beta2) * gj * gj;
        let second = v[j]!;
        if (vmax) {
          if (second > vmax[j]! || Number.isNaN(second)) vmax[j] = second;
          second = vmax[j]!;
        }
        const denom = Math.sqrt(second) / bc2Sqrt + eps;
        p[j] = p[j]! * decay - (stepSize * m[j]!) / denom;
      }
    });
    this.steps++;
  }

  stateDict(): OptimizerState {
    return buildState(
      "adamw",
      this.steps,
      { lr: this.lr, beta1: this.beta1, beta2: this.beta2, eps: this.eps, weightDecay: this.weightDecay, amsgrad: this.amsgrad },
      this.params,
      this.state.map((s) => s.step),
      this.paramWeightDecay,
      this.state.map((s) => ({ exp_avg: s.expAvg, exp_avg_sq: s.expAvgSq, max_exp_avg_sq: s.maxExpAvgSq })),
    );
  }

  loadStateDict(state: OptimizerState): void {
    const info = checkState("AdamW", "adamw", this.params, state);
    const h = state.hyperparams;
    const next = {
      lr: savedNumber(h, "lr", this.lr),
      beta1: savedNumber(h, "beta1", this.beta1),
      beta2: savedNumber(h, "beta2", this.beta2),
      eps: savedNumber(h, "eps", this.eps),
      weightDecay: savedNumber(h, "weightDecay", this.weightDecay),
      amsgrad: typeof h.amsgrad === "boolean" ? h.amsgrad : this.amsgrad,
    };
    const restored = this.params.map((p, i) => {
      const steps = info[i]!.step;
      return {
        step: steps,
        expAvg: takeBuffer(state, p, steps, "exp_avg", true),
        expAvgSq: takeBuffer(state, p, steps, "exp_avg_sq", true),
        maxExpAvgSq: takeBuffer(state, p, steps, "max_exp_avg_sq", next.amsgrad),
      };
    });
    assignHyperparams(this, next, () => this.checkHyperparams());
    this.state = restored;
    this.paramWeightDecay = info.map((p) => p.weightDecay);
    this.steps = state.step;
  }
}
