/**
 * Which parameters get weight decay. Hugging Face `Trainer` decays every parameter except
 * biases and LayerNorm weights (`get_decay_parameter_names`); it finds LayerNorm by module
 * type, this module by name, matching biases and the usual norm names (`LayerNorm`,
 * `layer_norm`, `input_layernorm`, `norm`, `ln_f`, `ln_1`, …).
 */
import type { NamedParam } from "./types.js";

const BIAS = /(^|[._])bias$/;
const NORM = /norm/i;
const LN = /(^|\.)ln(_[a-z0-9]+)?\.(weight|bias)$/i;

/** True for parameter names that conventionally get no weight decay (biases and norms). */
export function isNoDecayParamName(name: string): boolean {
  return BIAS.test(name) || NORM.test(name) || LN.test(name);
}

/** Returns the parameters with `weightDecay: 0` for those matching `exclude` (default: biases and norms). */
export function excludeFromWeightDecay(
  params: readonly NamedParam[],
  exclude: (name: string) => boolean = isNoDecayParamName,
): NamedParam[] {
  return params.map((p) => (exclude(p.name) ? { ...p, weightDecay: 0 } : p));
}
