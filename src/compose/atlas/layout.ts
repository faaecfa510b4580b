/**
 * Which coefficients an aTLAS composition has. With T task vectors and B parameter blocks (the
 * union of the task vectors' blocks), the model is
 *
 *     θ_b = θ_0,b + Σ_t λ_{t,b} · τ_{t,b}        for every block b
 *
 * with λ ∈ R^{T×B} (anisotropic: one coefficient per task and block, stored row-major [T, B]) or
 * λ ∈ R^T (isotropic: λ_{t,b} = λ_t, task arithmetic with learned scales). `kept[t·B + b]` says
 * whether τ_{t,b} takes part: false where task vector t has no block b, or where block selection
 * dropped it (its coefficient then stays at its value and has no effect).
 */
import { ConfigError } from "../../errors.js";
import type { WeightSource } from "../../models/context.js";
import { type Tensor, toFloat64 } from "../../tensor.js";
import { fromFloat64 } from "../task-vector.js";
import { type AtlasTaskVector, checkTaskVector } from "./task-vectors.js";

export type AtlasMode = "anisotropic" | "isotropic";

export interface AtlasLayout {
  readonly mode: AtlasMode;
  /** Task vector names, in order (rows of λ). */
  readonly tasks: readonly string[];
  /** Block (parameter) names, in order (columns of λ). */
  readonly blocks: readonly string[];
  /** 1 where τ_{t,b} is part of the composition, row-major [T, B]. */
  readonly kept: Uint8Array;
}

/**
 * The layout for `taskVectors` (checked against `base`): blocks in the base's parameter order
 * (the union of the task vectors' blocks), every existing τ_{t,b} kept.
 */
export function createAtlasLayout(taskVectors: readonly AtlasTaskVector[], base: WeightSource, mode: AtlasMode = "anisotropic"): AtlasLayout {
  if (taskVectors.length === 0) throw new ConfigError("aTLAS", "taskVectors", "needs at least one task vector");
  const names = new Set<string>();
  for (const tv of taskVectors) {
    if (names.has(tv.name)) throw new ConfigError("aTLAS", "taskVectors", `two task vectors are called '${tv.name}'; names must be unique`);
    names.add(tv.name);
    checkTaskVector(tv, base);
  }
  const used = new Set(taskVectors.flatMap((tv) => [...tv.blocks.keys()]));
  const blocks = base.keys().filter((k) => used.has(k));
  const kept = new Uint8Array(taskVectors.length * blocks.length);
  taskVectors.forEach((tv, t) => blocks.forEach((b, j) => (kept[t * blocks.length + j] = tv.blocks.has(b) ? 1 : 0)));
  return { mode, tasks: taskVectors.map((tv) => tv.name), blocks, kept };
}

/** Number of coefficients: T·B (anisotropic) or T (isotropic). */
export function coefficientCount(layout: AtlasLayout): number {
  return layout.mode === "anisotropic" ? layout.tasks.length * layout.blocks.length : layout.tasks.length;
}

/** Shape of the coefficient tensor: [T, B] or [T]. */
export function coefficientShape(layout: AtlasLayout): number[] {
  return layout.mode === "anisotropic" ? [layout.tasks.length, layout.blocks.length] : [layout.tasks.length];
}

/** Index of λ_{t,b} in the flat coefficient array. */
export function coefficientIndex(layout: AtlasLayout, t: number, b: number): number {
  return layout.mode === "anisotropic" ? t * layout.blocks.length + b : t;
}

/**
 * Initial coefficients. The paper's code starts every λ at 0 (the pre-trained model); `init` sets
 * another common value (e.g. 0.3, a usual task-arithmetic scale), or one value per task vector.
 */
export function initialCoefficients(layout: AtlasLayout, init: number | readonly number[] = 0): Float32Array {
  const perTask = typeof init === "number" ? layout.tasks.map(() => init) : [...init];
  if (perTask.length !== layout.tasks.length) throw new ConfigError("aTLAS", "init", `${perTask.length} initial values for ${layout.tasks.length} task vectors`);
  perTask.forEach((v, i) => {
    if (!Number.isFinite(v)) throw new ConfigError("aTLAS", `init[${i}]`, `must be a finite number, got ${v}`);
  });
  const c = new Float32Array(coefficientCount(layout));
  for (let t = 0; t < layout.tasks.length; t++) {
    if (layout.mode === "isotropic") c[t] = perTask[t]!;
    else c.fill(perTask[t]!, t * layout.blocks.length, (t + 1) * layout.blocks.length);
  }
  return c;
}

/** A copy of `layout` keeping only the (t, b) pairs where `keep` is true (and that exist). */
export function restrictLayout(layout: AtlasLayout, keep: (t: number, b: number) => boolean): AtlasLayout {
  const kept = Uint8Array.from(layout.kept, (k, i) => (k && keep(Math.floor(i / layout.blocks.length), i % layout.blocks.length) ? 1 : 0));
  return { ...layout, kept };
}

/** Number of kept τ_{t,b} pairs and the parameters they hold. */
export function keptSize(layout: AtlasLayout, taskVectors: readonly AtlasTaskVector[]): { pairs: number; parameters: number } {
  let pairs = 0;
  let parameters = 0;
  layout.kept.forEach((k, i) => {
    if (!k) return;
    pairs++;
    parameters += taskVectors[Math.floor(i / layout.blocks.length)]!.blocks.get(layout.blocks[i % layout.blocks.length]!)!.length;
  });
  return { pairs, parameters };
}

export function checkCoefficients(layout: AtlasLayout, coef: ArrayLike<number>): void {
  if (coef.length !== coefficientCount(layout)) {
    throw new ConfigError("aTLAS", "coefficients", `${coef.length} values for a ${layout.mode} layout of ${layout.tasks.length} × ${layout.blocks.length} (needs ${coefficientCount(layout)})`);
  }
}

/**
 * θ_b = θ_0,b + Σ_t λ_{t,b}·τ_{t,b} on the host (float64 sums), for every block with a kept
 * pair, in the base parameter's dtype. Parameters without a kept pair are not returned.
 */
export function composeAtlasWeights(base: WeightSource, taskVectors: readonly AtlasTaskVector[], layout: AtlasLayout, coef: ArrayLike<number>): Map<string, Tensor> {
  checkCoefficients(layout, coef);
  if (taskVectors.length !== layout.tasks.length || taskVectors.some((tv, i) => tv.name !== layout.tasks[i])) {
    throw new ConfigError("aTLAS", "taskVectors", `expected task vectors ${layout.tasks.join(", ")} in this order`);
  }
  const out = new Map<string, Tensor>();
  const B = layout.blocks.length;
  layout.blocks.forEach((name, b) => {
    const terms: [Float32Array, number][] = [];
    for (let t = 0; t < layout.tasks.length; t++) if (layout.kept[t * B + b]) terms.push([taskVectors[t]!.blocks.get(name)!, coef[coefficientIndex(layout, t, b)]!]);
    if (terms.length === 0) return;
    const w = base.get(name);
    const theta = Float64Array.from(toFloat64(w));
    for (const [tau, l] of terms) for (let i = 0; i < theta.length; i++) theta[i] = theta[i]! + l * tau[i]!;
    out.set(name, fromFloat64(w.dtype, w.shape, theta));
  });
  return out;
}
