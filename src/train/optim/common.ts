/** Helpers shared by the optimizers: gradient lookup, option checks, state (de)serialisation. */
import { ConfigError, MissingTensorError, ShapeMismatchError } from "../../errors.js";
import type { Gradients, NamedParam, OptimizerKind, OptimizerState, ParamStateInfo } from "./types.js";

/** Aligns `grads` with `params`, checking count, names and lengths. */
export function resolveGradients(owner: string, params: readonly NamedParam[], grads: Gradients): (Float32Array | null)[] {
  let list: (Float32Array | null)[];
  if (grads instanceof Map || !Array.isArray(grads)) {
    const map = grads as ReadonlyMap<string, Float32Array>;
    const names = new Set(params.map((p) => p.name));
    for (const key of map.keys()) {
      if (!names.has(key)) {
        throw new ConfigError(owner, key, `gradient given for '${key}', which is not a parameter of this optimizer`);
      }
    }
    list = params.map((p) => map.get(p.name) ?? null);
  } else {
    if (grads.length !== params.length) {
      throw new ShapeMismatchError("gradients", [params.length], [grads.length], `${owner}.step needs one gradient (or null) per parameter`);
    }
    list = [...grads];
  }
  list.forEach((g, i) => {
    const p = params[i]!;
    if (g && g.length !== p.data.length) {
      throw new ShapeMismatchError(`${p.name} (gradient)`, [p.data.length], [g.length], `${owner}.step`);
    }
  });
  return list;
}

export function checkNumber(owner: string, key: string, v: number, min: number, maxExclusive = Infinity): void {
  if (typeof v !== "number" || !Number.isFinite(v) || v < min || v >= maxExclusive) {
    const range = maxExclusive === Infinity ? `>= ${min}` : `in [${min}, ${maxExclusive})`;
    throw new ConfigError(owner, key, `must be a finite number ${range}, got ${String(v)}`);
  }
}

export function checkParams(owner: string, params: readonly NamedParam[]): void {
  const seen = new Set<string>();
  for (const p of params) {
    if (seen.has(p.name)) throw new ConfigError(owner, p.name, "parameter names must be unique");
    seen.add(p.name);
    if (!(p.data instanceof Float32Array)) throw new ConfigError(owner, p.name, "parameter data must be a Float32Array");
    if (p.weightDecay !== undefined) checkNumber(owner, `${p.name}.weightDecay`, p.weightDecay, 0);
  }
}

/** Builds the serialisable state from per-parameter buffers (copied). */
export function buildState(
  kind: OptimizerKind,
  step: number,
  hyperparams: Record<string, number | boolean>,
  params: readonly NamedParam[],
  steps: readonly number[],
  weightDecays: readonly number[],
  buffers: readonly Record<string, Float32Array | null>[],
): OptimizerState {
  const tensors = new Map<string, Float32Array>();
  params.forEach((p, i) => {
    for (const [buf, data] of Object.entries(buffers[i]!)) if (data) tensors.set(`${p.name}.${buf}`, data.slice());
  });
  const info: ParamStateInfo[] = params.map((p, i) => ({ name: p.name, step: steps[i]!, weightDecay: weightDecays[i]! }));
  return { kind, step, hyperparams: { ...hyperparams }, params: info, tensors };
}

/** Checks a state against this optimizer's kind and parameters; returns per-parameter info. */
export function checkState(owner: string, kind: OptimizerKind, params: readonly NamedParam[], state: OptimizerState): readonly ParamStateInfo[] {
  if (state.kind !== kind) throw new ConfigError(owner, "kind", `state is for a '${state.kind}' optimizer, not '${kind}'`);
  if (!Number.isSafeInteger(state.step) || state.step < 0) throw new ConfigError(owner, "step", `invalid step ${state.step}`);
  const names = state.params.map((p) => p.name);
  const ours = params.map((p) => p.name);
  if (names.length !== ours.length || names.some((n, i) => n !== ours[i])) {
    throw new ConfigError(
      owner,
      "params",
      `state holds parameters [${names.join(", ")}] but the optimizer has [${ours.join(", ")}]; build it with the same parameters in the same order`,
    );
  }
  for (const p of state.params) {
    if (!Number.isSafeInteger(p.step) || p.step < 0) throw new ConfigError(owner, `${p.name}.step`, `invalid step ${p.step}`);
    checkNumber(owner, `${p.name}.weightDecay`, p.weightDecay, 0);
  }
  return state.params;
}

/**
 * Returns a copy of buffer `<name>.<buf>` from `state`: required when the parameter has taken
 * steps, otherwise null (PyTorch creates state lazily on a parameter's first update).
 */
export function takeBuffer(state: OptimizerState, p: NamedParam, steps: number, buf: string, required: boolean): Float32Array | null {
  const key = `${p.name}.${buf}`;
  const t = state.tensors.get(key);
  if (!t) {
    if (required && steps > 0) throw new MissingTensorError("optimizer state", key, `parameter '${p.name}' has taken ${steps} steps`);
    return null;
  }
  if (!(t instanceof Float32Array)) throw new ConfigError("optimizer state", key, "buffer must be a Float32Array");
  if (t.length !== p.data.length) throw new ShapeMismatchError(key, [p.data.length], [t.length], "optimizer state buffer");
  return t.slice();
}

/** Validates the hyperparameters shared by AdamW and AdamW8bit (`who` names the optimizer in errors). */
export function checkAdamHyperparams(who: string, h: { lr: number; beta1: number; beta2: number; eps: number; weightDecay: number }): void {
  checkNumber(who, "lr", h.lr, 0);
  checkNumber(who, "betas[0]", h.beta1, 0, 1);
  checkNumber(who, "betas[1]", h.beta2, 0, 1);
  checkNumber(who, "eps", h.eps, 0);
  checkNumber(who, "weightDecay", h.weightDecay, 0);
}

/** Reads a saved hyperparameter: the stored number, or `fallback` when the state has none. */
export function savedNumber(h: Readonly<Record<string, number | boolean>>, key: string, fallback: number): number {
  const v = h[key];
  return typeof v === "number" ? v : fallback;
}

/**
 * Sets hyperparameters loaded from a state on `target` and validates them with `check`; when the
 * check fails the previous values come back, so a rejected state leaves the optimizer as it was.
 */
export function assignHyperparams(target: object, next: Readonly<Record<string, number | boolean>>, check: () => void): void {
  const t = target as Record<string, unknown>;
  const old: Record<string, unknown> = {};
  for (const k of Object.keys(next)) old[k] = t[k];
  Object.assign(target, next);
  try {
    check();
  } catch (e) {
    Object.assign(target, old);
    throw e;
  }
}
