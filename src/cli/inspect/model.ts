/**
 * `peft inspect` for a Hugging Face model folder: config.json plus model.safetensors or a
 * sharded set (model.safetensors.index.json). Only headers are read.
 */
import { SIMPLE_CNN_MODEL_TYPE, parseSimpleCnnConfig } from "../../models/simple-cnn.js";
import { existsSync, readdirSync, statSync } from "node:fs";
import { basename, join } from "node:path";
import { ConfigError, MissingFileError, UnsupportedOptionError } from "../../errors.js";
import { type HfModelConfig, safeParseHfConfig } from "../../io/hf-config.js";
import { readJsonObject } from "../../io/json-file.js";
import { SafetensorsFile } from "../../io/safetensors.js";
import type { ModelDef } from "../../models/model-def.js";
import { MODELS } from "../../models/registry.js";
import {
  type DtypeStats,
  type FileStats,
  type GroupStats,
  type TensorEntry,
  dtypeStats,
  fileStats,
  groupStats,
  lastComponent,
  modulePath,
  repeatedBlocks,
  sumBytes,
  sumParams,
  tensorEntries,
} from "./tensors.js";

/** What a parameter does in the network, from its module path. */
export type ModelRole = "embeddings" | "attention" | "mlp" | "norm" | "head" | "other";
export const MODEL_ROLES: readonly ModelRole[] = ["embeddings", "attention", "mlp", "norm", "head", "other"];

export type ConfigValue = string | number | boolean | null | readonly string[];

export interface ModelReport {
  readonly kind: "model";
  readonly dir: string;
  readonly modelType: string | null;
  readonly architectures: readonly string[];
  /** Main hyper-parameters (camelCase), with transformers' defaults when peft-ts can parse the config. */
  readonly config: Readonly<Record<string, ConfigValue>>;
  /** Whether peft-ts can build this architecture, and why not. */
  readonly support: { readonly supported: boolean; readonly problems: readonly string[] };
  readonly files: readonly FileStats[];
  readonly tensors: number;
  /** Parameters stored in the files (a tied weight that is not stored counts once, as `num_parameters()`). */
  readonly parameters: number;
  readonly bytes: number;
  readonly byRole: Readonly<Record<ModelRole, GroupStats>>;
  /** By the module's last name component (`query`, `LayerNorm`, `c_attn`…). */
  readonly byModule: Readonly<Record<string, GroupStats>>;
  readonly dtypes: Readonly<Record<string, DtypeStats>>;
  /** Numbered module lists and their lengths, e.g. `{ "bert.encoder.layer": 12 }`. */
  readonly blocks: Readonly<Record<string, number>>;
  /** Parameters shared with another one and not stored themselves (`lm_head.weight` → the embeddings). */
  readonly tied: readonly { readonly name: string; readonly source: string }[];
  readonly tensorList?: readonly TensorEntry[];
}

const HEAD_MODULES = new Set(["lm_head", "classifier", "score", "pooler", "qa_outputs", "cls", "head", "embed_out"]);
const ATTENTION_MODULES = new Set(["attention", "attn", "self_attn", "self_attention", "crossattention", "cross_attn", "encdecattention"]);
const MLP_MODULES = new Set(["mlp", "intermediate", "output", "ffn", "feed_forward", "feedforward", "fc1", "fc2", "experts", "block_sparse_moe"]);

/**
 * The role of a module, by ordered rules on its path components: a norm anywhere (`LayerNorm`,
 * `ln_1`, `input_layernorm`, `norm`) → norm; a head module (`lm_head`, `classifier`, `pooler`…)
 * → head; an embedding (`*embed*`, `wte`, `wpe`) → embeddings; inside an attention block →
 * attention; inside an MLP block (`mlp`, `intermediate`, BERT's post-MLP `output`) → mlp.
 */
export function moduleRole(path: string): ModelRole {
  const parts = path.split(".");
  if (parts.some((p) => /norm/i.test(p) || /^ln(_|$)/i.test(p))) return "norm";
  if (parts.some((p) => HEAD_MODULES.has(p))) return "head";
  if (parts.some((p) => /embed/i.test(p) || p === "wte" || p === "wpe")) return "embeddings";
  if (parts.some((p) => ATTENTION_MODULES.has(p.toLowerCase()))) return "attention";
  if (parts.some((p) => MLP_MODULES.has(p.toLowerCase()))) return "mlp";
  return "other";
}

const INDEX_NAME = "model.safetensors.index.json";
const SINGLE_NAME = "model.safetensors";

