/**
 * Gradient clipping as `torch.nn.utils.clip_grad_norm_`: the norm is taken over all gradients
 * together (as if concatenated), then every gradient is scaled by
 * `min(1, maxNorm / (total + 1e-6))`. Returns the total norm before clipping.
 *
 * The norm is accumulated in float64 (PyTorch accumulates per-tensor norms in float32), and the
 * scale factor is rounded to float32 before multiplying, as PyTorch's float32 `clip_coef`
 * tensor is. A NaN or infinite norm is not an error (PyTorch's default,
 * `error_if_nonfinite=False`): the gradients are multiplied by the resulting factor, so a NaN
 * norm turns them into NaN and the caller can detect it from the returned norm.
 */
import { ConfigError } from "../../errors.js";
import type { Gradients } from "./types.js";

function gradientList(grads: Gradients): Float32Array[] {
  const values = grads instanceof Map || !Array.isArray(grads) ? [...(grads as ReadonlyMap<string, Float32Array>).values()] : grads;
  return values.filter((g): g is Float32Array => g !== null);
}

/** The global `normType` norm of all gradients (2 = Euclidean, Infinity = max |g|), in float64. */
export function gradNorm(grads: Gradients, normType = 2): number {
  if (!(normType > 0)) throw new ConfigError("gradNorm", "normType", `must be > 0 or Infinity, got ${normType}`);
  const list = gradientList(grads);
  if (normType === Infinity) {
    let max = 0;
    for (const g of list) {
      for (let j = 0; j < g.length; j++) {
        const a = Math.abs(g[j]!);
        if (a > max || Number.isNaN(a)) max = a;
        if (Number.isNaN(max)) return NaN;
      }
    }
    return max;
  }
  let sum = 0;
  for (const g of list) {
    if (normType === 2) for (let j = 0; j < g.length; j++) sum += g[j]! * g[j]!;
    else if (normType === 1) for (let j = 0; j < g.length; j++) sum += Math.abs(g[j]!);
    else for (let j = 0; j < g.length; j++) sum += Math.abs(g[j]!) ** normType;
  }
  return normType === 2 ? Math.sqrt(sum) : normType === 1 ? sum : sum ** (1 / normType);
}

/** Scales the gradients in place so their global norm is at most `maxNorm`; returns the norm before clipping. */
export function clipGradNorm(grads: Gradients, maxNorm: number, normType = 2): number {
  if (typeof maxNorm !== "number" || !(maxNorm >= 0)) {
    throw new ConfigError("clipGradNorm", "maxNorm", `must be a number >= 0, got ${String(maxNorm)}`);
  }
  const total = gradNorm(grads, normType);
  // Math.min keeps NaN, so a NaN norm scales by NaN as in PyTorch.
  const coef = Math.fround(Math.min(maxNorm / (total + 1e-6), 1));
  if (coef !== 1) {
    for (const g of gradientList(grads)) for (let j = 0; j < g.length; j++) g[j] = g[j]! * coef;
  }
  return total;
}
