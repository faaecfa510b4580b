/**
 * What aTLAS writes: a compact coefficient file (JSON: the task vectors by reference, the blocks
 * each one uses and λ), or the composed model itself (config.json + model.safetensors).
 *
 * Coefficient file (`format: "peft-ts-atlas"`, version 1):
 *
 * ```json
 * { "format": "peft-ts-atlas", "version": 1, "mode": "anisotropic", "base_model": "models/base",
 *   "task_vectors": [
 *     { "name": "amazon", "source": { "kind": "lora", "adapter": "runs/amazon" },
 *       "blocks": ["encoder.layer.0.attention.self.query.weight", …], "coefficients": [0.41, …] },
 *     { "name": "imdb", "source": { "kind": "checkpoints", "base": "…", "finetuned": "…" },
 *       "blocks": […], "coefficient": 0.52 } ],          // isotropic: one λ per task vector
 *   "metadata": { … } }
 * ```
 *
 * `blocks` lists the kept blocks of each task vector (after block selection). Both writes are
 * atomic.
 */
import { existsSync, mkdirSync, readFileSync, join } from "../../platform/fs.js";
import { ConfigError } from "../../errors.js";
import { writeFileAtomic, writeFilesAtomic } from "../../io/atomic.js";
import { readJsonObject } from "../../io/json-file.js";
import { saveSafetensors } from "../../io/safetensors.js";
import { writerMetadata } from "../../io/writer.js";
import type { LoadedModel } from "../../models/load.js";
import { USE_LITE_MODEL_TYPE, useLiteConfigJson } from "../../models/use-lite/config.js";
import type { Tensor } from "../../tensor.js";
import { TOKENIZER_FILES } from "../merge-run.js";
import { type AtlasLayout, type AtlasMode, checkCoefficients, coefficientCount, coefficientIndex } from "./layout.js";
import type { AtlasTaskVector, AtlasTaskVectorRef } from "./task-vectors.js";

export const ATLAS_FILE_FORMAT = "peft-ts-atlas";
export const ATLAS_FILE_VERSION = 1;

export interface AtlasCoefficientEntry {
  readonly name: string;
  readonly source: AtlasTaskVectorRef;
  readonly blocks: readonly string[];
  /** Isotropic: λ_t. */
  readonly coefficient?: number;
  /** Anisotropic: λ_{t,b} for each of `blocks`. */
  readonly coefficients?: readonly number[];
}

export interface AtlasCoefficientFile {
  readonly mode: AtlasMode;
  readonly baseModel: string | null;
  readonly taskVectors: readonly AtlasCoefficientEntry[];
  readonly metadata: Readonly<Record<string, unknown>>;
}

/** The file's content for a layout and λ. */
export function atlasCoefficientFile(
  layout: AtlasLayout,
  coef: ArrayLike<number>,
  taskVectors: readonly AtlasTaskVector[],
  opts: { baseModel?: string | null; metadata?: Readonly<Record<string, unknown>> } = {},
): AtlasCoefficientFile {
  checkCoefficients(layout, coef);
  const B = layout.blocks.length;
  const entries = layout.tasks.map((name, t): AtlasCoefficientEntry => {
    const bs = layout.blocks.map((_, b) => b).filter((b) => layout.kept[t * B + b]);
    const source = taskVectors[t]?.name === name ? taskVectors[t]!.ref : ({ kind: "memory" } as const);
    const blocks = bs.map((b) => layout.blocks[b]!);
    return layout.mode === "isotropic"
      ? { name, source, blocks, coefficient: coef[t]! }
      : { name, source, blocks, coefficients: bs.map((b) => coef[coefficientIndex(layout, t, b)]!) };
  });
  return { mode: layout.mode, baseModel: opts.baseModel ?? null, taskVectors: entries, metadata: opts.metadata ?? {} };
}

