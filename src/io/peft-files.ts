/**
 * PEFT adapter folders on disk (format only; the tuner math lives in src/tuners):
 * `adapter_config.json` + `adapter_model.safetensors`, as `PeftModel.save_pretrained` writes
 * them, plus adapter-name and path checks so a name can never write outside its folder.
 */
import { existsSync, mkdirSync, statSync, basename, isAbsolute, join, relative, resolve, sep } from "../platform/fs.js";
import { AdapterNameError, AdapterStateError, ConfigError, MissingFileError, PathTraversalError } from "../errors.js";
import { withFsErrors } from "./fs-error.js";
import type { Tensor } from "../tensor.js";
import { writeFilesAtomic } from "./atomic.js";
import { readJsonObject } from "./json-file.js";
import { loadSafetensors, safetensorsFileWriter, type TensorMapLike } from "./safetensors.js";
import { writerMetadata } from "./writer.js";

export const ADAPTER_CONFIG_NAME = "adapter_config.json";
export const ADAPTER_WEIGHTS_NAME = "adapter_model.safetensors";
/** PEFT's pickle format, which peft-ts does not read (it can run code). */
export const ADAPTER_PICKLE_NAME = "adapter_model.bin";
/** PEFT's name for the adapter created by `get_peft_model` / loaded without a name. */
export const DEFAULT_ADAPTER_NAME = "default";
/** Names peft-ts uses internally and therefore refuses for adapters. */
export const RESERVED_ADAPTER_NAMES: readonly string[] = ["__base__"];

const MAX_NAME_LENGTH = 255;

/**
 * Checks an adapter name: non-empty, at most 255 characters, no `.` (PyTorch's `ModuleDict`
 * refuses it, so PEFT cannot use such a name; this also rules out `..`), no `/` or `\`, no
 * control characters (NUL included), not reserved. Throws `AdapterNameError`; returns the name.
 */
export function validateAdapterName(name: string): string {
  const bad = (reason: string): never => {
    throw new AdapterNameError(String(name), reason);
  };
  if (typeof name !== "string") bad("must be a string");
  if (name.length === 0) bad("must not be empty");
  if (name.length > MAX_NAME_LENGTH) bad(`must be at most ${MAX_NAME_LENGTH} characters`);
  if (name.includes("/") || name.includes("\\")) bad("must not contain a path separator ('/' or '\\')");
  if (name.includes("..")) bad("must not contain '..'");
  if (name.includes(".")) bad("must not contain '.' (PyTorch module names cannot, so PEFT could not load it)");
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(name)) bad("must not contain control characters such as NUL");
  if (name.trim() !== name) bad("must not start or end with whitespace");
  if (RESERVED_ADAPTER_NAMES.includes(name)) bad(`'${name}' is reserved by peft-ts`);
  return name;
}

/**
 * `root/name`, refusing any `name` that would leave `root`: absolute paths, drive letters, `..`
 * segments, NUL bytes. Backslashes count as separators on every platform (a file written on
 * Linux may be unpacked on Windows). Symbolic links inside `root` are not resolved.
 */
export function safeJoin(root: string, name: string): string {
  const refuse = (): never => {
    throw new PathTraversalError(root, name);
  };
  if (typeof name !== "string" || name.length === 0 || name.includes("\0")) refuse();
  const posix = name.replace(/\\/g, "/");
  if (posix.startsWith("/") || isAbsolute(name) || /^[A-Za-z]:/.test(posix)) refuse();
  if (posix.split("/").includes("..")) refuse();
  const base = resolve(root);
  const full = resolve(base, ...posix.split("/").filter((s) => s !== "" && s !== "."));
  const rel = relative(base, full);
  if (rel.startsWith(`..${sep}`) || rel === ".." || isAbsolute(rel)) refuse();
  return full;
}

/**
 * Where PEFT's `save_pretrained(root)` puts an adapter: `root` itself for "default", otherwise
 * `root/<name>` (validated, so the name cannot escape `root`).
 */
export function adapterDirFor(root: string, adapterName: string): string {
  validateAdapterName(adapterName);
  return adapterName === DEFAULT_ADAPTER_NAME ? root : safeJoin(root, adapterName);
}

export interface AdapterFiles {
  /** `adapter_config.json` as parsed JSON (validation belongs to the tuner's config parser). */
  readonly configRaw: Record<string, unknown>;
  readonly configFile: string;
  readonly weights: Map<string, Tensor>;
  readonly weightsFile: string;
  /** The safetensors `__metadata__` of the weights (PEFT writes `{format: "pt"}`). */
  readonly weightsMetadata: Record<string, string>;
}

/**
 * Reads a PEFT adapter folder. A missing folder, config or weights file raises
 * `MissingFileError` naming it; `adapter_model.bin` alone is refused (pickle is not supported).
 */