/** The safetensors files of a model folder (single or sharded). */
export function modelWeightFiles(dir: string): { files: string[]; index: string | null; weightMap: Map<string, string> | null } {
  const single = join(dir, SINGLE_NAME);
  if (existsSync(single)) return { files: [single], index: null, weightMap: null };
  const indexPath = join(dir, INDEX_NAME);
  if (existsSync(indexPath)) {
    const index = readJsonObject(indexPath);
    const wm = index["weight_map"];
    if (typeof wm !== "object" || wm === null || Array.isArray(wm)) {
      throw new ConfigError(indexPath, "weight_map", "missing or not an object; write the index again with save_pretrained");
    }
    const weightMap = new Map<string, string>();
    for (const [k, v] of Object.entries(wm as Record<string, unknown>)) {
      if (typeof v !== "string" || v.length === 0 || v.includes("/") || v.includes("\\") || v.includes("..")) {
        throw new ConfigError(indexPath, `weight_map.${k}`, `invalid shard file name ${JSON.stringify(v)}; use a file name in the same folder`);
      }
      weightMap.set(k, v);
    }
    const shards = [...new Set(weightMap.values())].sort();
    for (const s of shards) {
      if (!existsSync(join(dir, s))) throw new MissingFileError(join(dir, s), `listed in ${INDEX_NAME}; copy the missing shard`);
    }
    return { files: shards.map((s) => join(dir, s)), index: indexPath, weightMap };
  }
  const pickles = readdirSync(dir).filter((f) => f.endsWith(".bin") || f.endsWith(".pt") || f.endsWith(".pth"));
  if (pickles.length > 0) {
    throw new UnsupportedOptionError(join(dir, pickles[0]!), "weights format", "pickle", "only safetensors weights are read; save the model with save_pretrained(safe_serialization=True)");
  }
  throw new MissingFileError(single, `the folder has neither ${SINGLE_NAME} nor ${INDEX_NAME}`);
}

/** Main hyper-parameters under the config.json names different architectures use for them. */
const RAW_ALIASES: readonly (readonly [string, readonly string[]])[] = [
  ["hiddenSize", ["hidden_size", "n_embd", "d_model", "dim"]],
  ["numLayers", ["num_hidden_layers", "n_layer", "num_layers", "n_layers"]],
  ["numHeads", ["num_attention_heads", "n_head", "num_heads", "n_heads"]],
  ["numKeyValueHeads", ["num_key_value_heads"]],
  ["headDim", ["head_dim"]],
  ["intermediateSize", ["intermediate_size", "n_inner", "ffn_dim", "d_ff"]],
  ["vocabSize", ["vocab_size"]],
  ["maxPositionEmbeddings", ["max_position_embeddings", "n_positions", "n_ctx"]],
  ["activation", ["hidden_act", "activation_function"]],
  ["tieWordEmbeddings", ["tie_word_embeddings"]],
  ["dtype", ["dtype", "torch_dtype"]],
  ["slidingWindow", ["sliding_window"]],
];

function configValues(raw: Record<string, unknown>, parsed: HfModelConfig | null): Record<string, ConfigValue> {
  const fromParsed: Record<string, ConfigValue> = parsed
    ? {
        hiddenSize: parsed.hiddenSize,
        numLayers: parsed.numLayers,
        numHeads: parsed.numHeads,
        ...("numKeyValueHeads" in parsed ? { numKeyValueHeads: parsed.numKeyValueHeads } : {}),
        headDim: parsed.headDim,
        intermediateSize: parsed.intermediateSize,
        vocabSize: parsed.vocabSize,
        maxPositionEmbeddings: parsed.maxPositionEmbeddings,
        activation: parsed.activation,
        tieWordEmbeddings: parsed.tieWordEmbeddings,
        dtype: parsed.dtype,
        // qwen2: the window of the layers its config marks sliding (null when off)
        ...("slidingWindow" in parsed ? { slidingWindow: parsed.slidingWindow } : {}),
      }
    : {};
  const out: Record<string, ConfigValue> = {};
  for (const [key, names] of RAW_ALIASES) {
    if (key in fromParsed) {
      out[key] = fromParsed[key]!;
      continue;
    }
    for (const n of names) {
      const v = raw[n];
      if (typeof v === "number" || typeof v === "string" || typeof v === "boolean") {
        out[key] = v;
        break;
      }
    }
  }
  const labels = raw["id2label"];
  if (typeof labels === "object" && labels !== null) out.labels = Object.values(labels as Record<string, unknown>).map(String);
  else if (typeof raw["num_labels"] === "number") out.numLabels = raw["num_labels"];
  return out;
}

