/**
 * `peft inspect` for a PEFT adapter folder (adapter_config.json + adapter_model.safetensors):
 * method, main settings, adapted modules and trainable parameters. Only the header is read.
 */
import { existsSync, statSync } from "node:fs";
import { join } from "node:path";
import { ConfigError, MissingFileError } from "../../errors.js";
import { readJsonObject } from "../../io/json-file.js";
import { ADAPTER_CONFIG_NAME, ADAPTER_PICKLE_NAME, ADAPTER_WEIGHTS_NAME } from "../../io/peft-files.js";
import { SafetensorsFile } from "../../io/safetensors.js";
import { peftTsWriter } from "../../io/writer.js";
import type { TensorRole, TunerDef } from "../../tuners/common/types.js";
import { findTuner } from "../../tuners/registry.js";
import { type DtypeStats, type TensorEntry, dtypeStats, lastComponent, sumBytes, sumParams, tensorEntries } from "./tensors.js";

/** The settings `peft inspect` shows first, in this order, when set (booleans always; null, "", {} and [] never). */
const MAIN_KEYS = [
  "task_type",
  "base_model_name_or_path",
  "r",
  "lora_alpha",
  "alpha",
  "lora_dropout",
  "use_rslora",
  "use_dora",
  "bias",
  "lora_bias",
  "fan_in_fan_out",
  "init_lora_weights",
  "init_ia3_weights",
  "target_modules",
  "exclude_modules",
  "feedforward_modules",
  "target_parameters",
  "modules_to_save",
  "rank_pattern",
  "alpha_pattern",
  "layers_to_transform",
  "layers_pattern",
  "trainable_token_indices",
  "rank_dropout",
  "module_dropout",
  "num_virtual_tokens",
  "token_dim",
  "num_transformer_submodules",
  "num_attention_heads",
  "num_layers",
  "prompt_tuning_init",
  "prompt_tuning_init_text",
  "encoder_hidden_size",
  "prefix_projection",
  "inference_mode",
] as const;

/** Keys that only describe the file (version, bookkeeping) or are unused defaults of disabled features. */
const QUIET_KEYS = new Set(["peft_type", "peft_version", "auto_mapping", "revision", "megatron_core", "qalora_group_size"]);

export interface AdapterTensorGroup {
  /** The parameter's name inside the module (`lora_A.weight`, `ia3_l`), or the full name for a module copy. */
  readonly param: string;
  readonly shape: readonly number[];
  readonly dtype: string;
  readonly count: number;
}

export interface AdapterReport {
  readonly kind: "adapter";
  readonly dir: string;
  readonly configFile: string;
  readonly weightsFile: string;
  readonly peftType: string;
  /** `peft_version` of adapter_config.json: the PEFT release that wrote the file, or whose format it follows. */
  readonly peftVersion: string | null;
  /** The peft-ts version that wrote the weights (`__metadata__.peft_ts_version`); null: written by PEFT or another tool. */
  readonly peftTsVersion: string | null;
  /** Main settings as written in adapter_config.json (PEFT's names). */
  readonly config: Readonly<Record<string, unknown>>;
  /** Other settings with a non-empty value. */
  readonly otherSettings: Readonly<Record<string, unknown>>;
  /** Low-rank methods: output scale lora_alpha / r (or / √r with use_rslora), before rank_pattern/alpha_pattern. */
  readonly scaling: number | null;
  /** Ranks found in the tensors (rows of each low-rank `A` factor), for low-rank methods. */
  readonly ranks: readonly number[];
  /** Modules the method rewrites, without the `base_model.model.` prefix. */
  readonly adaptedModules: readonly string[];
  /** Adapted modules counted by their last name component (`query: 12`). */
  readonly adaptedByType: Readonly<Record<string, number>>;
  /** Modules stored as full trainable copies (`modules_to_save`). */
  readonly savedModules: readonly string[];
  readonly virtualTokens: number | null;
  readonly tensors: number;
  readonly parameters: { readonly total: number; readonly adapter: number; readonly savedModules: number; readonly prompt: number };
  readonly bytes: number;
  readonly dtypes: Readonly<Record<string, DtypeStats>>;
  /** Tensors grouped by parameter name, shape and dtype. */
  readonly shapes: readonly AdapterTensorGroup[];
  readonly tensorList?: readonly TensorEntry[];
}

function stripBase(name: string): string {
  if (name.startsWith("base_model.model.")) return name.slice("base_model.model.".length);
  if (name.startsWith("base_model.")) return name.slice("base_model.".length);
  return name;
}

function isEmpty(v: unknown): boolean {
  if (v === null || v === undefined || v === false || v === "") return true;
  if (Array.isArray(v)) return v.length === 0;
  if (typeof v === "object") return Object.keys(v).length === 0;
  return false;
}

interface Classified {
  readonly entry: TensorEntry;
  readonly kind: "adapter" | "saved" | "prompt";
  readonly module: string;
  readonly param: string;
  readonly role: TensorRole | null;
}

/**
 * Sorts a tensor by the role its tuner gives it (`TunerDef.role`). For a method peft-ts does not
 * implement, PEFT's naming is used: `<module>.<peft_type>_…` is the method's, a name with no
 * module is a prompt-learning tensor, anything else a saved module copy.
 */
