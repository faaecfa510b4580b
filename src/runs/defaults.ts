/**
 * Defaults of `peft train` and `peft atlas` in a module with no runtime imports, so the CLI's
 * `--help` shows them without loading the training code (and onnxruntime).
 */
import type { TrainRunOptions } from "./train.js";

export const TRAIN_DEFAULTS = {
  method: "lora",
  r: 8,
  alpha: 16,
  dropout: 0,
  epochs: 3,
  lr: 1e-3,
  batchSize: 16,
  seed: 0,
  weightDecay: 0.01,
  warmupRatio: 0.06,
  schedule: "linear",
  gradAccum: 1,
  maxGradNorm: 1,
} as const satisfies Partial<TrainRunOptions>;

export const ATLAS_DEFAULTS = { mode: "anisotropic", objective: "cross-entropy", epochs: 5, batchSize: 32, weightDecay: 0.1, seed: 0 } as const;
