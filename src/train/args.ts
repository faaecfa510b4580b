/**
 * The `Trainer`'s arguments checked at the public boundary (`new Trainer(model, config, train,
 * validation)`): the config's fields by name and type (an unknown key is refused, so a misspelt
 * option is not silently ignored) and each example's `ids` and `label`. A mistake is an
 * `ArgumentError` (`PEFT_ERR_ARGUMENT`) naming the argument and the field.
 */
import { z } from "zod";
import { ArgumentError } from "../errors.js";
import { checkArg, describeValue, finite, positiveInt, tokenIdRow } from "../util/args.js";
import { PeftModel } from "../peft/peft-model.js";
import type { TrainerConfig } from "./trainer.js";

const positive = z.number().positive();
const nonNegative = z.number().nonnegative();

/** One schema entry per `TrainerConfig` field (the compiler keeps the two in step). */
const CONFIG_FIELDS = {
  task: z.enum(["seq-cls", "causal-lm"]),
  epochs: positive,
  batchSize: positiveInt,
  lr: nonNegative,
  weightDecay: nonNegative.optional(),
  optimizer: z.enum(["adamw", "adamw8bit", "sgd"]).optional(),
  momentum: nonNegative.optional(),
  schedule: z.enum(["constant", "linear", "cosine"]).optional(),
  warmupSteps: z.number().int().nonnegative().optional(),
  warmupRatio: z.number().min(0).max(1).optional(),
  maxGradNorm: nonNegative.optional(),
  gradientAccumulation: positiveInt.optional(),
  evalEvery: positiveInt.optional(),
  earlyStopping: z.strictObject({ patience: positiveInt, metric: z.string().optional() }).optional(),
  seed: z.number().int(),
  dropout: z.boolean().optional(),
  padId: z.number().int().nonnegative().optional(),
  maxLength: positiveInt.optional(),
  groupByLength: z.boolean().optional(),
  session: z.looseObject({}).optional(),
  checkpointDir: z.string().min(1).optional(),
  checkpointEvery: positiveInt.optional(),
  maxSteps: positiveInt.optional(),
  stopAfterSteps: positiveInt.optional(),
  dtype: z.enum(["float32", "float16"]).optional(),
  lossScaling: z.looseObject({ kind: z.enum(["dynamic", "static"]) }).optional(),
  residentOptimizer: z.boolean().optional(),
  loraplusLrRatio: finite.positive().optional(),
  gate: z
    .custom((v) => v !== null && typeof v === "object" && typeof (v as { acquire?: unknown }).acquire === "function" && typeof (v as { release?: unknown }).release === "function", {
      message: "a TrainingGate { acquire(rows, tokensPerRow), release() }",
    })
    .optional(),
} satisfies Record<keyof TrainerConfig, z.ZodType>;

const configSchema = z.strictObject(CONFIG_FIELDS);

const exampleSchema = z.looseObject({ ids: tokenIdRow, label: z.number().int().nonnegative().optional() });

/** Checks `new Trainer(model, config, train, validation)`'s config and examples. */
export function checkTrainerArgs(model: unknown, config: unknown, train: unknown, validation: unknown): void {
  const fn = "new Trainer";
  if (!(model instanceof PeftModel)) throw new ArgumentError(fn, "model", "a PeftModel (PeftModel.create(loadModel(dir), config))", describeValue(model));
  checkArg(fn, "config", configSchema, config);
  const task = (config as TrainerConfig).task;
  for (const [name, list] of [
    ["train", train],
    ["validation", validation],
  ] as const) {
    if (!Array.isArray(list)) throw new ArgumentError(fn, name, "an array of tokenised examples { ids: number[], label?: number }", describeValue(list));
    list.forEach((e: unknown, i) => {
      if (e !== null && typeof e === "object" && !("ids" in e)) {
        throw new ArgumentError(fn, `${name}[${i}].ids`, "the example's token ids ({ ids: number[], label?: number }, as tokenizer.encode(text).ids)", `${describeValue(e)} without 'ids'`);
      }
      checkArg(fn, `${name}[${i}]`, exampleSchema, e);
      if (task === "seq-cls" && (e as { label?: unknown }).label === undefined) {
        throw new ArgumentError(fn, `${name}[${i}].label`, "a class id (task 'seq-cls')", "undefined");
      }
    });
  }
}
