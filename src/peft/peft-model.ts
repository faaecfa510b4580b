/**
 * `PeftModel`: a base model plus named adapters, with Python PEFT's API (camelCased):
 * `getPeftModel`, `fromPretrained`, `loadAdapter`, `addAdapter`, `setAdapter`, `deleteAdapter`,
 * `disableAdapter`, `mergeAdapter`/`unmergeAdapter`/`mergeAndUnload`, `savePretrained`,
 * trainable-parameter counts, and mixed-adapter batches. The loaded base weights are never
 * modified: merges are kept as overrides, so unmerging restores the base exactly, and the base
 * rewrites of PiSSA / OLoRA adapters are overrides held while the adapter is loaded.
 */
import { z } from "zod";
import { AdapterStateError, ArgumentError, ConfigError, UnsupportedOptionError } from "../errors.js";
import { Graph } from "../graph/graph.js";
import type { Value } from "../graph/types.js";
import { DEFAULT_ADAPTER_NAME, adapterDirFor, validateAdapterName } from "../io/peft-files.js";
import { loadTokenizer } from "../io/tokenizer.js";
import { HAS_FILE_SYSTEM, existsSync, join } from "../platform/fs.js";
import * as G from "../graph/api.js";
import {
  type ComputeDtype,
  type ContextOptions,
  type ModelHooks,
  ModelContext,
  type WeightSource,
  castTensor,
  checkComputeDtype,
  masterDtype,
  overlaySource,
} from "../models/context.js";
import { logitsInFloat32 } from "../models/forward.js";
import type { LoadedModel } from "../models/load.js";
import type { ModelOutputs } from "../models/model-def.js";
import { CompiledGraph, type SessionOptions } from "../runtime/session.js";
import { type DType, type Tensor, numel } from "../tensor.js";
import type { AdapterInstance, BaseModelInfo, TunerConfigBase } from "../tuners/common/types.js";
import { isModuleToSave } from "../tuners/common/target.js";
import { tunerFor } from "../tuners/registry.js";
import { Rng } from "../util/rng.js";
import { checkArg, describeValue, toMaskTensor, toTokenIdTensor } from "../util/args.js";
import { adapterFileMap, adapterFromParts, checkAdapterSavable, inConfig, loadAdapterDir, saveAdapterDir, validateAdapter } from "./adapter-io.js";
import { adapterFromFiles, type FileMap } from "../io/file-map.js";
import { BASE_ADAPTER, mixedHooks } from "./mixed.js";
import { modelInfo } from "./model-info.js";

/**
 * Token ids in the forms users pass them: an int64 (or int32) tensor `[batch, seq]`, rows as
 * nested arrays (`[[1, 5, 9]]`) or typed arrays, one row as a flat array or typed array, or a
 * tokenizer's output (`tokenizer.encode(text)`, `tokenizer.encodeBatch(texts)`, a list of
 * `encode` results). See `toTokenIdTensor`.
 */
export type TokenIds =
  | Tensor<"int64">
  | Tensor<"int32">
  | readonly (readonly number[] | Int32Array | BigInt64Array)[]
  | readonly number[]
  | Int32Array
  | BigInt64Array
  | { readonly ids: readonly number[] }
  | readonly { readonly ids: readonly number[] }[];

export interface ForwardInputs {
  readonly inputIds: Tensor<"int64">;
  readonly attentionMask?: Tensor<"int64">;
  /** One adapter name per row (`"__base__"` for none): a mixed-adapter batch. */
  readonly adapterNames?: readonly string[];
}

/**
 * What `forward` needs to take text: a tokenizer's batch encoding (`HfTokenizer` from
 * `loadTokenizer(dir)`, USE-lite's tokenizer), padded, with its attention mask.
 */
export interface TextTokenizer {
  encodeBatch(texts: readonly string[]): { readonly inputIds: Tensor<"int64">; readonly attentionMask: Tensor<"int64"> };
}

/** Text for `forward`, encoded with `PeftModel.tokenizer`: one text or a batch, optionally a mixed-adapter batch. */
export interface TextInputs {
  readonly text: string | readonly string[];
  readonly adapterNames?: readonly string[];
}

const tokenizerSchema = z.custom<TextTokenizer>((v) => v !== null && typeof v === "object" && typeof (v as { encodeBatch?: unknown }).encodeBatch === "function", {
  message: "a tokenizer with encodeBatch(texts) (loadTokenizer(dir), USE-lite's tokenizer) or null",
});

/** The model's own tokenizer: USE-lite's (loadUseLiteModel), or tokenizer.json in the model folder; null when there is none. */
function modelTokenizer(base: LoadedModel): TextTokenizer | null {
  const own = (base as { tokenizer?: unknown }).tokenizer;
  if (tokenizerSchema.safeParse(own).success) return own as TextTokenizer;
  return HAS_FILE_SYSTEM && base.dir && existsSync(join(base.dir, "tokenizer.json")) ? loadTokenizer(base.dir) : null;
}

