/**
 * Learning-rate schedules with Hugging Face `transformers` semantics
 * (`get_constant_schedule`, `get_constant_schedule_with_warmup`,
 * `get_linear_schedule_with_warmup`, `get_cosine_schedule_with_warmup`).
 *
 * `multiplier(step)` is the factor `LambdaLR` applies to the base rate, where `step` is the
 * number of optimizer steps already taken: the first update uses `lrAt(0)` (0 during warm-up,
 * as in `transformers`, whose scheduler steps after the optimizer).
 *
 *     warm-up (step < W):  step / max(1, W)
 *     constant:            1
 *     linear:              max(0, (T − step) / max(1, T − W))
 *     cosine:              max(0, ½·(1 + cos(π · 2c · p))),  p = (step − W) / max(1, T − W), c = numCycles (0.5)
 */
import { ConfigError } from "../errors.js";

export type ScheduleConfig =
  | { readonly kind: "constant" }
  | { readonly kind: "constantWithWarmup"; readonly warmupSteps: number }
  | { readonly kind: "linear"; readonly warmupSteps: number; readonly totalSteps: number }
  | { readonly kind: "cosine"; readonly warmupSteps: number; readonly totalSteps: number; readonly numCycles?: number };

export type ScheduleKind = ScheduleConfig["kind"];

export const SCHEDULE_KINDS: readonly ScheduleKind[] = ["constant", "constantWithWarmup", "linear", "cosine"];

export interface LrSchedule {
  readonly config: ScheduleConfig;
  readonly baseLr: number;
  /** The factor applied to the base rate for the update after `step` completed steps. */
  multiplier(step: number): number;
  /** `baseLr · multiplier(step)`. */
  lrAt(step: number): number;
}

function checkSteps(key: string, v: number): void {
  if (!Number.isSafeInteger(v) || v < 0) throw new ConfigError("lr schedule", key, `must be a non-negative integer, got ${String(v)}`);
}

/** `transformers`' warm-up length for `warmup_ratio`: ceil(ratio · totalSteps). */
export function warmupStepsFromRatio(ratio: number, totalSteps: number): number {
  if (!Number.isFinite(ratio) || ratio < 0 || ratio > 1) throw new ConfigError("lr schedule", "warmupRatio", `must be in [0, 1], got ${ratio}`);
  checkSteps("totalSteps", totalSteps);
  return Math.ceil(ratio * totalSteps);
}

/** The multiplier function of a schedule (validated). */
export function scheduleMultiplier(config: ScheduleConfig): (step: number) => number {
  const warm = (w: number, step: number): number => step / Math.max(1, w);
  switch (config.kind) {
    case "constant":
      return () => 1;
    case "constantWithWarmup": {
      const w = config.warmupSteps;
      checkSteps("warmupSteps", w);
      return (step) => (step < w ? warm(w, step) : 1);
    }
    case "linear": {
      const { warmupSteps: w, totalSteps: t } = config;
      checkSteps("warmupSteps", w);
      checkSteps("totalSteps", t);
      return (step) => (step < w ? warm(w, step) : Math.max(0, (t - step) / Math.max(1, t - w)));
    }
    case "cosine": {
      const { warmupSteps: w, totalSteps: t } = config;
      const c = config.numCycles ?? 0.5;
      checkSteps("warmupSteps", w);
      checkSteps("totalSteps", t);
      if (!Number.isFinite(c) || c <= 0) throw new ConfigError("lr schedule", "numCycles", `must be a positive number, got ${c}`);
      return (step) => {
        if (step < w) return warm(w, step);
        const progress = (step - w) / Math.max(1, t - w);
        return Math.max(0, 0.5 * (1 + Math.cos(Math.PI * c * 2 * progress)));
      };
    }
    default: {
      const kind = (config as { kind: unknown }).kind;
      throw new ConfigError("lr schedule", "kind", `unknown schedule '${String(kind)}'; use one of ${SCHEDULE_KINDS.join(", ")}`);
    }
  }
}

export function createSchedule(config: ScheduleConfig, baseLr: number): LrSchedule {
  if (!Number.isFinite(baseLr) || baseLr < 0) throw new ConfigError("lr schedule", "baseLr", `must be a finite number >= 0, got ${baseLr}`);
  const f = scheduleMultiplier(config);
  const multiplier = (step: number): number => {
    checkSteps("step", step);
    return f(step);
  };
  return { config, baseLr, multiplier, lrAt: (step) => baseLr * multiplier(step) };
}
