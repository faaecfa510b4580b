/**
 * Shared pieces of the LoRA variants that are not PEFT methods (DyLoRA, SoRA, SVFit, Block-LoRA):
 * the LoRA fields their configs reuse (validated by LoRA's own parser, same names and checks),
 * and their export as a plain PEFT LoRA adapter (`adapter_config.json` fields with `rank_pattern`
 * / `alpha_pattern` where modules differ, `lora_A.weight` / `lora_B.weight` tensors).
 */
import { z } from "zod";
import { ConfigError } from "../../errors.js";
import type { Tensor } from "../../tensor.js";
import { LORA_DEFAULTS, loraConfigToRaw, parseLoraConfig } from "../lora/config.js";
import { loraKeys } from "../lora/keys.js";
import { COMMON_KEYS, baseFields, baseSchema, parseWith, rejectUnknownKeys } from "./config.js";
import type { TargetSpec } from "./target.js";
import type { TunerConfigBase } from "./types.js";

/** The LoRA fields a variant's config shares (PEFT names). */
export const LORA_LIKE_FIELDS = ["r", "lora_alpha", "lora_dropout", "fan_in_fan_out", "target_modules", "exclude_modules", "layers_to_transform", "layers_pattern"] as const;

export interface LoraLikeConfig extends TunerConfigBase {
  readonly r: number;
  readonly loraAlpha: number;
  readonly loraDropout: number;
  readonly fanInFanOut: boolean;
  readonly targetModules: TargetSpec | null;
  readonly excludeModules: TargetSpec | null;
  readonly layersToTransform: readonly number[] | null;
  readonly layersPattern: readonly string[] | null;
}

/**
 * Parse a variant's config: the LoRA fields through LoRA's parser, the method's own fields
 * (`own`, a zod shape with PEFT-style snake_case names) through zod. Unknown keys are refused.
 */
export function parseLoraLike<S extends z.ZodRawShape>(
  raw: Readonly<Record<string, unknown>>,
  file: string,
  peftType: string,
  own: S,
): { base: LoraLikeConfig; own: z.infer<z.ZodObject<S>> } {
  rejectUnknownKeys(raw, [...COMMON_KEYS, ...LORA_LIKE_FIELDS, ...Object.keys(own)], file);
  if (raw.peft_type !== peftType) throw new ConfigError(file, "peft_type", `expected '${peftType}'`);
  const loraPart = Object.fromEntries(Object.entries(raw).filter(([k]) => (LORA_LIKE_FIELDS as readonly string[]).includes(k) || (COMMON_KEYS as readonly string[]).includes(k)));
  const l = parseLoraConfig({ ...loraPart, peft_type: "LORA" }, file);
  const c = parseWith(z.object({ ...baseSchema, peft_type: z.string(), ...own }).passthrough(), raw, file);
  return {
    base: {
      ...baseFields(c as z.infer<z.ZodObject<typeof baseSchema>>),
      peftType,
      r: l.r,
      loraAlpha: l.loraAlpha,
      loraDropout: l.loraDropout,
      fanInFanOut: l.fanInFanOut,
      targetModules: l.targetModules,
      excludeModules: l.excludeModules,
      layersToTransform: l.layersToTransform,
      layersPattern: l.layersPattern,
    },
    own: c as unknown as z.infer<z.ZodObject<S>>,
  };
}

/** The shared fields as adapter_config.json writes them (the LoRA subset, `peft_type` set). */
export function loraLikeToRaw(c: LoraLikeConfig): Record<string, unknown> {
  const lora = loraConfigToRaw({ ...parseLoraConfig({ peft_type: "LORA" }, "internal"), ...c, peftType: "LORA", useRslora: false, useDora: false, bias: "none", init: LORA_DEFAULTS.init, rankPattern: {}, alphaPattern: {} });
  const out: Record<string, unknown> = {};
  for (const k of [...COMMON_KEYS, ...LORA_LIKE_FIELDS]) if (k in lora) out[k] = lora[k];
  out.peft_type = c.peftType;
  return out;
}

/** One module's exported factors: ΔW = (alpha / A.shape[0])·B·A. */
export interface ExportedFactors {
  readonly A: Float32Array; // [r, in] (a convolution: [r, in, kh, kw])
  readonly B: Float32Array; // [out, r] (a convolution: [out, r, 1, 1])
  readonly r: number;
  readonly inFeatures: number;
  readonly outFeatures: number;
  /** lora_alpha of this module (scaling = alpha / r). */
  readonly alpha: number;
  /** A convolution's kernel size [kh, kw] (PEFT's lora.Conv2d layout); absent for linear layers. */
  readonly kernel?: readonly [number, number];
}

/** A PEFT LoRA adapter: its adapter_config.json fields and tensors (keys without `base_model.model.`). */
export interface LoraExport {
  readonly raw: Record<string, unknown>;
  readonly tensors: Map<string, Tensor>;
}

/**
 * A plain PEFT LoRA adapter holding `factors` (module → factors): `target_modules` lists the
 * exported modules by full name, `r` / `lora_alpha` are the most common rank and alpha and
 * `rank_pattern` / `alpha_pattern` hold the modules that differ. `copied` are tensors kept as
 * they are (the `modules_to_save` copies).
 */
export function loraExport(c: LoraLikeConfig, factors: ReadonlyMap<string, ExportedFactors>, copied: ReadonlyMap<string, Tensor>): LoraExport {
  if (factors.size === 0) throw new ConfigError("adapter_config.json", "target_modules", "no module has a non-zero rank: nothing to export as LoRA");
  const mode = (xs: number[]): number => {
    const n = new Map<number, number>();
    for (const x of xs) n.set(x, (n.get(x) ?? 0) + 1);
    return [...n].sort((a, b) => b[1] - a[1] || a[0] - b[0])[0]![0];
  };
  const fs = [...factors];
  const r = mode(fs.map(([, f]) => f.r));
  const alpha = mode(fs.map(([, f]) => f.alpha));
  const rankPattern: Record<string, number> = {};
  const alphaPattern: Record<string, number> = {};
  const tensors = new Map<string, Tensor>();
  for (const [m, f] of fs) {
    if (f.r !== r) rankPattern[m] = f.r;
    if (f.alpha !== alpha) alphaPattern[m] = f.alpha;
    const k = loraKeys(m);
    tensors.set(k.A, { dtype: "float32", shape: f.kernel ? [f.r, f.inFeatures, f.kernel[0], f.kernel[1]] : [f.r, f.inFeatures], data: f.A });
    tensors.set(k.B, { dtype: "float32", shape: f.kernel ? [f.outFeatures, f.r, 1, 1] : [f.outFeatures, f.r], data: f.B });
  }
  for (const [k, t] of copied) tensors.set(k, t);
  const raw = loraConfigToRaw({
    ...parseLoraConfig({ peft_type: "LORA" }, "internal"),
    taskType: c.taskType,
    modulesToSave: c.modulesToSave,
    baseModelNameOrPath: c.baseModelNameOrPath,
    revision: c.revision,
    inferenceMode: true,
    r,
    loraAlpha: alpha,
    loraDropout: c.loraDropout,
    fanInFanOut: c.fanInFanOut,
    targetModules: { kind: "names", names: fs.map(([m]) => m) },
    rankPattern,
    alphaPattern,
  });
  return { raw, tensors };
}