/** `forward`'s text (a string, an array of strings, `{ text }`), or undefined when `inputs` is not text. */
function textOf(inputs: unknown): { text: unknown; adapterNames?: unknown } | undefined {
  if (typeof inputs === "string") return { text: inputs };
  if (Array.isArray(inputs) && inputs.some((x) => typeof x === "string")) return { text: inputs };
  if (inputs !== null && typeof inputs === "object" && !Array.isArray(inputs) && "text" in inputs) {
    const o = inputs as Record<string, unknown>;
    const extra = Object.keys(o).filter((k) => k !== "text" && k !== "adapterNames");
    if (extra.length > 0) throw new ArgumentError("PeftModel.forward", "inputs", "{ text, adapterNames? } (text, or token ids in { inputIds, attentionMask?, adapterNames? }, not both)", `also the key(s) ${extra.join(", ")}`);
    return o.adapterNames === undefined ? { text: o.text } : { text: o.text, adapterNames: o.adapterNames };
  }
  return undefined;
}

/** What `forward` takes: `ForwardInputs` with the ids and mask in any `TokenIds` form. */
export interface ForwardInputsLike {
  readonly inputIds: TokenIds;
  /** 1 for real tokens, 0 for padding, in any form `inputIds` takes; default all ones. */
  readonly attentionMask?: TokenIds;
  /** One adapter name per row (`"__base__"` for none): a mixed-adapter batch. */
  readonly adapterNames?: readonly string[];
}

const loadedModelSchema = z.custom<LoadedModel>(
  (v) => v !== null && typeof v === "object" && "def" in v && "config" in v && "weights" in v,
  { message: "a LoadedModel (from loadModel(dir), modelFromFiles(…) or loadUseLiteModel())" },
);
const configSchema = z.custom<Record<string, unknown>>((v) => v !== null && typeof v === "object" && !Array.isArray(v), { message: "a PEFT config object such as { peft_type: \"LORA\", r: 8, target_modules: [\"query\", \"value\"] }" });
const nameSchema = z.string();
const namesSchema = z.array(z.string());
const loadOptsSchema = z.strictObject({ isTrainable: z.boolean().optional(), activate: z.boolean().optional(), allowNonFinite: z.boolean().optional(), label: z.string().optional() });
const fromOptsSchema = z.strictObject({ adapterName: z.string().optional(), isTrainable: z.boolean().optional(), label: z.string().optional() });
const seedOptsSchema = z.strictObject({ seed: z.number().int().optional() });
const forwardInputsSchema = z.looseObject({ adapterNames: namesSchema.optional() });
const forwardOptsSchema = z.strictObject({ dtype: z.enum(["float32", "float16"]).optional() });
const saveOptsSchema = z.strictObject({ selectedAdapters: namesSchema.optional(), pathInitialModelForWeightConversion: z.string().optional() });
const mapSchema = z.instanceof(Map, { message: "a Map from tensor key to Tensor" });

/** Options of `PeftModel.forward`. */
export interface ForwardOptions {
  /**
   * Compute dtype (default float32). `float16` runs the frozen model in float16 with float32
   * softmax and norm statistics (see docs/training.md, "Mixed precision"); logits are float32.
   */
  readonly dtype?: ComputeDtype;
}

export interface BuildOptions {
  /** Trainable graph: the tensors of active adapters not loaded for inference become graph inputs (and dropout is on). */
  readonly training?: boolean;
  /** Mixed-adapter batch over these adapters (input `adapter_index` [batch]). */
  readonly mixedAdapters?: readonly string[];
  /**
   * Compute dtype (default float32). `float16`: mixed precision — frozen weights in float16,
   * trainable tensors float32 inputs cast in the graph (their gradients are float32), softmax and
   * norm statistics in float32, and `outputs.logits` cast to float32.
   */
  readonly dtype?: DType;
  readonly seed?: number;
  /** Dropout layers active (default: same as `training`). Off gives a deterministic training graph. */
  readonly dropout?: boolean;
}

export interface BuiltPeftGraph {
  readonly graph: Graph;
  readonly ctx: ModelContext;
  readonly outputs: ModelOutputs;
  readonly inputIds: Value;
  readonly attentionMask: Value;
  /** Graph input name → current value, for every trainable tensor. */
  readonly trainable: Map<string, Tensor>;
  /** Graph input name → the adapter and tensor key it trains. */
  readonly owners: Map<string, { adapter: string; key: string }>;
  /** Virtual tokens the active adapters put in front of the sequence: logits are that much longer than `input_ids`. */
  readonly virtualTokens: number;
  /** The trainable adapters' loss terms (AdaLoRA's orthogonality regulariser), summed; null when none. */
  readonly regularizer: Value | null;
}

/**
 * `forward`'s argument as `ForwardInputs`: the object itself, token ids given directly
 * (`forward([[1, 5, 9]])`), or a tokenizer's `encode` result (`{ ids, attentionMask }`).
 */
function asForwardInputs(inputs: unknown): ForwardInputsLike {
  const fn = "PeftModel.forward";
  if (inputs === null || typeof inputs !== "object") {
    throw new ArgumentError(fn, "inputs", "{ inputIds, attentionMask?, adapterNames? } or token ids", describeValue(inputs));
  }
  if (Array.isArray(inputs) || ArrayBuffer.isView(inputs) || "dtype" in inputs) return { inputIds: inputs as TokenIds };
  if ("inputIds" in inputs) return inputs as ForwardInputsLike;
  if ("ids" in inputs) {
    const e = inputs as { ids: readonly number[]; attentionMask?: readonly number[] };
    return { inputIds: e.ids, ...(e.attentionMask !== undefined ? { attentionMask: e.attentionMask } : {}) };
  }
  throw new ArgumentError(fn, "inputs.inputIds", "token ids (inputs is { inputIds, attentionMask?, adapterNames? })", describeValue(inputs));
}