/** Writes a coefficient file atomically. */
export function saveAtlasCoefficients(path: string, file: AtlasCoefficientFile): void {
  const json = {
    format: ATLAS_FILE_FORMAT,
    version: ATLAS_FILE_VERSION,
    mode: file.mode,
    base_model: file.baseModel,
    task_vectors: file.taskVectors.map((e) => ({ name: e.name, source: e.source, blocks: e.blocks, ...(e.coefficient !== undefined ? { coefficient: e.coefficient } : { coefficients: e.coefficients }) })),
    metadata: file.metadata,
  };
  writeFileAtomic(path, `${JSON.stringify(json, null, 2)}\n`);
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function parseRef(path: string, where: string, v: unknown): AtlasTaskVectorRef {
  if (!isRecord(v)) throw new ConfigError(path, where, "must be an object with a 'kind'");
  const str = (k: string) => {
    if (typeof v[k] !== "string") throw new ConfigError(path, `${where}.${k}`, "must be a string");
    return v[k] as string;
  };
  const include = v.include === undefined ? {} : { include: str("include") };
  if (v.kind === "checkpoints") return { kind: "checkpoints", base: str("base"), finetuned: str("finetuned"), ...include };
  if (v.kind === "lora") return { kind: "lora", adapter: str("adapter"), ...include };
  if (v.kind === "memory") return { kind: "memory" };
  throw new ConfigError(path, `${where}.kind`, `must be 'checkpoints', 'lora' or 'memory', got ${JSON.stringify(v.kind)}`);
}

/** Reads and validates a coefficient file (every fault is a ConfigError naming the key). */
export function readAtlasCoefficients(path: string): AtlasCoefficientFile {
  const raw = readJsonObject(path, "an aTLAS coefficient file (written by saveAtlasCoefficients)");
  if (raw.format !== ATLAS_FILE_FORMAT) throw new ConfigError(path, "format", `must be '${ATLAS_FILE_FORMAT}', got ${JSON.stringify(raw.format)}`);
  if (raw.version !== ATLAS_FILE_VERSION) throw new ConfigError(path, "version", `version ${JSON.stringify(raw.version)} is not supported (this build reads ${ATLAS_FILE_VERSION})`);
  if (raw.mode !== "anisotropic" && raw.mode !== "isotropic") throw new ConfigError(path, "mode", "must be 'anisotropic' or 'isotropic'");
  const mode = raw.mode;
  if (raw.base_model !== null && raw.base_model !== undefined && typeof raw.base_model !== "string") throw new ConfigError(path, "base_model", "must be a string or null");
  if (!Array.isArray(raw.task_vectors) || raw.task_vectors.length === 0) throw new ConfigError(path, "task_vectors", "must be a non-empty list");
  const names = new Set<string>();
  const taskVectors = raw.task_vectors.map((e: unknown, i: number): AtlasCoefficientEntry => {
    const w = `task_vectors[${i}]`;
    if (!isRecord(e)) throw new ConfigError(path, w, "must be an object");
    if (typeof e.name !== "string" || e.name === "" || names.has(e.name)) throw new ConfigError(path, `${w}.name`, "must be a unique non-empty string");
    names.add(e.name);
    if (!Array.isArray(e.blocks) || !e.blocks.every((b) => typeof b === "string")) throw new ConfigError(path, `${w}.blocks`, "must be a list of parameter names");
    const blocks = e.blocks as string[];
    const source = parseRef(path, `${w}.source`, e.source);
    if (mode === "isotropic") {
      if (typeof e.coefficient !== "number" || !Number.isFinite(e.coefficient)) throw new ConfigError(path, `${w}.coefficient`, "must be a finite number (isotropic file)");
      return { name: e.name, source, blocks, coefficient: e.coefficient };
    }
    const c = e.coefficients;
    if (!Array.isArray(c) || c.length !== blocks.length || !c.every((x) => typeof x === "number" && Number.isFinite(x))) {
      throw new ConfigError(path, `${w}.coefficients`, `must be ${blocks.length} finite numbers, one per block (anisotropic file)`);
    }
    return { name: e.name, source, blocks, coefficients: c as number[] };
  });
  return { mode, baseModel: (raw.base_model as string | null | undefined) ?? null, taskVectors, metadata: isRecord(raw.metadata) ? raw.metadata : {} };
}

/**
 * The layout and λ a coefficient file describes, over the given task vectors (same names, in the
 * file's order): blocks in `blockOrder` order (the base model's parameter order).
 */
export function layoutFromCoefficientFile(file: AtlasCoefficientFile, taskVectors: readonly AtlasTaskVector[], blockOrder: readonly string[]): { layout: AtlasLayout; coefficients: Float32Array } {
  file.taskVectors.forEach((e, t) => {
    const tv = taskVectors[t];
    if (!tv || tv.name !== e.name) throw new ConfigError("aTLAS coefficient file", `task_vectors[${t}].name`, `expected task vector '${e.name}' at position ${t}, got ${tv ? `'${tv.name}'` : "none"}`);
    for (const b of e.blocks) if (!tv.blocks.has(b)) throw new ConfigError("aTLAS coefficient file", `task_vectors[${t}].blocks`, `task vector '${e.name}' has no block '${b}'`);
  });
  const used = new Set(file.taskVectors.flatMap((e) => e.blocks));
  const blocks = blockOrder.filter((b) => used.has(b));
  for (const b of used) if (!blocks.includes(b)) throw new ConfigError("aTLAS coefficient file", "blocks", `'${b}' is not a parameter of the base model`);
  const B = blocks.length;
  const kept = new Uint8Array(file.taskVectors.length * B);
  const layout: AtlasLayout = { mode: file.mode, tasks: file.taskVectors.map((e) => e.name), blocks, kept };
  const coefficients = new Float32Array(coefficientCount(layout));
  file.taskVectors.forEach((e, t) => {
    if (file.mode === "isotropic") coefficients[t] = e.coefficient!;
    e.blocks.forEach((name, j) => {
      const b = blocks.indexOf(name);
      kept[t * B + b] = 1;
      if (file.mode === "anisotropic") coefficients[t * B + b] = e.coefficients![j]!;
    });
  });
  return { layout, coefficients };
}

/** config.json text of a loaded model (copied from its folder, or generated for USE-lite). */
function configJsonText(model: LoadedModel): string {
  const f = join(model.dir, "config.json");
  if (existsSync(f)) return readFileSync(f, "utf8");
  if (model.config.modelType === USE_LITE_MODEL_TYPE) return `${JSON.stringify(useLiteConfigJson(model.config), null, 2)}\n`;
  throw new ConfigError(model.dir, "config.json", "the model folder has no config.json to copy");
}

/**
 * Writes a model folder: every base parameter (tied copies excluded) with `composed` replacing
 * the changed ones, config.json and the tokenizer files of the base folder.
 */
export function saveComposedModel(dir: string, model: LoadedModel, composed: ReadonlyMap<string, Tensor>, metadata: Readonly<Record<string, string>> = {}): void {
  const tied = new Set(model.def.tiedWeights(model.config).map(([a]) => a));
  const tensors = new Map<string, Tensor>();
  for (const k of model.weights.keys()) if (!tied.has(k) || composed.has(k)) tensors.set(k, composed.get(k) ?? model.weights.get(k));
  const config = configJsonText(model);
  mkdirSync(dir, { recursive: true });
  saveSafetensors(join(dir, "model.safetensors"), tensors, writerMetadata({ format: "pt", composed_by: "peft-ts aTLAS", ...metadata }));
  const files = [{ path: join(dir, "config.json"), data: config }];
  for (const f of TOKENIZER_FILES) {
    const src = join(model.dir, f);
    if (existsSync(src)) files.push({ path: join(dir, f), data: readFileSync(src, "utf8") });
  }
  writeFilesAtomic(files);
}
