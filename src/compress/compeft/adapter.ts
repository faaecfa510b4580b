/**
 * ComPEFT for PEFT adapter folders: `compressAdapter(dir, file, { density, alpha })` writes one
 * ComPEFT file (format version 2) and `decompressAdapter(file, outDir)` writes back a PEFT adapter
 * folder (`adapter_config.json` + `adapter_model.safetensors`) that PEFT and peft-ts load.
 *
 * What is compressed (one global top-k over all of them, as the ComPEFT reference does): every
 * tensor whose tuner gives it the role `update` with a baseline (`TunerDef.role`) — LoRA's
 * `lora_A` / `lora_B` factors against 0, (IA)³'s `ia3_l` vectors against 1 (their identity value).
 * Everything else in the adapter file is stored dense, as it is: `modules_to_save` copies such as
 * a classifier head, DoRA magnitude vectors (norms, not updates from a baseline), fixed random
 * projections. An adapter with no update tensor (prompt tuning) is refused.
 *
 * The file's metadata holds `adapter_config.json` (as parsed JSON) and the safetensors
 * `__metadata__` of the adapter weights, so decompression needs nothing else. Both functions
 * validate everything before writing; writes are atomic, so a failure never leaves a partial
 * or damaged file or folder behind.
 */
import { statSync } from "../../platform/fs.js";
import { CompeftHeaderError, UnsupportedOptionError } from "../../errors.js";
import { readAdapterDir, writeAdapterDir } from "../../io/peft-files.js";
import { numel, type Tensor } from "../../tensor.js";
import type { TunerDef } from "../../tuners/common/types.js";
import { tunerFor } from "../../tuners/registry.js";
import { compeft, compeftStats, reconstruct, type CompeftCompressed, type CompeftDenseTensor } from "./compeft.js";
import { readCompeftFile, writeCompeftFile } from "./file.js";

export interface CompressAdapterOptions {
  /** Fraction of the compressed entries kept, in (0, 1]. */
  readonly density: number;
  /** Kept magnitude = α · std(update). */
  readonly alpha: number;
}

/** How one adapter tensor is stored: compressed against a baseline, or dense. */
export type CompeftRole = { readonly kind: "sparse"; readonly baseline: number } | { readonly kind: "dense" };

/** Metadata keys of an adapter ComPEFT file. */
export const ADAPTER_CONFIG_KEY = "adapter_config";
export const ADAPTER_WEIGHTS_METADATA_KEY = "adapter_weights_metadata";

/** How tensor `key` of an adapter of `tuner` is stored: its `update` tensors against their baseline, the rest dense. */
export function compeftRole(tuner: TunerDef | string, key: string): CompeftRole {
  const role = (typeof tuner === "string" ? tunerFor(tuner) : tuner).role(key);
  return role?.kind === "update" ? { kind: "sparse", baseline: role.baseline } : { kind: "dense" };
}

/** An adapter as plain data: the parsed config, its tensors under their file names, the safetensors metadata. */
export interface AdapterData {
  readonly configRaw: Readonly<Record<string, unknown>>;
  readonly weights: ReadonlyMap<string, Tensor>;
  readonly weightsMetadata: Readonly<Record<string, string>>;
}

