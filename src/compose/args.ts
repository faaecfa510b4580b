/**
 * Argument checks of the composition entry points (`combineAdapterDirs`, `addWeightedLoraAdapter`,
 * `addWeightedAdapter`, `mergeCheckpoints`, `mergeTaskTensors`): option objects by field name and
 * type (an unknown key — a misspelt option — is refused), lists and numbers. A mistake is an
 * `ArgumentError` (`PEFT_ERR_ARGUMENT`) naming the function and the argument. One schema entry
 * per option field: the compiler keeps them in step with the option interfaces.
 */
import { z } from "zod";
import type { CombineAdaptersOptions, AddWeightedLoraOptions } from "./combine-adapters.js";
import type { MergeCheckpointsOptions } from "./task-vector.js";
import type { MergeTensorsOptions } from "./methods.js";
import type { WeightedAdapterOptions } from "./weighted-adapter.js";
import { checkArg } from "../util/args.js";

const fraction = z.number().min(0).max(1);
const nullableFraction = fraction.nullable().optional();
const rank = z.number().int().positive().nullable().optional();
const fnSchema = z.custom<(...args: never[]) => unknown>((v) => typeof v === "function", { message: "a function" });
const params = z.record(z.string(), z.unknown());
const rngSchema = z.custom((v) => v !== null && typeof v === "object" && typeof (v as { uniform?: unknown }).uniform === "function", { message: "a generator with uniform(): number" });
const tensorSchema = z.custom((v) => v !== null && typeof v === "object" && "dtype" in v && "shape" in v && "data" in v, { message: "a Tensor { dtype, shape, data }" });

const weightedFields = {
  combinationType: z.string().optional(),
  svdRank: rank,
  svdClamp: nullableFraction,
  density: nullableFraction,
  majoritySignMethod: z.enum(["total", "frequency"]).optional(),
  rng: rngSchema.optional(),
  useRslora: z.boolean().optional(),
  onModule: fnSchema.optional(),
} satisfies Record<keyof WeightedAdapterOptions, z.ZodType>;

const { rng: _rng, useRslora: _rs, ...loraBase } = weightedFields;
const loraFields = { ...loraBase, seed: z.number().int().nonnegative().optional() } satisfies Record<keyof AddWeightedLoraOptions, z.ZodType>;

const combineFields = {
  base: z.custom<string | object>((v) => (typeof v === "string" && v.length > 0) || (v !== null && typeof v === "object" && "weights" in v), {
    message: "a base model folder or a LoadedModel",
  }),
  adapters: z.array(z.string().min(1)).min(1),
  weights: z.array(z.number().finite()).min(1),
  combinationType: z.string().optional(),
  density: nullableFraction,
  svdRank: rank,
  svdClamp: nullableFraction,
  majoritySignMethod: z.enum(["total", "frequency"]).optional(),
  seed: z.number().int().nonnegative().optional(),
  outDir: z.string().min(1),
  allowNonFinite: z.boolean().optional(),
  onModule: fnSchema.optional(),
} satisfies Record<keyof CombineAdaptersOptions, z.ZodType>;

const mergeCheckpointsFields = {
  base: z.string().min(1),
  models: z.array(z.strictObject({ path: z.string().min(1), params: params.optional() })).min(1),
  method: z.custom((v) => typeof v === "string" || (v !== null && typeof v === "object"), { message: "a merge method name or definition" }),
  params: params.optional(),
  outPath: z.string().min(1),
  rng: rngSchema.optional(),
  include: z.custom((v) => typeof v === "function" || v instanceof RegExp, { message: "a filter: a RegExp or a function of the tensor name" }).optional(),
  metadata: z.record(z.string(), z.string()).optional(),
  onTensor: fnSchema.optional(),
  dtype: z.enum(["float32", "float16", "bfloat16"]).optional(),
  allowNonFinite: z.boolean().optional(),
} satisfies Record<keyof MergeCheckpointsOptions, z.ZodType>;

const mergeTensorsFields = {
  params: params.optional(),
  perModel: z.array(params.optional()).optional(),
  rng: rngSchema.optional(),
  key: z.string().optional(),
} satisfies Record<keyof MergeTensorsOptions, z.ZodType>;

const weightsSchema = z.array(z.number().finite());
const namesSchema = z.array(z.string()).min(1);

export function checkCombineArgs(opts: unknown): void {
  checkArg("combineAdapterDirs", "opts", z.strictObject(combineFields), opts);
}

export function checkAddWeightedLoraArgs(adapterNames: unknown, weights: unknown, adapterName: unknown, options: unknown): void {
  const fn = "addWeightedLoraAdapter";
  checkArg(fn, "adapterNames", namesSchema, adapterNames);
  checkArg(fn, "weights", weightsSchema, weights);
  checkArg(fn, "adapterName", z.string(), adapterName);
  checkArg(fn, "options", z.strictObject(loraFields), options);
}

export function checkAddWeightedArgs(adapters: unknown, weights: unknown, options: unknown): void {
  const fn = "addWeightedAdapter";
  checkArg(fn, "adapters", z.array(z.looseObject({ name: z.string().optional(), modules: z.instanceof(Map, { message: "a Map from module name to LoRA factors" }) })).min(1), adapters);
  checkArg(fn, "weights", weightsSchema, weights);
  checkArg(fn, "options", z.strictObject(weightedFields), options);
}

export function checkMergeCheckpointsArgs(opts: unknown): void {
  checkArg("mergeCheckpoints", "opts", z.strictObject(mergeCheckpointsFields), opts);
}

export function checkMergeTensorsArgs(tensors: unknown, opts: unknown): void {
  checkArg("mergeTaskTensors", "tensors", z.array(tensorSchema).min(1), tensors);
  checkArg("mergeTaskTensors", "opts", z.strictObject(mergeTensorsFields), opts);
}
