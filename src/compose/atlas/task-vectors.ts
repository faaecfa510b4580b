/**
 * Task vectors for aTLAS, split into parameter blocks: τ_t = θ_t − θ_0, one block per parameter
 * tensor (`bert.encoder.layer.0.attention.self.query.weight`), stored in the base parameter's
 * layout. They come from full fine-tunes (two safetensors checkpoints) or from adapters of any
 * mergeable method (merged − base per changed parameter: for LoRA ΔW = scaling·B·A, transposed for
 * GPT-2's Conv1D; `modules_to_save` copies become copy − base). Each task vector remembers where it came from (`AtlasTaskVectorRef`), so a
 * coefficient file can name it instead of storing it.
 */
import { ConfigError, ShapeMismatchError, UnsupportedOptionError } from "../../errors.js";
import type { WeightSource } from "../../models/context.js";
import { loadModel, type LoadedModel } from "../../models/load.js";
import { loadAdapterDir } from "../../peft/adapter-io.js";
import { modelInfo } from "../../peft/model-info.js";
import { numel, toFloat32 } from "../../tensor.js";
import type { AdapterInstance, BaseModelInfo } from "../../tuners/common/types.js";
import { type TensorFilter, acceptsTensor, taskVectorFromCheckpoints } from "../task-vector.js";

/** Where a task vector came from (written to coefficient files). */
export type AtlasTaskVectorRef =
  | { readonly kind: "checkpoints"; readonly base: string; readonly finetuned: string; readonly include?: string }
  | { readonly kind: "lora"; readonly adapter: string; readonly include?: string }
  | { readonly kind: "memory" };

export interface AtlasTaskVector {
  readonly name: string;
  readonly ref: AtlasTaskVectorRef;
  /** Parameter name → τ (float32, row-major in the base parameter's shape). */
  readonly blocks: ReadonlyMap<string, Float32Array>;
}

function filterSource(filter: TensorFilter | undefined): string | undefined {
  return filter instanceof RegExp ? filter.source : undefined;
}

/** Checks every block against the base model's parameters (name and element count). */
export function checkTaskVector(tv: AtlasTaskVector, base: WeightSource): void {
  if (tv.blocks.size === 0) throw new ConfigError(`task vector '${tv.name}'`, "blocks", "has no parameter blocks (check the include filter)");
  for (const [k, v] of tv.blocks) {
    if (!base.has(k)) throw new ConfigError(`task vector '${tv.name}'`, k, "the base model has no such parameter");
    const shape = base.info(k).shape;
    if (numel(shape) !== v.length) throw new ShapeMismatchError(k, shape, [v.length], `task vector '${tv.name}'`);
  }
}

/** τ = θ_ft − θ_base from two safetensors files (float tensors accepted by `include`). */
export function atlasTaskVectorFromCheckpoints(name: string, basePath: string, ftPath: string, opts: { include?: TensorFilter } = {}): AtlasTaskVector {
  const blocks = new Map<string, Float32Array>();
  for (const [k, tau] of taskVectorFromCheckpoints(basePath, ftPath, opts.include ? { include: opts.include } : {})) blocks.set(k, tau);
  const include = filterSource(opts.include);
  return { name, ref: { kind: "checkpoints", base: basePath, finetuned: ftPath, ...(include ? { include } : {}) }, blocks };
}

/**
 * An adapter as a task vector: for every base parameter its merge changes, merged − base (for
 * LoRA ΔW = scaling·B·A, in the base weight's layout), plus copy − base for saved full copies
 * (`modules_to_save`), all filtered by `include`. Any method with a merge rule qualifies.
 */
export function atlasTaskVectorFromAdapter(name: string, adapter: AdapterInstance, model: BaseModelInfo, opts: { include?: TensorFilter; ref?: AtlasTaskVectorRef } = {}): AtlasTaskVector {
  if (!adapter.tuner.merge) {
    throw new UnsupportedOptionError(`adapter '${adapter.name}'`, "peft_type", adapter.tuner.peftType, "aTLAS task vectors need a method whose update can be merged into the weights");
  }
  const blocks = new Map<string, Float32Array>();
  const minus = (after: Float32Array, before: Float32Array) => Float32Array.from(after, (v, i) => v - before[i]!);
  for (const [key, t] of adapter.tensors) {
    if (adapter.tuner.role(key) !== null || !acceptsTensor(opts.include, key) || !model.has(key)) continue;
    blocks.set(key, minus(toFloat32(t), toFloat32(model.weight(key))));
  }
  for (const [key, merged] of adapter.tuner.merge(adapter, model)) {
    if (!acceptsTensor(opts.include, key) || blocks.has(key)) continue;
    blocks.set(key, minus(toFloat32(merged), toFloat32(model.weight(key))));
  }
  return { name, ref: opts.ref ?? { kind: "memory" }, blocks: new Map([...blocks].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) };
}

/** A PEFT LoRA adapter folder as a task vector for `model` (validated against it). */
export function atlasTaskVectorFromLoraDir(name: string, dir: string, model: LoadedModel, opts: { include?: TensorFilter } = {}): AtlasTaskVector {
  const info = modelInfo(model);
  const adapter = loadAdapterDir(dir, "atlas_source", info);
  const include = filterSource(opts.include);
  return atlasTaskVectorFromAdapter(name, adapter, info, { ...opts, ref: { kind: "lora", adapter: dir, ...(include ? { include } : {}) } });
}

/** Re-creates a task vector from its reference (for coefficient files); `memory` ones cannot be. */
export function loadAtlasTaskVector(name: string, ref: AtlasTaskVectorRef, model: LoadedModel | string): AtlasTaskVector {
  const include = "include" in ref && ref.include !== undefined ? new RegExp(ref.include) : undefined;
  if (ref.kind === "checkpoints") return atlasTaskVectorFromCheckpoints(name, ref.base, ref.finetuned, include ? { include } : {});
  if (ref.kind === "lora") return atlasTaskVectorFromLoraDir(name, ref.adapter, typeof model === "string" ? loadModel(model) : model, include ? { include } : {});
  throw new ConfigError(`task vector '${name}'`, "source", "was built in memory and is not stored anywhere; pass the task vector itself");
}
