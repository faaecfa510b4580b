/**
 * SGD with `torch.optim.SGD` semantics (defaults lr 1e-3, momentum 0, dampening 0,
 * weight_decay 0, nesterov false). For each parameter with a gradient:
 *
 *     g ← g + wd·p                                   (coupled L2 decay)
 *     b ← g                      on the parameter's first update (no dampening), else
 *     b ← μ·b + (1 − dampening)·g
 *     g ← g + μ·b  if nesterov, else  g ← b          (only when μ ≠ 0)
 *     p ← p − lr·g
 *
 * Nesterov needs μ > 0 and dampening 0, as in PyTorch. `momentum_buffer` and parameters are
 * float32; each element is computed in float64 and rounded once when stored (see adamw.ts).
 */
import { ConfigError } from "../../errors.js";
import { assignHyperparams, buildState, checkNumber, checkParams, checkState, resolveGradients, savedNumber, takeBuffer } from "./common.js";
import type { Gradients, NamedParam, Optimizer, OptimizerState } from "./types.js";

export interface SgdOptions {
  /** Default 1e-3. */
  readonly lr?: number;
  /** Default 0. */
  readonly momentum?: number;
  /** Default 0. */
  readonly dampening?: number;
  /** Default 0 (a parameter's own `weightDecay` wins). */
  readonly weightDecay?: number;
  /** Default false. */
  readonly nesterov?: boolean;
}

export const SGD_DEFAULTS = { lr: 1e-3, momentum: 0, dampening: 0, weightDecay: 0, nesterov: false } as const;

export class Sgd implements Optimizer {
  readonly kind = "sgd" as const;
  readonly params: readonly NamedParam[];
  lr: number;
  momentum: number;
  dampening: number;
  weightDecay: number;
  nesterov: boolean;
  private steps = 0;
  private paramSteps: number[];
  private paramWeightDecay: number[];
  private buffers: (Float32Array | null)[];

  constructor(params: readonly NamedParam[], options: SgdOptions = {}) {
    checkParams("SGD", params);
    this.params = [...params];
    this.lr = options.lr ?? SGD_DEFAULTS.lr;
    this.momentum = options.momentum ?? SGD_DEFAULTS.momentum;
    this.dampening = options.dampening ?? SGD_DEFAULTS.dampening;
    this.weightDecay = options.weightDecay ?? SGD_DEFAULTS.weightDecay;
    this.nesterov = options.nesterov ?? SGD_DEFAULTS.nesterov;
    this.checkHyperparams();
    this.paramWeightDecay = this.params.map((p) => p.weightDecay ?? this.weightDecay);
    this.paramSteps = this.params.map(() => 0);
    this.buffers = this.params.map(() => null);
  }

  private checkHyperparams(): void {
    checkNumber("SGD", "lr", this.lr, 0);
    checkNumber("SGD", "momentum", this.momentum, 0);
    checkNumber("SGD", "dampening", this.dampening, -Infinity);
    checkNumber("SGD", "weightDecay", this.weightDecay, 0);
    if (this.nesterov && (this.momentum <= 0 || this.dampening !== 0)) {
      throw new ConfigError("SGD", "nesterov", "Nesterov momentum requires a momentum > 0 and zero dampening");
    }
  }

  get stepCount(): number {
    return this.steps;
  }

  step(grads: Gradients, lr?: number): void {
    const rate = lr ?? this.lr;
    checkNumber("SGD", "lr", rate, 0);
    const list = resolveGradients("SGD", this.params, grads);
    const { momentum: mu, dampening, nesterov } = this;
    list.forEach((g, i) => {
      if (!g) return;
      const p = this.params[i]!.data;
      const wd = this.paramWeightDecay[i]!;
      const lrI = rate * (this.params[i]!.lrScale ?? 1);
      const n = p.length;
      let buf = this.buffers[i]!;
      const first = buf === null;
      if (mu !== 0 && buf === null) buf = this.buffers[i] = new Float32Array(n);
      for (let j = 0; j < n; j++) {
        let d = wd !== 0 ? g[j]! + wd * p[j]! : g[j]!;
        if (buf) {
          buf[j] = first ? d : mu * buf[j]! + (1 - dampening) * d;
          d = nesterov ? d + mu * buf[j]! : buf[j]!;
        }
        p[j] = p[j]! - lrI * d;
      }
      this.paramSteps[i]!++;
    });
    this.steps++;
  }

  stateDict(): OptimizerState {
    return buildState(
      "sgd",
      this.steps,
      { lr: this.lr, momentum: this.momentum, dampening: this.dampening, weightDecay: this.weightDecay, nesterov: this.nesterov },
      this.params,
      this.paramSteps,
      this.paramWeightDecay,
      this.buffers.map((b) => ({ momentum_buffer: b })),
    );
  }

  loadStateDict(state: OptimizerState): void {
    const info = checkState("SGD", "sgd", this.params, state);
    const h = state.hyperparams;
    const next = {
      lr: savedNumber(h, "lr", this.lr),
      momentum: savedNumber(h, "momentum", this.momentum),
      dampening: savedNumber(h, "dampening", this.dampening),
      weightDecay: savedNumber(h, "weightDecay", this.weightDecay),
      nesterov: typeof h.nesterov === "boolean" ? h.nesterov : this.nesterov,
    };
    const buffers = this.params.map((p, i) => takeBuffer(state, p, info[i]!.step, "momentum_buffer", next.momentum !== 0));
    assignHyperparams(this, next, () => this.checkHyperparams());
    this.buffers = buffers;
    this.paramSteps = info.map((p) => p.step);
    this.paramWeightDecay = info.map((p) => p.weightDecay);
    this.steps = state.step;
  }
}