export function readAdapterDir(dir: string): AdapterFiles {
  if (!existsSync(dir) || !statSync(dir).isDirectory()) {
    throw new MissingFileError(dir, "expected a PEFT adapter folder with adapter_config.json and adapter_model.safetensors");
  }
  const configFile = join(dir, ADAPTER_CONFIG_NAME);
  const weightsFile = join(dir, ADAPTER_WEIGHTS_NAME);
  const configRaw = readJsonObject(configFile, "a PEFT adapter folder needs adapter_config.json (written by PeftModel.save_pretrained)");
  if (!existsSync(weightsFile)) {
    const hint = existsSync(join(dir, ADAPTER_PICKLE_NAME))
      ? `found ${ADAPTER_PICKLE_NAME}, but only safetensors is supported; convert it in Python with ` +
        "safetensors.torch.save_file(torch.load('adapter_model.bin'), 'adapter_model.safetensors') " +
        "or save it again with save_pretrained(..., safe_serialization=True)"
      : "a PEFT adapter folder needs adapter_model.safetensors next to adapter_config.json";
    throw new MissingFileError(weightsFile, hint);
  }
  const { tensors, metadata } = loadSafetensors(weightsFile);
  return { configRaw, configFile, weights: tensors, weightsFile, weightsMetadata: metadata };
}

function sortKeysDeep(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(sortKeysDeep);
  if (typeof v === "object" && v !== null) {
    const entries = Object.entries(v as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return Object.fromEntries(entries.map(([k, x]) => [k, sortKeysDeep(x)]));
  }
  return v;
}

/**
 * `adapter_config.json` text as PEFT writes it: `json.dumps(config, indent=2, sort_keys=True)`
 * (characters outside printable ASCII escaped as `\uXXXX`, no trailing newline). Numbers print as JavaScript does, so a
 * Python float such as `8.0` comes out as `8`; PEFT reads both.
 */
export function formatAdapterConfig(configRaw: Readonly<Record<string, unknown>>, file = ADAPTER_CONFIG_NAME): string {
  let text: string | undefined;
  try {
    text = JSON.stringify(sortKeysDeep(configRaw), null, 2);
  } catch (e) {
    throw new ConfigError(file, "", `cannot be written as JSON: ${(e as Error).message}`, { cause: e });
  }
  if (text === undefined) throw new ConfigError(file, "", "cannot be written as JSON");
  return text.replace(/[\u007f-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
}

/**
 * Writes a PEFT adapter folder (created if missing): both files are written to temporary files
 * first and renamed into place only when both are complete, so a failure never leaves a
 * half-written adapter. Tensors are validated before anything touches the disk. The weights'
 * `__metadata__` is `metadata` plus peft-ts's writer record (`writerMetadata`).
 */
export function writeAdapterDir(
  dir: string,
  configRaw: Readonly<Record<string, unknown>>,
  weights: TensorMapLike,
  metadata: Readonly<Record<string, string>> = { format: "pt" },
): { configFile: string; weightsFile: string } {
  const configFile = join(dir, ADAPTER_CONFIG_NAME);
  const weightsFile = join(dir, ADAPTER_WEIGHTS_NAME);
  const configText = formatAdapterConfig(configRaw, configFile);
  const writeWeights = safetensorsFileWriter(weights, writerMetadata(metadata));
  withFsErrors(dir, () => mkdirSync(dir, { recursive: true }));
  // Weights first: a reader that sees the new config then also finds the new weights.
  writeFilesAtomic([
    { path: weightsFile, write: writeWeights },
    { path: configFile, data: configText },
  ]);
  return { configFile, weightsFile };
}

/**
 * The name each adapter folder is loaded under by the CLI: its folder name (`runs/sst2` → `sst2`);
 * a first folder whose name is not a valid adapter name is loaded as `default`.
 */
export function adapterNamesForDirs(dirs: readonly string[]): string[] {
  const names: string[] = [];
  dirs.forEach((dir, i) => {
    const folder = basename(resolve(dir));
    let name = folder;
    try {
      validateAdapterName(folder);
    } catch (e) {
      if (i > 0 || !(e instanceof AdapterNameError)) throw new AdapterNameError(folder, `folder ${dir} cannot name an adapter (${(e as Error).message}); rename the folder`);
      name = DEFAULT_ADAPTER_NAME;
    }
    if (i > 0 && name === DEFAULT_ADAPTER_NAME) throw new AdapterNameError(name, `folder ${dir}: 'default' names the first adapter; rename the folder`);
    const j = names.indexOf(name);
    if (j >= 0) throw new AdapterStateError(name, `two adapter folders have this name (${dirs[j]} and ${dir}); give them different folder names`);
    names.push(name);
  });
  return names;
}
