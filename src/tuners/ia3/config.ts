/** (IA)³'s adapter_config.json (PEFT 0.21 `IA3Config`). */
import { z } from "zod";
import { COMMON_KEYS, baseFields, baseSchema, baseToRaw, parseWith, rejectUnknownKeys } from "../common/config.js";
import { type TargetSpec, parseTargetSpec, pythonRegex, targetSpecToRaw } from "../common/target.js";
import type { TunerConfigBase } from "../common/types.js";

export interface Ia3Config extends TunerConfigBase {
  readonly peftType: "IA3";
  readonly targetModules: TargetSpec | null;
  readonly excludeModules: TargetSpec | null;
  /** Modules whose input (not output) is scaled. */
  readonly feedforwardModules: TargetSpec | null;
  readonly fanInFanOut: boolean;
  /** true: vectors start at 1 (identity); false: random normal (PEFT's testing option). */
  readonly initIa3Weights: boolean;
  readonly layersToTransform: null;
  readonly layersPattern: null;
}

const KEYS = ["target_modules", "exclude_modules", "feedforward_modules", "fan_in_fan_out", "init_ia3_weights"] as const;

const schema = z.object({
  ...baseSchema,
  peft_type: z.literal("IA3"),
  target_modules: z.unknown().optional(),
  exclude_modules: z.unknown().optional(),
  feedforward_modules: z.unknown().optional(),
  fan_in_fan_out: z.boolean().optional(),
  init_ia3_weights: z.boolean().optional(),
});

export function parseIa3Config(raw: Readonly<Record<string, unknown>>, file: string): Ia3Config {
  rejectUnknownKeys(raw, [...COMMON_KEYS, ...KEYS], file);
  const c = parseWith(schema, raw, file);
  return {
    ...baseFields(c),
    peftType: "IA3",
    targetModules: parseTargetSpec(c.target_modules, file, "target_modules"),
    excludeModules: parseTargetSpec(c.exclude_modules, file, "exclude_modules"),
    feedforwardModules: parseTargetSpec(c.feedforward_modules, file, "feedforward_modules"),
    fanInFanOut: c.fan_in_fan_out ?? false,
    initIa3Weights: c.init_ia3_weights ?? true,
    layersToTransform: null,
    layersPattern: null,
  };
}

export function ia3ConfigToRaw(c: Ia3Config): Record<string, unknown> {
  return {
    ...baseToRaw(c),
    target_modules: targetSpecToRaw(c.targetModules),
    exclude_modules: targetSpecToRaw(c.excludeModules),
    feedforward_modules: targetSpecToRaw(c.feedforwardModules),
    fan_in_fan_out: c.fanInFanOut,
    init_ia3_weights: c.initIa3Weights,
  };
}

/** PEFT `_check_target_module_feedforward`: regex full match, or a plain `endswith` (no dot) per name. */
export function isFeedforward(c: Ia3Config, key: string): boolean {
  const f = c.feedforwardModules;
  if (!f) return false;
  if (f.kind === "regex") return pythonRegex(f.pattern).test(key);
  if (f.kind === "names") return f.names.some((n) => key.endsWith(n));
  return false;
}