/** Graph input name of an adapter's tensor. */
export function adapterParamName(adapter: string, key: string): string {
  return `${adapter}/${key}`;
}

export class PeftModel {
  private readonly adapters = new Map<string, AdapterInstance>();
  private active: string[] = [];
  private disabled = false;
  private merged: string[] = [];
  private mergedWeights = new Map<string, Tensor>();
  /** Base parameters rewritten by adapters (PiSSA / OLoRA), per adapter, in load order. */
  private rewrites = new Map<string, Map<string, Tensor>>();
  private readonly sessions = new Map<string, Promise<CompiledGraph>>();
  private versions = new Map<string, number>();
  readonly info: BaseModelInfo;
  /** Options for the sessions `forward` creates (threads, execution provider). */
  sessionOptions: SessionOptions = {};
  /** undefined until `tokenizer` is first read or set. */
  private textTokenizer: TextTokenizer | null | undefined = undefined;

  constructor(readonly base: LoadedModel) {
    checkArg("new PeftModel", "model", loadedModelSchema, base);
    this.info = modelInfo(base);
  }

  /**
   * The tokenizer `forward` encodes text with (`model.forward("great film")`): the one set here,
   * else the model's own — USE-lite's, or the model folder's tokenizer.json (loaded on first use);
   * null when none is known, and text is then an `ArgumentError`.
   */
  get tokenizer(): TextTokenizer | null {
    if (this.textTokenizer === undefined) this.textTokenizer = modelTokenizer(this.base);
    return this.textTokenizer;
  }
  set tokenizer(t: TextTokenizer | null) {
    if (t !== null) checkArg("PeftModel.tokenizer", "tokenizer", tokenizerSchema, t);
    this.textTokenizer = t;
  }

  /** Token ids and mask for `forward`'s text, encoded with `tokenizer`. */
  private encodeText(given: { text: unknown; adapterNames?: unknown }): ForwardInputsLike {
    const fn = "PeftModel.forward";
    const texts = typeof given.text === "string" ? [given.text] : given.text;
    if (!Array.isArray(texts) || texts.length === 0 || !texts.every((t) => typeof t === "string")) {
      throw new ArgumentError(fn, "inputs.text", "a string or a non-empty array of strings", describeValue(given.text));
    }
    const tok = this.tokenizer;
    if (tok === null) {
      throw new ArgumentError(
        fn,
        "inputs",
        `token ids: no tokenizer is known for ${this.base.dir || "this model"} to encode text with (set model.tokenizer = loadTokenizer(dir), or put tokenizer.json in the model folder)`,
        describeValue(given.text),
      );
    }
    const enc = tok.encodeBatch(texts as string[]);
    return { inputIds: enc.inputIds, attentionMask: enc.attentionMask, ...(given.adapterNames !== undefined ? { adapterNames: given.adapterNames as readonly string[] } : {}) };
  }

  /** The base weights as the loaded adapters leave them (PiSSA / OLoRA residuals over the loaded base). */
  get baseWeights(): WeightSource {
    if (this.rewrites.size === 0) return this.base.weights;
    const over = new Map<string, Tensor>();
    for (const m of this.rewrites.values()) for (const [k, v] of m) over.set(k, v);
    return overlaySource(this.base.weights, over);
  }

  /** Model info whose `weight` reads the rewritten base. */
  private currentInfo(): BaseModelInfo {
    if (this.rewrites.size === 0) return this.info;
    const w = this.baseWeights;
    return { ...this.info, weight: (k) => w.get(k), has: (k) => w.has(k) };
  }

  /** Record the base rewrite of an adapter whose method changes the base (`TunerDef.baseRewrite`). */
  private rewriteBase(a: AdapterInstance, initial: (() => ReadonlyMap<string, Tensor>) | ReadonlyMap<string, Tensor>): void {
    const t = a.tuner;
    if (!t.baseRewrite) return;
    const info = this.currentInfo();
    const rw = t.baseRewrite(a.config, info, typeof initial === "function" ? initial() : initial);
    if (rw && rw.size > 0) this.rewrites.set(a.name, rw);
  }

  // ------------------------------------------------------------------ construction

  /** PEFT `get_peft_model`: wrap `model` with a new adapter made from a PEFT-style config object. */
  static create(model: LoadedModel, config: Readonly<Record<string, unknown>>, adapterName = DEFAULT_ADAPTER_NAME, opts: { seed?: number } = {}): PeftModel {
    checkArg("PeftModel.create", "model", loadedModelSchema, model);
    checkArg("PeftModel.create", "config", configSchema, config);
    const pm = new PeftModel(model);
    pm.addAdapter(adapterName, config, opts);
    return pm;
  }

