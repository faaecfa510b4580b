/** Helpers shared by the tuners' config parsers. */
import { z } from "zod";
import { ConfigError, UnsupportedOptionError } from "../../errors.js";
import { PEFT_FORMAT_VERSION } from "../../util/version.js";
import type { TunerConfigBase } from "./types.js";

/** Keys every PEFT config may carry that do not change the math. */
export const COMMON_KEYS = [
  "peft_type",
  "task_type",
  "peft_version",
  "base_model_name_or_path",
  "revision",
  "inference_mode",
  "auto_mapping",
  "modules_to_save",
] as const;

/** PEFT task types. */
export const TASK_TYPES = ["SEQ_CLS", "SEQ_2_SEQ_LM", "CAUSAL_LM", "TOKEN_CLS", "QUESTION_ANS", "FEATURE_EXTRACTION"] as const;

/** Reject keys that the method's config does not have (a typo or a newer PEFT option). */
export function rejectUnknownKeys(raw: Readonly<Record<string, unknown>>, known: readonly string[], file: string): void {
  const set = new Set(known);
  const unknown = Object.keys(raw).filter((k) => !set.has(k));
  if (unknown.length > 0) {
    throw new ConfigError(
      file,
      unknown[0]!,
      `unknown key${unknown.length > 1 ? "s" : ""} ${unknown.map((k) => `'${k}'`).join(", ")}; ` +
        "peft-ts reads the options of PEFT 0.21 — remove the key or upgrade peft-ts if a newer PEFT wrote it",
    );
  }
}

/** Options that must be at a default value (null, false, {}, []…) because peft-ts does not implement them. */
export function rejectNonDefault(
  raw: Readonly<Record<string, unknown>>,
  file: string,
  options: Readonly<Record<string, (v: unknown) => boolean>>,
  why: Readonly<Record<string, string>> = {},
): void {
  for (const [k, isDefault] of Object.entries(options)) {
    if (k in raw && !isDefault(raw[k])) throw new UnsupportedOptionError(file, k, raw[k], why[k] ?? "");
  }
}

export const isNullish = (v: unknown): boolean => v === null || v === undefined;
export const isFalsy = (v: unknown): boolean => v === null || v === undefined || v === false;
export const isEmpty = (v: unknown): boolean =>
  v === null || v === undefined || (Array.isArray(v) && v.length === 0) || (typeof v === "object" && Object.keys(v as object).length === 0);

/** Parse with zod and turn the first issue into a ConfigError naming the key. */
export function parseWith<T>(schema: z.ZodType<T>, raw: unknown, file: string): T {
  const r = schema.safeParse(raw);
  if (!r.success) {
    const issue = r.error.issues[0]!;
    throw new ConfigError(file, issue.path.join("."), issue.message);
  }
  return r.data;
}

export const baseSchema = {
  peft_type: z.string(),
  task_type: z.enum(TASK_TYPES).nullable().optional(),
  peft_version: z.string().nullable().optional(),
  base_model_name_or_path: z.string().nullable().optional(),
  revision: z.string().nullable().optional(),
  inference_mode: z.boolean().optional(),
  auto_mapping: z.unknown().optional(),
  modules_to_save: z.array(z.string()).nullable().optional(),
};

export function baseFields(raw: {
  peft_type: string;
  task_type?: string | null;
  base_model_name_or_path?: string | null;
  revision?: string | null;
  inference_mode?: boolean;
  modules_to_save?: string[] | null;
}): TunerConfigBase {
  return {
    peftType: raw.peft_type,
    taskType: raw.task_type ?? null,
    modulesToSave: raw.modules_to_save ?? [],
    baseModelNameOrPath: raw.base_model_name_or_path ?? null,
    revision: raw.revision ?? null,
    inferenceMode: raw.inference_mode ?? false,
  };
}

/**
 * PEFT adds the classification head to `modules_to_save` for SEQ_CLS adapters
 * (`["classifier", "score"]`); mirror it for configs created here.
 */
export function withTaskModules(task: string | null, modulesToSave: readonly string[]): string[] {
  const out = [...modulesToSave];
  if (task === "SEQ_CLS") for (const m of ["classifier", "score"]) if (!out.includes(m)) out.push(m);
  return out;
}

export function baseToRaw(c: TunerConfigBase): Record<string, unknown> {
  return {
    peft_type: c.peftType,
    task_type: c.taskType,
    base_model_name_or_path: c.baseModelNameOrPath,
    revision: c.revision,
    inference_mode: c.inferenceMode,
    modules_to_save: c.modulesToSave.length > 0 ? [...c.modulesToSave] : null,
    // the PEFT release whose format this is; the writer, peft-ts, is recorded in the weights' __metadata__ (io/writer.ts)
    peft_version: PEFT_FORMAT_VERSION,
    auto_mapping: null,
  };
}