/** Compresses an adapter held in memory (`file` names it in errors). */
export function compeftAdapter(adapter: AdapterData, options: CompressAdapterOptions, file = "adapter_config.json"): CompeftCompressed {
  const peftType = adapter.configRaw.peft_type;
  const tuner = tunerFor(typeof peftType === "string" ? peftType : String(peftType), file);
  tuner.parseConfig({ ...adapter.configRaw }, file);
  const sparse = new Map<string, Tensor>();
  const baselines = new Map<string, number>();
  const dense: CompeftDenseTensor[] = [];
  for (const name of [...adapter.weights.keys()].sort()) {
    const t = adapter.weights.get(name)!;
    const role = compeftRole(tuner, name);
    if (role.kind === "sparse") {
      sparse.set(name, t);
      baselines.set(name, role.baseline);
    } else dense.push({ name, tensor: t });
  }
  if (sparse.size === 0) {
    throw new UnsupportedOptionError(file, "peft_type", tuner.peftType, "the adapter has no update tensor with a known baseline (such as LoRA factors or (IA)³ vectors) to compress");
  }
  const c = compeft(sparse, { ...options, baseline: (n) => baselines.get(n)! });
  return {
    ...c,
    dense,
    metadata: { [ADAPTER_CONFIG_KEY]: { ...adapter.configRaw }, [ADAPTER_WEIGHTS_METADATA_KEY]: { ...adapter.weightsMetadata } },
  };
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** The adapter a ComPEFT file made by {@link compeftAdapter} holds (tensors in their source dtypes). */
export function adapterFromCompeft(c: CompeftCompressed, file = "<compeft>"): AdapterData {
  const meta = c.metadata ?? {};
  const configRaw = meta[ADAPTER_CONFIG_KEY];
  if (!isRecord(configRaw)) {
    throw new CompeftHeaderError(file, `metadata.${ADAPTER_CONFIG_KEY}`, "is missing: the file holds no adapter config (it was not written by compressAdapter); read it with readCompeftFile() and reconstruct()");
  }
  const peftType = configRaw.peft_type;
  tunerFor(typeof peftType === "string" ? peftType : String(peftType), `${file} (adapter_config)`).parseConfig({ ...configRaw }, `${file} (adapter_config)`);
  const wm = meta[ADAPTER_WEIGHTS_METADATA_KEY] ?? {};
  if (!isRecord(wm) || !Object.values(wm).every((v) => typeof v === "string")) {
    throw new CompeftHeaderError(file, `metadata.${ADAPTER_WEIGHTS_METADATA_KEY}`, "must be an object of strings (the safetensors __metadata__)");
  }
  return { configRaw, weights: reconstruct(c, "source"), weightsMetadata: wm as Record<string, string> };
}

export interface CompressAdapterResult {
  readonly file: string;
  /** Size of the ComPEFT file. */
  readonly bytes: number;
  readonly peftType: string;
  /** Compressed tensors, their parameters and the entries kept. */
  readonly sparseTensors: number;
  readonly sparseParams: number;
  readonly kept: number;
  /** Tensors stored dense, and their parameters. */
  readonly denseTensors: number;
  readonly denseParams: number;
}

/** Compresses the PEFT adapter folder `adapterDir` into the ComPEFT file `file` (written atomically). */
export function compressAdapter(adapterDir: string, file: string, options: CompressAdapterOptions): CompressAdapterResult {
  const a = readAdapterDir(adapterDir);
  const c = compeftAdapter({ configRaw: a.configRaw, weights: a.weights, weightsMetadata: a.weightsMetadata }, options, a.configFile);
  writeCompeftFile(file, c);
  const stats = compeftStats(c);
  const dense = c.dense ?? [];
  return {
    file,
    bytes: statSync(file).size,
    peftType: String(a.configRaw.peft_type),
    sparseTensors: c.tensors.length,
    sparseParams: stats.params,
    kept: stats.kept,
    denseTensors: dense.length,
    denseParams: dense.reduce((s, d) => s + numel(d.tensor.shape), 0),
  };
}

export interface DecompressAdapterResult {
  readonly dir: string;
  readonly configFile: string;
  readonly weightsFile: string;
  readonly tensors: number;
}

/**
 * Writes the adapter held in the ComPEFT file `file` to the folder `outDir` (created if missing;
 * an adapter already there is replaced as `save_pretrained` does). The file is fully decoded and
 * checked first: a corrupt, truncated or foreign file raises its typed error and writes nothing.
 */
export function decompressAdapter(file: string, outDir: string): DecompressAdapterResult {
  const a = adapterFromCompeft(readCompeftFile(file), file);
  const { configFile, weightsFile } = writeAdapterDir(outDir, a.configRaw, a.weights, a.weightsMetadata);
  return { dir: outDir, configFile, weightsFile, tensors: a.weights.size };
}
