/** Loading a Hugging Face model directory: config.json + (sharded) safetensors, tied weights resolved. */
import { existsSync, readdirSync, join } from "../platform/fs.js";
import { ConfigError, MissingTensorError, UnsupportedOptionError } from "../errors.js";
import { checkConfigAgainstWeights } from "./config-check.js";
import { loadHfConfig } from "../io/hf-config.js";
import { readJsonFile } from "../io/json-file.js";
import { SafetensorsFile } from "../io/safetensors.js";
import type { DType, Tensor } from "../tensor.js";
import type { WeightSource } from "./context.js";
import type { ModelConfig, ModelDef } from "./model-def.js";
import { MODELS } from "./registry.js";
import { USE_LITE_MODEL_TYPE, parseUseLiteConfig } from "./use-lite/config.js";
import { SIMPLE_CNN_MODEL_TYPE, parseSimpleCnnConfig } from "./simple-cnn.js";

/**
 * An opened model: its config, the architecture that builds it from that config, and its weights.
 * `C` narrows the config to one architecture's (`LoadedModel<UseLiteConfig>`); a `LoadedModel` of
 * any architecture builds with `model.def.build(ctx, model.config, inputs)`, no cast.
 */
export interface LoadedModel<C extends ModelConfig = ModelConfig> {
  readonly dir: string;
  readonly config: C;
  readonly def: ModelDef<C>;
  readonly weights: WeightSource;
}

/** Lazy weights over one or more safetensors files, with tied names resolved to their source. */
export class SafetensorsWeights implements WeightSource {
  private readonly byName = new Map<string, SafetensorsFile>();
  constructor(
    readonly files: readonly SafetensorsFile[],
    private readonly tied: ReadonlyMap<string, string> = new Map(),
  ) {
    for (const f of files) for (const k of f.keys()) this.byName.set(k, f);
  }
  has(name: string): boolean {
    return this.byName.has(name) || (this.tied.has(name) && this.byName.has(this.tied.get(name)!));
  }
  get(name: string): Tensor {
    const f = this.byName.get(name);
    if (f) return f.get(name);
    const src = this.tied.get(name);
    if (src && this.byName.has(src)) return this.byName.get(src)!.get(src);
    throw new MissingTensorError(this.files.map((x) => x.path).join(", ") || "weights", name);
  }
  info(name: string): { dtype: DType; shape: readonly number[] } {
    const f = this.byName.get(name);
    if (f) return f.info(name);
    const src = this.tied.get(name);
    if (src && this.byName.has(src)) return this.byName.get(src)!.info(src);
    throw new MissingTensorError(this.files.map((x) => x.path).join(", ") || "weights", name);
  }
  keys(): string[] {
    const ks = new Set(this.byName.keys());
    for (const [k, src] of this.tied) if (this.byName.has(src)) ks.add(k);
    return [...ks];
  }
  close(): void {
    for (const f of this.files) f.close();
  }
}

function weightFiles(dir: string): string[] {
  const single = join(dir, "model.safetensors");
  if (existsSync(single)) return [single];
  const indexPath = join(dir, "model.safetensors.index.json");
  if (existsSync(indexPath)) {
    const index = readJsonFile(indexPath) as { weight_map?: Record<string, string> };
    if (!index.weight_map || typeof index.weight_map !== "object") {
      throw new ConfigError(indexPath, "weight_map", "missing or not an object");
    }
    const shards = [...new Set(Object.values(index.weight_map))];
    for (const s of shards) {
      if (typeof s !== "string" || s.includes("/") || s.includes("\\") || s.includes("..")) {
        throw new ConfigError(indexPath, "weight_map", `invalid shard file name ${JSON.stringify(s)}`);
      }
    }
    return shards.map((s) => join(dir, s));
  }
  const other = existsSync(dir) ? readdirSync(dir).filter((f) => f.endsWith(".bin") || f.endsWith(".pt")) : [];
  if (other.length > 0) {
    throw new UnsupportedOptionError(dir, "weights format", other[0], "only safetensors weights are read; convert with `save_pretrained(safe_serialization=True)`");
  }
  throw new MissingTensorError(dir, "model.safetensors", "the directory has no model.safetensors or model.safetensors.index.json");
}

/** Open a model directory (config.json + safetensors), lazily: no tensor is read until used. */
export function loadModel(dir: string): LoadedModel {
  const cfgFile = join(dir, "config.json");
  const raw = existsSync(cfgFile) ? (readJsonFile(cfgFile) as Record<string, unknown>) : null;
  const config: ModelConfig =
    raw && raw.model_type === USE_LITE_MODEL_TYPE ? parseUseLiteConfig(raw, cfgFile) : raw && raw.model_type === SIMPLE_CNN_MODEL_TYPE ? parseSimpleCnnConfig(raw, cfgFile) : loadHfConfig(dir);
  const def: ModelDef = MODELS[config.modelType];
  const tied = new Map(def.tiedWeights(config).map(([a, b]) => [a, b] as [string, string]));
  const weights = new SafetensorsWeights(weightFiles(dir).map((f) => SafetensorsFile.open(f)), tied);
  checkConfigAgainstWeights(config, def, weights, cfgFile);
  return { dir, config, def, weights };
}