  /** PEFT `PeftModel.from_pretrained`. */
  static fromPretrained(model: LoadedModel, dir: string, opts: { adapterName?: string; isTrainable?: boolean } = {}): PeftModel {
    checkArg("PeftModel.fromPretrained", "model", loadedModelSchema, model);
    checkArg("PeftModel.fromPretrained", "dir", nameSchema, dir);
    checkArg("PeftModel.fromPretrained", "opts", fromOptsSchema, opts);
    const pm = new PeftModel(model);
    pm.loadAdapter(dir, opts.adapterName ?? DEFAULT_ADAPTER_NAME, { isTrainable: opts.isTrainable ?? false });
    return pm;
  }

  /** `fromPretrained` for an adapter folder held in memory (file name → bytes, e.g. from a file picker or a zip). */
  static fromFiles(model: LoadedModel, files: FileMap, opts: { adapterName?: string; isTrainable?: boolean; label?: string } = {}): PeftModel {
    checkArg("PeftModel.fromFiles", "model", loadedModelSchema, model);
    checkArg("PeftModel.fromFiles", "opts", fromOptsSchema, opts);
    const pm = new PeftModel(model);
    pm.loadAdapterFromFiles(files, opts.adapterName ?? DEFAULT_ADAPTER_NAME, { isTrainable: opts.isTrainable ?? false, ...(opts.label !== undefined ? { label: opts.label } : {}) });
    return pm;
  }

  get adapterNames(): string[] {
    return [...this.adapters.keys()];
  }
  get activeAdapters(): string[] {
    return [...this.active];
  }
  get activeAdapter(): string {
    return this.active[0] ?? "";
  }
  adapter(name: string): AdapterInstance {
    checkArg("PeftModel.adapter", "name", nameSchema, name);
    const a = this.adapters.get(name);
    if (!a) throw new AdapterStateError(name, `not loaded (loaded: ${this.adapterNames.join(", ") || "none"})`);
    return a;
  }

  private register(adapter: AdapterInstance, activate: boolean): void {
    validateAdapterName(adapter.name);
    if (this.adapters.has(adapter.name)) throw new AdapterStateError(adapter.name, "an adapter with this name is already loaded; delete it first or pick another name");
    this.adapters.set(adapter.name, adapter);
    this.bump(adapter.name);
    if (activate || this.active.length === 0) this.active = [adapter.name];
  }

  private bump(name: string): void {
    this.versions.set(name, (this.versions.get(name) ?? 0) + 1);
  }

  /** PEFT `load_adapter`: read a PEFT adapter folder. A failed load leaves the model unchanged. */
  loadAdapter(dir: string, adapterName: string, opts: { isTrainable?: boolean; activate?: boolean; allowNonFinite?: boolean } = {}): AdapterInstance {
    checkArg("PeftModel.loadAdapter", "dir", nameSchema, dir);
    checkArg("PeftModel.loadAdapter", "adapterName", nameSchema, adapterName);
    checkArg("PeftModel.loadAdapter", "opts", loadOptsSchema, opts);
    validateAdapterName(adapterName);
    if (this.adapters.has(adapterName)) throw new AdapterStateError(adapterName, "already loaded");
    return this.registerLoaded(loadAdapterDir(dir, adapterName, this.info, { allowNonFinite: opts.allowNonFinite ?? false }), opts);
  }

  /** `loadAdapter` for an adapter folder held in memory (`label` names it in errors). A failed load leaves the model unchanged. */
  loadAdapterFromFiles(files: FileMap, adapterName: string, opts: { isTrainable?: boolean; activate?: boolean; allowNonFinite?: boolean; label?: string } = {}): AdapterInstance {
    checkArg("PeftModel.loadAdapterFromFiles", "adapterName", nameSchema, adapterName);
    checkArg("PeftModel.loadAdapterFromFiles", "opts", loadOptsSchema, opts);
    validateAdapterName(adapterName);
    if (this.adapters.has(adapterName)) throw new AdapterStateError(adapterName, "already loaded");
    const parts = adapterFromFiles(files, opts.label ?? adapterName);
    return this.registerLoaded(adapterFromParts(parts, adapterName, this.info, { allowNonFinite: opts.allowNonFinite ?? false }), opts);
  }

  private registerLoaded(a: AdapterInstance, opts: { isTrainable?: boolean; activate?: boolean }): AdapterInstance {
    const inst: AdapterInstance = { ...a, config: { ...a.config, inferenceMode: !(opts.isTrainable ?? false) } };
    this.register(inst, opts.activate ?? false);
    // as PEFT, a PiSSA / OLoRA adapter runs its initialisation on the base again when loaded
    try {
      this.rewriteBase(inst, () => inst.tuner.init(inst.config, this.currentInfo(), new Rng(0)));
    } catch (e) {
      this.adapters.delete(inst.name);
      this.active = this.active.filter((n) => n !== inst.name);
      throw e;
    }
    return inst;
  }

