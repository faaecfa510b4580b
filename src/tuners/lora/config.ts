/** LoRA's adapter_config.json: parsing, validation, defaults (PEFT 0.21 `LoraConfig`). */
import { z } from "zod";
import { ConfigError, UnsupportedOptionError } from "../../errors.js";
import {
  COMMON_KEYS,
  baseFields,
  baseSchema,
  baseToRaw,
  isEmpty,
  isFalsy,
  isNullish,
  parseWith,
  rejectNonDefault,
  rejectUnknownKeys,
} from "../common/config.js";
import { type TargetSpec, parseTargetSpec, patternKey, targetSpecToRaw } from "../common/target.js";
import type { TunerConfigBase } from "../common/types.js";

/**
 * `init_lora_weights`: `true` (Kaiming-uniform A, zero B), `"gaussian"`, `false` (random B), or an
 * initialisation that rewrites the base weight: `"pissa"` (top-r SVD), `"pissa_niter_K"` (randomised
 * SVD with K subspace iterations) and `"olora"` (QR).
 */
export type LoraInit =
  | { readonly kind: "kaiming" }
  | { readonly kind: "gaussian" }
  | { readonly kind: "random" }
  | { readonly kind: "pissa"; readonly niter: number | null }
  | { readonly kind: "olora" };
export type LoraBias = "none" | "all" | "lora_only";

export interface LoraConfig extends TunerConfigBase {
  readonly peftType: "LORA";
  readonly r: number;
  readonly loraAlpha: number;
  readonly loraDropout: number;
  readonly useRslora: boolean;
  readonly useDora: boolean;
  readonly fanInFanOut: boolean;
  readonly bias: LoraBias;
  readonly init: LoraInit;
  readonly targetModules: TargetSpec | null;
  readonly excludeModules: TargetSpec | null;
  readonly layersToTransform: readonly number[] | null;
  readonly layersPattern: readonly string[] | null;
  readonly rankPattern: Readonly<Record<string, number>>;
  readonly alphaPattern: Readonly<Record<string, number>>;
}

export const LORA_DEFAULTS = {
  r: 8,
  loraAlpha: 8,
  loraDropout: 0,
  useRslora: false,
  useDora: false,
  fanInFanOut: false,
  bias: "none",
  init: { kind: "kaiming" },
} as const satisfies Partial<LoraConfig>;

/** LoraConfig fields that peft-ts implements (AdaLoRA validates its LoRA part with the same list). */
export const LORA_IMPLEMENTED_FIELDS = [
  "r",
  "lora_alpha",
  "lora_dropout",
  "use_rslora",
  "use_dora",
  "fan_in_fan_out",
  "bias",
  "init_lora_weights",
  "target_modules",
  "exclude_modules",
  "layers_to_transform",
  "layers_pattern",
  "rank_pattern",
  "alpha_pattern",
] as const;

/** Fields PEFT 0.21 has that change the math or the model when set; accepted only at their defaults. */
export const NOT_IMPLEMENTED: Readonly<Record<string, (v: unknown) => boolean>> = {
  megatron_config: isNullish,
  megatron_core: () => true, // a module path string; only used with megatron_config
  trainable_token_indices: isNullish,
  loftq_config: isEmpty,
  eva_config: isNullish,
  corda_config: isNullish,
  use_qalora: isFalsy,
  qalora_group_size: () => true, // only used with use_qalora
  layer_replication: isNullish,
  runtime_config: () => true, // runtime-only (GPU offload), no effect on results
  lora_bias: isFalsy,
  target_parameters: isEmpty,
  arrow_config: isNullish,
  ensure_weight_tying: isFalsy,
  alora_invocation_tokens: isNullish,
  kasa_config: isNullish,
  lora_ga_config: isNullish,
  monteclora_config: isNullish,
  use_bdlora: isFalsy,
  velora_config: isNullish,
};

export const WHY: Readonly<Record<string, string>> = {
  lora_bias: "a bias on lora_B is not implemented",
  trainable_token_indices: "trainable tokens are not implemented",
  layer_replication: "layer replication changes the model structure",
  use_qalora: "QA-LoRA needs a quantised base",
};

const schema = z.object({
  ...baseSchema,
  peft_type: z.literal("LORA"),
  r: z.number().int().positive().optional(),
  lora_alpha: z.number().optional(),
  lora_dropout: z.number().min(0).max(1).optional(),
  use_rslora: z.boolean().optional(),
  use_dora: z.boolean().optional(),
  fan_in_fan_out: z.boolean().optional(),
  bias: z.enum(["none", "all", "lora_only"]).optional(),
  init_lora_weights: z.union([z.boolean(), z.string()]).optional(),
  target_modules: z.unknown().optional(),
  exclude_modules: z.unknown().optional(),
  layers_to_transform: z.union([z.number().int().nonnegative(), z.array(z.number().int().nonnegative())]).nullable().optional(),
  layers_pattern: z.union([z.string(), z.array(z.string())]).nullable().optional(),
  rank_pattern: z.record(z.string(), z.number().int().positive()).nullable().optional(),
  alpha_pattern: z.record(z.string(), z.number()).nullable().optional(),
});

