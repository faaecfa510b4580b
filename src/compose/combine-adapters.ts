/**
 * PEFT's `model.add_weighted_adapter(adapters, weights, adapter_name, …)` on a `PeftModel`, and
 * `combineAdapterDirs`, the file-to-file form behind `peft combine`: load LoRA adapter folders
 * (validated against the base model), combine them with `addWeightedAdapter`, and write the
 * result as a PEFT adapter folder.
 *
 * The new adapter's config is the first adapter's config with `r = lora_alpha = new rank`, the
 * union of the target modules and empty rank/alpha patterns (PEFT's `replace(...)`). As in PEFT,
 * `modules_to_save` copies are not combined: two adapters saving the same module is an error,
 * and the new adapter's copies (from the first adapter's `modules_to_save` / SEQ_CLS head) start
 * from the base module, which `combineAdapterDirs` reports as a warning.
 */
import { ConfigError, UnsupportedOptionError } from "../errors.js";
import { loadModel, type LoadedModel } from "../models/load.js";
import { saveAdapterDir } from "../peft/adapter-io.js";
import { PeftModel } from "../peft/peft-model.js";
import { type Tensor, assertFinite, toFloat32 } from "../tensor.js";
import type { AdapterInstance, LowRankView } from "../tuners/common/types.js";
import { Rng } from "../util/rng.js";
import type { MajoritySignMethod } from "./peft-merge-utils.js";
import { checkAddWeightedLoraArgs, checkCombineArgs } from "./args.js";
import {
  type CombinationType,
  type LoraFactors,
  type WeightedAdapterOptions,
  type WeightedAdapterResult,
  type WeightedAdapterSource,
  addWeightedAdapter,
} from "./weighted-adapter.js";

const WHERE = "add_weighted_adapter";

/** The adapter's low-rank view, or a typed error when its method has no low-rank update (or this adapter cannot be combined). */
export function lowRankOf(a: AdapterInstance, label: string, purpose = "add_weighted_adapter"): LowRankView {
  const view = a.tuner.lowRank;
  if (!view) throw new UnsupportedOptionError(label, "peft_type", a.tuner.peftType, `${purpose} combines adapters whose update is a low-rank product B·A`);
  view.check(a, label, purpose);
  return view;
}

/** One loaded low-rank adapter as a `WeightedAdapterSource` (module name → factors, with its scaling). */
export function loraAdapterSource(a: AdapterInstance, purpose = "add_weighted_adapter"): WeightedAdapterSource {
  const view = lowRankOf(a, `adapter '${a.name}'`, purpose);
  const modules = new Map<string, LoraFactors>();
  for (const [name, f] of view.factors(a)) {
    const [r, inFeatures] = f.A.shape as [number, number];
    modules.set(name, { A: Float32Array.from(toFloat32(f.A)), B: Float32Array.from(toFloat32(f.B)), r, inFeatures, outFeatures: f.B.shape[0]!, scaling: f.scaling });
  }
  const info = view.rankInfo(a.config);
  return { name: a.name, modules, r: info.r, rankPattern: info.rankPattern, targetModules: info.targetModules };
}

/** Checks PEFT's rule: at most one of the combined adapters may save a given module. */
function checkModulesToSave(adapters: readonly AdapterInstance[]): void {
  const owners = new Map<string, string[]>();
  for (const a of adapters) for (const m of a.config.modulesToSave) owners.set(m, [...(owners.get(m) ?? []), a.name]);
  for (const [m, names] of owners) {
    if (names.length > 1) {
      throw new ConfigError(WHERE, "modules_to_save", `adapters ${names.join(", ")} all save module '${m}'; PEFT cannot combine modules_to_save copies (keep it in one adapter only)`);
    }
  }
}

export interface AddWeightedLoraOptions extends Omit<WeightedAdapterOptions, "rng" | "useRslora"> {
  /** Seed of the generator used by the dare variants (and of the new adapter's unused initial values). */
  readonly seed?: number;
}

/**
 * PEFT `add_weighted_adapter`: combines loaded LoRA adapters of `pm` into a new adapter
 * `adapterName` (registered in `pm`, not activated) and returns it with the combination result.
 */