  /** PEFT `add_adapter`: a new, freshly initialised adapter from a PEFT-style config object. */
  addAdapter(adapterName: string, config: Readonly<Record<string, unknown>>, opts: { seed?: number } = {}): AdapterInstance {
    checkArg("PeftModel.addAdapter", "adapterName", nameSchema, adapterName);
    checkArg("PeftModel.addAdapter", "config", configSchema, config);
    checkArg("PeftModel.addAdapter", "opts", seedOptsSchema, opts);
    validateAdapterName(adapterName);
    const file = `config of adapter '${adapterName}'`;
    const peftType = config.peft_type;
    if (typeof peftType !== "string") throw new ConfigError(file, "peft_type", "required (e.g. \"LORA\")");
    const tuner = tunerFor(peftType, file);
    const adapter = inConfig(file, (): AdapterInstance => {
      const parsed: TunerConfigBase = tuner.resolve(tuner.parseConfig({ ...config }, file), this.info);
      const modulesToSave = withTaskHead(parsed, this.info);
      const cfg = { ...parsed, modulesToSave, inferenceMode: false };
      const tensors = tuner.init(cfg, this.currentInfo(), new Rng(opts.seed ?? 0));
      for (const k of trainedBiases(cfg, tuner.prefix, tensors, this.base.weights)) tensors.set(k, this.base.weights.get(k));
      for (const m of modulesToSave) {
        for (const k of this.base.weights.keys()) if (k.startsWith(`${m}.`)) tensors.set(k, this.base.weights.get(k));
      }
      const made: AdapterInstance = { name: adapterName, tuner, config: cfg, tensors };
      validateAdapter(made, this.info, file);
      return made;
    });
    this.register(adapter, false);
    this.rewriteBase(adapter, new Map(adapter.tensors));
    return adapter;
  }

  /** PEFT `set_adapter`: which adapter(s) `forward` applies (several are summed). */
  setAdapter(names: string | readonly string[]): void {
    if (typeof names !== "string") checkArg("PeftModel.setAdapter", "names", namesSchema, names);
    const list = typeof names === "string" ? [names] : [...names];
    for (const n of list) this.adapter(n);
    this.active = list;
  }

  /** PEFT `delete_adapter`. */
  deleteAdapter(name: string): void {
    checkArg("PeftModel.deleteAdapter", "name", nameSchema, name);
    this.adapter(name);
    if (this.merged.includes(name)) throw new AdapterStateError(name, "is merged; unmerge it before deleting");
    this.adapters.delete(name);
    this.rewrites.delete(name);
    this.active = this.active.filter((n) => n !== name);
    if (this.active.length === 0 && this.adapters.size > 0) this.active = [this.adapterNames[0]!];
    this.sessions.clear();
  }

  /** PEFT `disable_adapter()` context manager: run `fn` on the base model, then restore. */
  async disableAdapter<T>(fn: () => Promise<T> | T): Promise<T> {
    const prev = this.disabled;
    this.disabled = true;
    try {
      return await fn();
    } finally {
      this.disabled = prev;
    }
  }

  /**
   * Replace an adapter's config and tensors together (AdaLoRA after training: `rank_pattern` and
   * the kept triplets); checked like a loaded adapter.
   */
  replaceAdapterState(name: string, config: TunerConfigBase, tensors: ReadonlyMap<string, Tensor>): void {
    const a = this.adapter(name);
    if (this.merged.includes(name)) throw new AdapterStateError(name, "is merged; unmerge it first");
    const next: AdapterInstance = { ...a, config, tensors: new Map(tensors) };
    validateAdapter(next, this.info, `adapter '${name}'`);
    this.adapters.set(name, next);
    this.bump(name);
    this.sessions.clear();
  }

  /** Replace some of an adapter's tensors (after a training step), keeping shapes. */
  updateAdapterTensors(name: string, values: ReadonlyMap<string, Tensor>): void {
    checkArg("PeftModel.updateAdapterTensors", "values", mapSchema, values);
    const a = this.adapter(name);
    for (const [k, v] of values) {
      const old = a.tensors.get(k);
      if (!old) throw new AdapterStateError(name, `has no tensor '${k}'`);
      if (numel(old.shape) !== numel(v.shape)) throw new AdapterStateError(name, `new value of '${k}' has a different size`);
      // the new value's dtype wins: a float16 adapter trained with float32 master weights becomes
      // float32, as PEFT's `autocast_adapter_dtype` upcasts adapters loaded for training
      a.tensors.set(k, { dtype: v.dtype, shape: old.shape, data: v.data } as Tensor);
    }
    this.bump(name);
  }

  // ------------------------------------------------------------------ merging

  /** PEFT `merge_adapter`: fold the active (or given) adapters into the weights used by `forward`. */
  mergeAdapter(names: readonly string[] = this.active): void {
    checkArg("PeftModel.mergeAdapter", "names", namesSchema, names);
    for (const n of names) {
      if (this.merged.includes(n)) continue;
      const a = this.adapter(n);
      if (!a.tuner.merge) throw new UnsupportedOptionError(`adapter '${n}'`, "peft_type", a.tuner.peftType, "this method adds to the input instead of changing weights and cannot be merged");
      const bw = this.baseWeights;
      const info: BaseModelInfo = { ...this.info, weight: (k) => this.mergedWeights.get(k) ?? bw.get(k), has: (k) => this.mergedWeights.has(k) || bw.has(k) };
      for (const [k, v] of a.tuner.merge(a, info)) this.mergedWeights.set(k, v);
      for (const [k, v] of a.tensors) if (this.base.weights.has(k)) this.mergedWeights.set(k, v);
      this.merged.push(n);
    }
    this.sessions.clear();
  }

  /** PEFT `unmerge_adapter`: restore the base weights exactly. */
  unmergeAdapter(): void {
    this.merged = [];
    this.mergedWeights = new Map();
    this.sessions.clear();
  }