function classify(e: TensorEntry, tuner: TunerDef | null, peftType: string): Classified {
  const name = stripBase(e.name);
  const parts = name.split(".");
  if (tuner) {
    const role = tuner.role(name);
    if (role?.kind === "prompt") return { entry: e, kind: "prompt", module: "", param: name, role };
    if (role) {
      const module = role.module ?? "(shared)";
      const param = role.module !== null && name.startsWith(`${role.module}.`) ? name.slice(role.module.length + 1) : name;
      return { entry: e, kind: "adapter", module, param, role };
    }
  } else {
    const at = parts.findIndex((p) => p.startsWith(`${peftType.toLowerCase()}_`));
    if (at >= 0) return { entry: e, kind: "adapter", module: parts.slice(0, at).join(".") || "(shared)", param: parts.slice(at).join("."), role: null };
    if (parts.length === 1) return { entry: e, kind: "prompt", module: "", param: name, role: null };
  }
  const module = parts.length > 1 ? parts.slice(0, -1).join(".") : parts.join(".");
  return { entry: e, kind: "saved", module, param: parts.join("."), role: null };
}

/** Reads an adapter folder's config and safetensors header; no tensor data is read. */
export function inspectAdapterDir(dir: string, opts: { tensors?: boolean } = {}): AdapterReport {
  const configFile = join(dir, ADAPTER_CONFIG_NAME);
  const weightsFile = join(dir, ADAPTER_WEIGHTS_NAME);
  const raw = readJsonObject(configFile, "a PEFT adapter folder needs adapter_config.json (written by PeftModel.save_pretrained)");
  const peftType = raw["peft_type"];
  if (typeof peftType !== "string" || peftType.length === 0) {
    throw new ConfigError(configFile, "peft_type", `missing or not a string (got ${JSON.stringify(peftType)}); a PEFT adapter config names its method, e.g. "LORA"`);
  }
  if (!existsSync(weightsFile) || !statSync(weightsFile).isFile()) {
    throw new MissingFileError(
      weightsFile,
      existsSync(join(dir, ADAPTER_PICKLE_NAME))
        ? `found ${ADAPTER_PICKLE_NAME}, but only safetensors is read; save the adapter again with save_pretrained(..., safe_serialization=True)`
        : "a PEFT adapter folder needs adapter_model.safetensors next to adapter_config.json",
    );
  }
  const f = SafetensorsFile.open(weightsFile);
  let entries: TensorEntry[];
  let peftTsVersion: string | null;
  try {
    entries = tensorEntries([f], weightsFile);
    peftTsVersion = peftTsWriter(f.metadata);
  } finally {
    f.close();
  }

  const tuner = findTuner(peftType);
  const items = entries.map((e) => classify(e, tuner, peftType));
  const adapterItems = items.filter((c) => c.kind === "adapter");
  const adaptedModules = [...new Set(adapterItems.map((c) => c.module))].sort();
  const savedModules = [...new Set(items.filter((c) => c.kind === "saved").map((c) => c.module))].sort();
  const adaptedByType: Record<string, number> = {};
  for (const m of adaptedModules) adaptedByType[lastComponent(m)] = (adaptedByType[lastComponent(m)] ?? 0) + 1;

  const sumKind = (k: Classified["kind"]) => sumParams(items.filter((c) => c.kind === k).map((c) => c.entry));
  const groups = new Map<string, { param: string; shape: readonly number[]; dtype: string; count: number }>();
  for (const c of items) {
    const param = c.kind === "adapter" ? c.param : c.kind === "saved" ? lastComponent(c.module) + "." + lastComponent(c.param) : c.param;
    const key = `${param}|${c.entry.shape.join("x")}|${c.entry.dtype}`;
    const g = groups.get(key) ?? { param, shape: c.entry.shape, dtype: c.entry.dtype, count: 0 };
    g.count++;
    groups.set(key, g);
  }

  const ranks = [
    ...new Set(adapterItems.filter((c) => c.role?.kind === "update" && c.role.lowRank === "A" && c.entry.shape.length >= 2).map((c) => c.entry.shape[0]!)),
  ].sort((a, b) => a - b);
  const config: Record<string, unknown> = {};
  for (const k of MAIN_KEYS) if (k in raw && (typeof raw[k] === "boolean" || !isEmpty(raw[k]))) config[k] = raw[k];
  const otherSettings: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(raw)) if (!(k in config) && !QUIET_KEYS.has(k) && !isEmpty(v)) otherSettings[k] = v;

  const r = raw["r"];
  const alpha = raw["lora_alpha"];
  const scaling =
    ranks.length > 0 && typeof r === "number" && r > 0 && typeof alpha === "number" ? alpha / (raw["use_rslora"] === true ? Math.sqrt(r) : r) : null;
  const prompt = items.find((c) => c.kind === "prompt");
  const nvt = raw["num_virtual_tokens"];

  return {
    kind: "adapter",
    dir,
    configFile,
    weightsFile,
    peftType,
    peftVersion: typeof raw["peft_version"] === "string" ? raw["peft_version"] : null,
    peftTsVersion,
    config,
    otherSettings,
    scaling,
    ranks,
    adaptedModules,
    adaptedByType,
    savedModules,
    virtualTokens: typeof nvt === "number" ? nvt : prompt ? prompt.entry.shape[0] ?? null : null,
    tensors: entries.length,
    parameters: { total: sumParams(entries), adapter: sumKind("adapter"), savedModules: sumKind("saved"), prompt: sumKind("prompt") },
    bytes: sumBytes(entries),
    dtypes: dtypeStats(entries),
    shapes: [...groups.values()],
    ...(opts.tensors ? { tensorList: entries } : {}),
  };
}