/** Reads a model folder's config and safetensors headers; no tensor data is read. */
export function inspectModelDir(dir: string, opts: { tensors?: boolean } = {}): ModelReport {
  const configFile = join(dir, "config.json");
  const raw = readJsonObject(configFile, "a model folder needs the config.json written by transformers' save_pretrained");
  const parsedResult = safeParseHfConfig(raw, configFile);
  const parsed = parsedResult.success ? parsedResult.config : null;
  let problems = parsedResult.success ? [] : parsedResult.errors.map((e) => e.message);
  // image models have their own config (simple_cnn): supported when it parses
  let imageModel = false;
  if (raw["model_type"] === SIMPLE_CNN_MODEL_TYPE) {
    try {
      parseSimpleCnnConfig(raw, configFile);
      imageModel = true;
      problems = [];
    } catch (e) {
      problems = [(e as Error).message];
    }
  }

  const { files, index, weightMap } = modelWeightFiles(dir);
  const opened: SafetensorsFile[] = [];
  let entries: TensorEntry[];
  try {
    for (const f of files) opened.push(SafetensorsFile.open(f));
    entries = tensorEntries(opened, index ?? files[0]!);
  } finally {
    for (const f of opened) f.close();
  }
  if (weightMap && index) {
    const where = new Map(entries.map((e) => [e.name, e.file]));
    for (const [k, shard] of weightMap) {
      if (where.get(k) !== shard) {
        throw new ConfigError(index, `weight_map.${k}`, where.has(k) ? `tensor is in ${where.get(k)}, not ${shard}` : `tensor not found in ${shard}; the index and shards disagree`);
      }
    }
  }

  const stored = new Set(entries.map((e) => e.name));
  const tied: { name: string; source: string }[] = [];
  if (parsed) {
    const def: ModelDef = MODELS[parsed.modelType];
    for (const [name, source] of def.tiedWeights(parsed)) if (!stored.has(name) && stored.has(source)) tied.push({ name, source });
  }
  const byRoleRaw = groupStats(entries, (e) => moduleRole(modulePath(e.name)));
  const byRole = Object.fromEntries(MODEL_ROLES.map((r) => [r, byRoleRaw[r] ?? { tensors: 0, params: 0 }])) as Record<ModelRole, GroupStats>;
  const modelType = typeof raw["model_type"] === "string" ? raw["model_type"] : null;
  const arch = raw["architectures"];
  return {
    kind: "model",
    dir,
    modelType,
    architectures: Array.isArray(arch) ? arch.map(String) : [],
    config: configValues(raw, parsed),
    support: { supported: parsed !== null || imageModel, problems },
    files: fileStats(entries, files.map((f) => basename(f))),
    tensors: entries.length,
    parameters: sumParams(entries),
    bytes: sumBytes(entries),
    byRole,
    byModule: groupStats(entries, (e) => lastComponent(modulePath(e.name))),
    dtypes: dtypeStats(entries),
    blocks: repeatedBlocks(entries.map((e) => e.name)),
    tied,
    ...(opts.tensors ? { tensorList: entries } : {}),
  };
}

/** A bare `.safetensors` file: tensors, parameters and dtypes (no config). */
export interface SafetensorsReport {
  readonly kind: "safetensors";
  readonly file: string;
  readonly metadata: Readonly<Record<string, string>>;
  readonly tensors: number;
  readonly parameters: number;
  readonly bytes: number;
  readonly byModule: Readonly<Record<string, GroupStats>>;
  readonly dtypes: Readonly<Record<string, DtypeStats>>;
  readonly tensorList?: readonly TensorEntry[];
}

export function inspectSafetensorsFile(file: string, opts: { tensors?: boolean } = {}): SafetensorsReport {
  if (!existsSync(file) || !statSync(file).isFile()) throw new MissingFileError(file, "no safetensors file at this path");
  const f = SafetensorsFile.open(file);
  try {
    const entries = tensorEntries([f], file);
    return {
      kind: "safetensors",
      file,
      metadata: { ...f.metadata },
      tensors: entries.length,
      parameters: sumParams(entries),
      bytes: sumBytes(entries),
      byModule: groupStats(entries, (e) => lastComponent(modulePath(e.name))),
      dtypes: dtypeStats(entries),
      ...(opts.tensors ? { tensorList: entries } : {}),
    };
  } finally {
    f.close();
  }
}