  get mergedAdapters(): string[] {
    return [...this.merged];
  }

  /** The weights `forward` runs on: the base model's, with merged adapters folded in (read lazily). */
  get weights(): WeightSource {
    return overlaySource(this.baseWeights, this.mergedWeights);
  }

  /** A number that changes whenever adapter `name` is (re)loaded or its tensors are updated. */
  adapterVersion(name: string): number {
    this.adapter(name);
    return this.versions.get(name) ?? 0;
  }

  /** PEFT `merge_and_unload`: a plain model whose weights include the active adapters. */
  mergeAndUnload(names: readonly string[] = this.active): LoadedModel {
    checkArg("PeftModel.mergeAndUnload", "names", namesSchema, names);
    const before = [...this.merged];
    this.mergeAdapter(names);
    const weights = overlaySource(this.baseWeights, new Map(this.mergedWeights));
    if (before.length === 0) this.unmergeAdapter();
    return { ...this.base, weights };
  }

  /** The full state dict as `forward` sees it now (base + merged adapters). */
  stateDict(): Map<string, Tensor> {
    const w = overlaySource(this.baseWeights, this.mergedWeights);
    return new Map(w.keys().map((k) => [k, w.get(k)]));
  }

  // ------------------------------------------------------------------ graphs

  private hooksFor(adapters: readonly AdapterInstance[], param: (a: AdapterInstance, key: string) => Value, training: boolean, seed: number): ModelHooks {
    const all = adapters.map((a) => a.tuner.hooks(a, (k) => param(a, k), { training, seed }));
    return {
      linear: (name) => {
        const hs = all.map((h) => h.linear?.(name) ?? null).filter((h) => h !== null);
        if (hs.length === 0) return null;
        return (site) => chain(site, hs);
      },
      conv: (name) => {
        const hs = all.map((h) => h.conv?.(name) ?? null).filter((h) => h !== null);
        if (hs.length === 0) return null;
        return (site) => chain(site, hs);
      },
      ...prefixHook(all),
      ...(all.some((h) => h.embeds)
        ? {
            embeds: (args) => all.reduce((acc, h) => (h.embeds ? h.embeds({ g: args.g, ...acc }) : acc), { embeds: args.embeds, mask: args.mask }),
          }
        : {}),
    };
  }

  /** Build the model graph with the current adapter state. */
  buildGraph(opts: BuildOptions = {}): BuiltPeftGraph {
    const training = opts.training ?? false;
    const dropout = opts.dropout ?? training;
    const seed = opts.seed ?? 0;
    const dtype = checkComputeDtype(opts.dtype ?? "float32", "PeftModel.buildGraph options");
    const g = new Graph(`${this.info.modelType}_peft`);
    const inputIds = g.input("input_ids", "int64", ["batch", "seq"]);
    const attentionMask = g.input("attention_mask", "int64", ["batch", "seq"]);
    const trainable = new Map<string, Tensor>();
    const owners = new Map<string, { adapter: string; key: string }>();
    const overrides = new Map(this.mergedWeights);
    const live = this.disabled ? [] : this.active.filter((n) => !this.merged.includes(n)).map((n) => this.adapter(n));
    let hooks: ModelHooks;
    let regularizer: Value | null = null;
    const trainableBase = new Set<string>();
    if (opts.mixedAdapters) {
      const rowIndex = g.input("adapter_index", "int64", ["batch"]);
      hooks = mixedHooks(g, opts.mixedAdapters.map((n) => this.adapter(n)), rowIndex, dtype);
    } else {
      const cache = new Map<string, Value>();
      const param = (a: AdapterInstance, key: string): Value => {
        const name = adapterParamName(a.name, key);
        let v = cache.get(name);
        if (!v) {
          const t = a.tensors.get(key)!;
          if (training && !a.config.inferenceMode && a.tuner.role(key)?.kind !== "frozen") {
            // master weights: float32 inputs (float64 graphs: float64), cast to the compute dtype in the graph
            const master = castTensor(t, masterDtype(dtype));
            v = G.cast(g.input(name, master.dtype, master.shape), dtype);
            trainable.set(name, master);
            owners.set(name, { adapter: a.name, key });
          } else v = g.initializer(name, castTensor(t, dtype));
          cache.set(name, v);
        }
        return v;
      };
      hooks = this.hooksFor(live, param, dropout, seed);
      if (training) {
        for (const a of live) {
          const r = a.config.inferenceMode ? null : (a.tuner.training?.regularizer?.(a, (k) => param(a, k)) ?? null);
          if (r) regularizer = regularizer ? G.add(regularizer, r) : r;
        }
      }
      for (const a of live) {
        for (const [k, t] of a.tensors) {
          // a copied base parameter (modules_to_save, bias) or a tuner's replacement of one (LN tuning)
          const role = a.tuner.role(k);
          const param = role?.kind === "replacement" ? role.param : role === null && this.base.weights.has(k) ? k : null;
          if (param === null) continue;
          overrides.set(param, t);
          if (training && !a.config.inferenceMode) {
            trainableBase.add(param);
            owners.set(param, { adapter: a.name, key: k });
          }
        }
      }
    }
    const ctxOpts: ContextOptions = {
      overrides,
      hooks,
      training: dropout,
      seed,
      dtype,
      ...(training ? { inputParams: (n: string) => trainableBase.has(n) } : {}),
    };
    const ctx = new ModelContext(g, this.baseWeights, ctxOpts);
    const outputs = logitsInFloat32(this.base.def.build(ctx, this.base.config, { inputIds, attentionMask }));
    for (const [k, t] of ctx.inputParams) trainable.set(k, t);
    const virtualTokens = live.reduce((n, a) => n + (a.tuner.virtualTokens?.(a.config) ?? 0), 0);
    return { graph: g, ctx, outputs, inputIds, attentionMask, trainable, owners, virtualTokens, regularizer };
  }