function parseInit(v: boolean | string | undefined, file: string): LoraInit {
  if (v === undefined || v === true) return { kind: "kaiming" };
  if (v === false) return { kind: "random" };
  if (v === "gaussian") return { kind: "gaussian" };
  if (v === "pissa") return { kind: "pissa", niter: null };
  if (v.toLowerCase() === "olora") return { kind: "olora" };
  const m = /^pissa_niter_(\d+)$/u.exec(v);
  if (m) return { kind: "pissa", niter: Number(m[1]) };
  if (v.startsWith("pissa")) throw new ConfigError(file, "init_lora_weights", `'${v}': should be 'pissa' or 'pissa_niter_[number of iters]' (as in PEFT)`);
  throw new UnsupportedOptionError(
    file,
    "init_lora_weights",
    v,
    "implemented: true (Kaiming-uniform A, zero B), 'gaussian', false, 'pissa', 'pissa_niter_K' and 'olora'; EVA/LoftQ/CorDA/orthogonal/MiCA are not",
  );
}

/** `init_lora_weights` as PEFT writes it. */
export function initToRaw(init: LoraInit): boolean | string {
  switch (init.kind) {
    case "kaiming":
      return true;
    case "random":
      return false;
    case "gaussian":
      return "gaussian";
    case "olora":
      return "olora";
    case "pissa":
      return init.niter === null ? "pissa" : `pissa_niter_${init.niter}`;
  }
}

/** PiSSA and OLoRA rewrite the base weight (W − scaling·B₀·A₀) when the adapter is created or loaded. */
export function rewritesBase(c: LoraConfig): boolean {
  return c.init.kind === "pissa" || c.init.kind === "olora";
}

export function parseLoraConfig(raw: Readonly<Record<string, unknown>>, file: string): LoraConfig {
  rejectUnknownKeys(raw, [...COMMON_KEYS, ...LORA_IMPLEMENTED_FIELDS, ...Object.keys(NOT_IMPLEMENTED)], file);
  rejectNonDefault(raw, file, NOT_IMPLEMENTED, WHY);
  const c = parseWith(schema, raw, file);
  const ltt = c.layers_to_transform;
  const layersPattern = c.layers_pattern === undefined || c.layers_pattern === null ? null : typeof c.layers_pattern === "string" ? [c.layers_pattern] : c.layers_pattern;
  const targetModules = parseTargetSpec(c.target_modules, file, "target_modules");
  if (ltt !== null && ltt !== undefined && targetModules?.kind === "regex") {
    throw new ConfigError(file, "layers_to_transform", "cannot be used when target_modules is a regular expression (as in PEFT)");
  }
  return {
    ...baseFields(c),
    peftType: "LORA",
    r: c.r ?? LORA_DEFAULTS.r,
    loraAlpha: c.lora_alpha ?? LORA_DEFAULTS.loraAlpha,
    loraDropout: c.lora_dropout ?? LORA_DEFAULTS.loraDropout,
    useRslora: c.use_rslora ?? false,
    useDora: c.use_dora ?? false,
    fanInFanOut: c.fan_in_fan_out ?? false,
    bias: c.bias ?? "none",
    init: parseInit(c.init_lora_weights, file),
    targetModules,
    excludeModules: parseTargetSpec(c.exclude_modules, file, "exclude_modules"),
    layersToTransform: ltt === null || ltt === undefined ? null : typeof ltt === "number" ? [ltt] : ltt,
    layersPattern,
    rankPattern: c.rank_pattern ?? {},
    alphaPattern: c.alpha_pattern ?? {},
  };
}

export function loraConfigToRaw(c: LoraConfig): Record<string, unknown> {
  return {
    ...baseToRaw(c),
    r: c.r,
    lora_alpha: c.loraAlpha,
    lora_dropout: c.loraDropout,
    use_rslora: c.useRslora,
    use_dora: c.useDora,
    fan_in_fan_out: c.fanInFanOut,
    bias: c.bias,
    init_lora_weights: initToRaw(c.init),
    target_modules: targetSpecToRaw(c.targetModules),
    exclude_modules: targetSpecToRaw(c.excludeModules),
    layers_to_transform: c.layersToTransform ? [...c.layersToTransform] : null,
    layers_pattern: c.layersPattern ? [...c.layersPattern] : null,
    rank_pattern: { ...c.rankPattern },
    alpha_pattern: { ...c.alphaPattern },
    megatron_config: null,
    megatron_core: "megatron.core",
    trainable_token_indices: null,
    loftq_config: {},
    eva_config: null,
    corda_config: null,
    use_qalora: false,
    qalora_group_size: 16,
    layer_replication: null,
    lora_bias: false,
    target_parameters: null,
    arrow_config: null,
    ensure_weight_tying: false,
    alora_invocation_tokens: null,
    kasa_config: null,
    lora_ga_config: null,
    monteclora_config: null,
    use_bdlora: null,
    velora_config: null,
  };
}

/** Rank and scaling of one module, with `rank_pattern` / `alpha_pattern` applied as PEFT does. */
export function moduleRankAndScale(c: LoraConfig, module: string): { r: number; alpha: number; scaling: number } {
  const r = c.rankPattern[patternKey(Object.keys(c.rankPattern), module)] ?? c.r;
  const alpha = c.alphaPattern[patternKey(Object.keys(c.alphaPattern), module)] ?? c.loraAlpha;
  return { r, alpha, scaling: c.useRslora ? alpha / Math.sqrt(r) : alpha / r };
}
