/**
 * PEFT's `LycorisConfig` fields shared by LoHa and LoKr (rank, alpha, rank/module dropout,
 * targeting, rank/alpha patterns), with PEFT 0.21's names and defaults.
 */
import { z } from "zod";
import { ConfigError } from "../../errors.js";
import { baseFields, baseSchema, baseToRaw, parseWith } from "./config.js";
import { type TargetSpec, parseTargetSpec, patternKey, targetSpecToRaw } from "./target.js";
import { rejectFeedforward, savedModules } from "./train.js";
import type { BaseModelInfo, TrainMethodOptions, TunerConfigBase } from "./types.js";

export interface LycorisConfig extends TunerConfigBase {
  readonly r: number;
  readonly alpha: number;
  readonly rankDropout: number;
  readonly moduleDropout: number;
  readonly useEffectiveConv2d: boolean;
  readonly targetModules: TargetSpec | null;
  readonly excludeModules: TargetSpec | null;
  readonly layersToTransform: readonly number[] | null;
  readonly layersPattern: readonly string[] | null;
  readonly rankPattern: Readonly<Record<string, number>>;
  readonly alphaPattern: Readonly<Record<string, number>>;
}

export const LYCORIS_KEYS = [
  "r",
  "alpha",
  "rank_dropout",
  "module_dropout",
  "use_effective_conv2d",
  "target_modules",
  "exclude_modules",
  "init_weights",
  "layers_to_transform",
  "layers_pattern",
  "rank_pattern",
  "alpha_pattern",
] as const;

export const lycorisSchema = {
  ...baseSchema,
  r: z.number().int().positive().optional(),
  alpha: z.number().optional(),
  rank_dropout: z.number().min(0).max(1).optional(),
  module_dropout: z.number().min(0).max(1).optional(),
  use_effective_conv2d: z.boolean().optional(),
  target_modules: z.unknown().optional(),
  exclude_modules: z.unknown().optional(),
  layers_to_transform: z.union([z.number().int().nonnegative(), z.array(z.number().int().nonnegative())]).nullable().optional(),
  layers_pattern: z.union([z.string(), z.array(z.string())]).nullable().optional(),
  rank_pattern: z.record(z.string(), z.number().int().positive()).nullable().optional(),
  alpha_pattern: z.record(z.string(), z.number()).nullable().optional(),
};

type LycorisRaw = z.infer<z.ZodObject<typeof lycorisSchema>>;

/** Parse the shared fields with `schema` (the method's full zod schema); the method adds its own. */
export function parseLycoris<S extends z.ZodType<LycorisRaw>>(schema: S, raw: Readonly<Record<string, unknown>>, file: string): { config: Omit<LycorisConfig, "peftType">; raw: z.infer<S> } {
  const c = parseWith(schema, raw, file) as LycorisRaw;
  const targetModules = parseTargetSpec(c.target_modules, file, "target_modules");
  const ltt = c.layers_to_transform;
  if (ltt !== null && ltt !== undefined && targetModules?.kind === "regex") {
    throw new ConfigError(file, "layers_to_transform", "cannot be used when target_modules is a regular expression (as in PEFT)");
  }
  if (c.layers_pattern && (ltt === null || ltt === undefined)) {
    throw new ConfigError(file, "layers_pattern", "needs layers_to_transform (as in PEFT)");
  }
  return {
    raw: c as z.infer<S>,
    config: {
      ...baseFields(c),
      r: c.r ?? 8,
      alpha: c.alpha ?? 8,
      rankDropout: c.rank_dropout ?? 0,
      moduleDropout: c.module_dropout ?? 0,
      useEffectiveConv2d: c.use_effective_conv2d ?? false,
      targetModules,
      excludeModules: parseTargetSpec(c.exclude_modules, file, "exclude_modules"),
      layersToTransform: ltt === null || ltt === undefined ? null : typeof ltt === "number" ? [ltt] : ltt,
      layersPattern: c.layers_pattern === undefined || c.layers_pattern === null ? null : typeof c.layers_pattern === "string" ? [c.layers_pattern] : c.layers_pattern,
      rankPattern: c.rank_pattern ?? {},
      alphaPattern: c.alpha_pattern ?? {},
    },
  };
}

export function lycorisToRaw(c: LycorisConfig): Record<string, unknown> {
  return {
    ...baseToRaw(c),
    r: c.r,
    alpha: c.alpha,
    rank_dropout: c.rankDropout,
    module_dropout: c.moduleDropout,
    use_effective_conv2d: c.useEffectiveConv2d,
    target_modules: targetSpecToRaw(c.targetModules),
    exclude_modules: targetSpecToRaw(c.excludeModules),
    layers_to_transform: c.layersToTransform ? [...c.layersToTransform] : null,
    layers_pattern: c.layersPattern ? [...c.layersPattern] : null,
    rank_pattern: { ...c.rankPattern },
    alpha_pattern: { ...c.alphaPattern },
  };
}

/** Rank, alpha and scale alpha/r of one module, with `rank_pattern` / `alpha_pattern` (PEFT's `get_pattern_key`). */
export function lycorisRankAndScale(c: LycorisConfig, module: string): { r: number; alpha: number; scaling: number } {
  const r = c.rankPattern[patternKey(Object.keys(c.rankPattern), module)] ?? c.r;
  const alpha = c.alphaPattern[patternKey(Object.keys(c.alphaPattern), module)] ?? c.alpha;
  return { r, alpha, scaling: alpha / r };
}

/** `peft train`'s config for a LyCORIS method (LoHa, LoKr): rank, alpha, rank dropout, default targets. */
export function lycorisTrainConfig(peftType: string, method: string, o: TrainMethodOptions, model: BaseModelInfo): Record<string, unknown> {
  rejectFeedforward(o, method);
  return {
    peft_type: peftType,
    task_type: o.taskType,
    r: o.r,
    alpha: o.alpha,
    rank_dropout: o.dropout,
    target_modules: o.target ?? [...model.defaultTargets],
    ...savedModules(o),
  };
}