  private stateKey(mixed: readonly string[] | undefined, dtype: ComputeDtype): string {
    return JSON.stringify({
      dtype,
      active: this.disabled ? [] : this.active,
      merged: this.merged,
      mixed: mixed ?? null,
      v: [...this.versions.entries()],
    });
  }

  /**
   * Logits for a batch (mixed-adapter when `adapterNames` is given). Sessions are cached per
   * adapter state. Token ids in any `TokenIds` form, or text (`"great film"`, an array of texts,
   * `{ text, adapterNames }`) when a `tokenizer` is known.
   */
  async forward(inputs: ForwardInputsLike | TokenIds | TextInputs | string | readonly string[], opts: ForwardOptions = {}): Promise<Tensor> {
    const fn = "PeftModel.forward";
    const text = textOf(inputs);
    const given = text !== undefined ? this.encodeText(text) : asForwardInputs(inputs);
    checkArg(fn, "inputs", forwardInputsSchema, given);
    checkArg(fn, "opts", forwardOptsSchema, opts);
    const dtype = checkComputeDtype(opts.dtype ?? "float32", "PeftModel.forward options");
    const inputIds = toTokenIdTensor(fn, "inputs.inputIds", given.inputIds, this.base.config.vocabSize);
    const [batch, seq] = inputIds.shape as [number, number];
    const mask =
      given.attentionMask === undefined
        ? { dtype: "int64" as const, shape: [batch, seq], data: new BigInt64Array(batch * seq).fill(1n) }
        : toMaskTensor(fn, "inputs.attentionMask", given.attentionMask, [batch, seq]);
    const feeds: Record<string, Tensor> = { input_ids: inputIds, attention_mask: mask };
    let mixed: string[] | undefined;
    if (given.adapterNames) {
      if (this.merged.length > 0) {
        throw new AdapterStateError(this.merged.join(","), "is merged; mixed-adapter batches need unmerged adapters (call unmergeAdapter() first, as in PEFT)");
      }
      if (given.adapterNames.length !== batch) {
        throw new AdapterStateError(given.adapterNames.join(","), `adapterNames has ${given.adapterNames.length} entries for a batch of ${batch}`);
      }
      mixed = [...new Set(given.adapterNames.filter((n) => n !== BASE_ADAPTER))].sort();
      for (const n of mixed) this.adapter(n);
      feeds.adapter_index = {
        dtype: "int64",
        shape: [batch],
        data: BigInt64Array.from(given.adapterNames, (n) => BigInt(n === BASE_ADAPTER ? mixed!.length : mixed!.indexOf(n))),
      };
    }
    const key = this.stateKey(mixed, dtype);
    let s = this.sessions.get(key);
    if (!s) {
      const built = this.buildGraph({ ...(mixed ? { mixedAdapters: mixed } : {}), dtype });
      built.graph.output(built.outputs.logits, "logits");
      s = CompiledGraph.create(built.graph, this.sessionOptions);
      this.sessions.set(key, s);
      s.catch(() => this.sessions.delete(key));
    }
    const out = await (await s).run(feeds, ["logits"]);
    return out.logits!;
  }

  /** Release every cached session. */
  async dispose(): Promise<void> {
    const all = [...this.sessions.values()];
    this.sessions.clear();
    await Promise.all(all.map(async (p) => (await p).release()));
  }

  // ------------------------------------------------------------------ saving and counting

  /**
   * PEFT `save_pretrained`: `default` at the top of `dir`, other adapters in `dir/<name>/`.
   * `pathInitialModelForWeightConversion`: the folder of the adapter saved right after a PiSSA /
   * OLoRA adapter was created; the adapters are then written converted to plain adapters that
   * apply to the original base (LoRA: rank 2r, [A; A₀] and [B | −B₀]). Unlike PEFT, that folder is
   * only read (PEFT also rewrites its config with `init_lora_weights: true`).
   */
  savePretrained(dir: string, opts: { selectedAdapters?: readonly string[]; pathInitialModelForWeightConversion?: string } = {}): string[] {
    checkArg("PeftModel.savePretrained", "dir", nameSchema, dir);
    checkArg("PeftModel.savePretrained", "opts", saveOptsSchema, opts);
    const names = opts.selectedAdapters ? [...opts.selectedAdapters] : this.adapterNames;
    for (const n of names) validateAdapterName(n);
    const init = opts.pathInitialModelForWeightConversion;
    const targets = names.map((n) => ({ adapter: init === undefined ? this.adapter(n) : this.converted(this.adapter(n), init), dir: adapterDirFor(dir, n) }));
    // check every adapter before writing any, so a failed save leaves the disk as it was
    for (const t of targets) checkAdapterSavable(t.adapter);
    for (const t of targets) saveAdapterDir(t.dir, t.adapter);
    return targets.map((t) => t.dir);
  }