export function addWeightedLoraAdapter(
  pm: PeftModel,
  adapterNames: readonly string[],
  weights: readonly number[],
  adapterName: string,
  options: AddWeightedLoraOptions = {},
): { adapter: AdapterInstance; result: WeightedAdapterResult } {
  checkAddWeightedLoraArgs(adapterNames, weights, adapterName, options);
  if (adapterNames.length === 0) throw new ConfigError(WHERE, "adapters", "needs at least one adapter");
  const adapters = adapterNames.map((n) => pm.adapter(n));
  const first = adapters[0]!;
  const view = lowRankOf(first, `adapter '${first.name}'`);
  for (const a of adapters) {
    if (a.tuner !== first.tuner) throw new UnsupportedOptionError(`adapter '${a.name}'`, "peft_type", a.tuner.peftType, `add_weighted_adapter combines adapters of one method (the first is ${first.tuner.peftType})`);
  }
  checkModulesToSave(adapters);
  const sources = adapters.map((a) => loraAdapterSource(a));
  const seed = options.seed ?? 0;
  const { seed: _seed, ...weighted } = options;
  const result = addWeightedAdapter(sources, weights, {
    ...weighted,
    useRslora: view.rankInfo(first.config).useRslora,
    rng: new Rng(seed),
  });
  const cfg = result.config;
  const raw = view.configFor(first.config, { r: cfg.r, alpha: cfg.loraAlpha, targetModules: cfg.targetModules as string | string[] | null, resetLayout: false });
  const inst = pm.addAdapter(adapterName, raw, { seed });
  const values = new Map<string, Tensor>();
  for (const [module, f] of result.modules) {
    const k = view.keys(module);
    if (!inst.tensors.has(k.A)) {
      pm.deleteAdapter(adapterName);
      throw new ConfigError(
        WHERE,
        "target_modules",
        `module '${module}' was combined but the new adapter (config of '${first.name}' with the union of target_modules) does not target it; give the adapters compatible layers_to_transform/exclude_modules`,
      );
    }
    values.set(k.A, { dtype: "float32", shape: [f.r, f.inFeatures], data: f.A });
    values.set(k.B, { dtype: "float32", shape: [f.outFeatures, f.r], data: f.B });
  }
  pm.updateAdapterTensors(adapterName, values);
  return { adapter: pm.adapter(adapterName), result };
}

export interface CombineAdaptersOptions {
  /** Base model folder (or an already loaded model) the adapters belong to. */
  readonly base: string | LoadedModel;
  /** PEFT adapter folders. */
  readonly adapters: readonly string[];
  readonly weights: readonly number[];
  readonly combinationType?: CombinationType;
  readonly density?: number | null;
  readonly svdRank?: number | null;
  readonly svdClamp?: number | null;
  readonly majoritySignMethod?: MajoritySignMethod;
  readonly seed?: number;
  /** Output adapter folder (written atomically: config and weights appear together). */
  readonly outDir: string;
  /** Accept NaN/±Infinity in the source adapters and the result (default: `NonFiniteValueError`). */
  readonly allowNonFinite?: boolean;
  /** Called after each module is combined (`index` counts from 1 to `total`): progress of long svd combinations. */
  readonly onModule?: (module: string, index: number, total: number) => void;
}

export interface CombineAdaptersResult {
  readonly outDir: string;
  /** The type actually used (`linear` when only one adapter was given, as in PEFT). */
  readonly combinationType: CombinationType;
  readonly r: number;
  readonly modules: number;
  /** Things the user should know (e.g. modules_to_save copies taken from the base, as PEFT does). */
  readonly warnings: string[];
}

/** Loads adapter folders, combines them (`add_weighted_adapter`) and writes the new adapter folder. */
export function combineAdapterDirs(opts: CombineAdaptersOptions): CombineAdaptersResult {
  checkCombineArgs(opts);
  if (opts.adapters.length === 0) throw new ConfigError("combine", "adapters", "give at least one adapter folder");
  const model = typeof opts.base === "string" ? loadModel(opts.base) : opts.base;
  const pm = new PeftModel(model);
  const names = opts.adapters.map((dir, i) => {
    const name = `adapter_${i}`;
    pm.loadAdapter(dir, name, { allowNonFinite: opts.allowNonFinite ?? false });
    return name;
  });
  const { adapter, result } = addWeightedLoraAdapter(pm, names, opts.weights, "combined", {
    ...(opts.combinationType ? { combinationType: opts.combinationType } : {}),
    density: opts.density ?? null,
    svdRank: opts.svdRank ?? null,
    svdClamp: opts.svdClamp ?? null,
    ...(opts.majoritySignMethod ? { majoritySignMethod: opts.majoritySignMethod } : {}),
    ...(opts.seed !== undefined ? { seed: opts.seed } : {}),
    ...(opts.onModule ? { onModule: opts.onModule } : {}),
  });
  if (!opts.allowNonFinite) assertFinite(adapter.tensors, `the combined adapter for ${opts.outDir} (the weights overflow float32?)`);
  const warnings: string[] = [];
  if (adapter.config.modulesToSave.length > 0) {
    warnings.push(
      `modules_to_save (${adapter.config.modulesToSave.join(", ")}) of the new adapter are copies of the base model's modules, ` +
        "as in PEFT's add_weighted_adapter: the source adapters' trained copies are not combined",
    );
  }
  saveAdapterDir(opts.outDir, adapter);
  return { outDir: opts.outDir, combinationType: result.combinationType, r: result.config.r, modules: result.modules.size, warnings };
}