  /** `adapter` converted against the initial adapter in folder `initial` (see `savePretrained`). */
  private converted(a: AdapterInstance, initial: string): AdapterInstance {
    if (!a.tuner.convertMutatedInit) {
      throw new UnsupportedOptionError(`adapter '${a.name}'`, "path_initial_model_for_weight_conversion", initial, `${a.tuner.peftType} adapters cannot be converted against an initial adapter`);
    }
    const init = loadAdapterDir(initial, "initial", this.info, { allowNonFinite: false });
    if (init.tuner !== a.tuner) throw new ConfigError(initial, "peft_type", `the initial adapter is ${init.tuner.peftType}, the adapter ${a.tuner.peftType}`);
    const c = a.tuner.convertMutatedInit(a, init);
    return { ...a, config: c.config, tensors: c.tensors };
  }

  /** What `savePretrained` writes for one adapter, in memory: adapter_config.json and adapter_model.safetensors by name. */
  adapterFiles(adapterName: string = this.activeAdapter): Map<string, Uint8Array> {
    return adapterFileMap(this.adapter(adapterName));
  }

  /**
   * PEFT `get_nb_trainable_parameters`: [trainable, all]. As in PEFT, `all` counts the base
   * (tied parameters once) plus every loaded adapter's tensors — a `modules_to_save` copy sits
   * next to the original module — and `trainable` the active adapters not loaded for inference.
   */
  getNbTrainableParameters(): [number, number] {
    // tied parameters (GPT-2's lm_head) are one parameter, counted once
    const tied = new Set(this.base.def.tiedWeights(this.base.config).map(([a]) => a));
    let all = 0;
    for (const k of this.base.weights.keys()) if (!tied.has(k)) all += numel(this.base.weights.info(k).shape);
    let trainable = 0;
    for (const a of this.adapters.values()) {
      let n = 0;
      for (const [k, t] of a.tensors) {
        // fixed tensors saved with the adapter (VeRA's projections) are buffers in PEFT, not parameters
        if (a.tuner.role(k)?.kind === "frozen") continue;
        n += numel(t.shape);
        // a base parameter trained in place (`bias`) is no extra parameter; a modules_to_save copy is
        if (!this.base.weights.has(k) || isModuleToSave(a.config.modulesToSave, k)) all += numel(t.shape);
      }
      if (this.active.includes(a.name) && !a.config.inferenceMode) trainable += n;
    }
    return [trainable, all];
  }

  /** PEFT `print_trainable_parameters` text. */
  printTrainableParameters(log: (s: string) => void = console.log): string {
    const [t, all] = this.getNbTrainableParameters();
    const s = `trainable params: ${t.toLocaleString("en-US")} || all params: ${all.toLocaleString("en-US")} || trainable%: ${((100 * t) / all).toFixed(4)}`;
    log(s);
    return s;
  }
}

/** The prefix (prefix tuning) of the active adapters: at most one adapter may have one, as in PEFT. */
function prefixHook(all: readonly ModelHooks[]): Pick<ModelHooks, "prefix"> {
  const prefixes = all.flatMap((h) => (h.prefix ? [h.prefix] : []));
  if (prefixes.length > 1) throw new AdapterStateError("active adapters", "more than one prefix-tuning adapter is active; activate one at a time (as PEFT)");
  return prefixes.length === 1 ? { prefix: prefixes[0]! } : {};
}

/**
 * Several adapters on one layer: each hook sees as `base` the layer with the previous adapters
 * applied, so LoRA updates add up as in PEFT.
 */
function chain<S extends { readonly x: Value; readonly base: (x: Value) => Value }>(site: S, hooks: readonly ((site: S) => Value)[]): Value {
  let base = site.base;
  let out: Value | null = null;
  for (const h of hooks) {
    const prev = base;
    out = h({ ...site, base: prev });
    const applied = out;
    base = (x) => (x === site.x ? applied : prev(x));
  }
  return out!;
}

/**
 * PEFT's `bias` option: `"all"` trains (and saves with the adapter) every bias of the base model,
 * `"<prefix>only"` (`"lora_only"`) the biases of the adapted layers.
 */
function trainedBiases(c: TunerConfigBase, prefix: string, tensors: ReadonlyMap<string, Tensor>, base: WeightSource): string[] {
  const bias = (c as { readonly bias?: unknown }).bias;
  if (bias === "all") return base.keys().filter((k) => k.endsWith(".bias"));
  if (typeof bias !== "string" || !bias.endsWith("_only")) return [];
  const out = new Set<string>();
  for (const k of tensors.keys()) {
    const i = k.indexOf(`.${prefix}`);
    if (i >= 0 && base.has(`${k.slice(0, i)}.bias`)) out.add(`${k.slice(0, i)}.bias`);
  }
  return [...out];
}

/** PEFT adds the classification head to `modules_to_save` for SEQ_CLS tasks. */
function withTaskHead(c: TunerConfigBase, info: BaseModelInfo): string[] {
  const out = [...c.modulesToSave];
  if (c.taskType === "SEQ_CLS") for (const m of info.outputModules) if (!out.includes(m)) out.push(m);
  return out;
}
