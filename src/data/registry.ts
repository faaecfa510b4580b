/**
 * `loadDataset(nameOrPath)`: a built-in name (`uci-amazon`, `uci-imdb`, `uci-yelp`,
 * `uci-sentiment`) or a path ending in `.jsonl`/`.ndjson` (JSON lines) or `.csv`.
 * Anything else raises `UnknownDatasetError` listing the choices; no guessing.
 */
import { extname } from "../platform/fs.js";
import { ConfigError, UnknownDatasetError } from "../errors.js";
import { BUILTIN_DATASETS, isBuiltinDataset, loadBuiltinDataset } from "./builtin.js";
import { loadCsvDataset, loadJsonlDataset } from "./files.js";
import type { Dataset, LoadDatasetOptions } from "./types.js";

/** File extensions `loadDataset` reads, with their format. */
export const DATASET_FILE_FORMATS = {
  ".jsonl": "jsonl",
  ".ndjson": "jsonl",
  ".csv": "csv",
} as const satisfies Record<string, "jsonl" | "csv">;

/** Names of the built-in datasets. */
export function listDatasets(): string[] {
  return Object.keys(BUILTIN_DATASETS);
}

export function loadDataset(nameOrPath: string, options: LoadDatasetOptions = {}): Dataset {
  if (isBuiltinDataset(nameOrPath)) {
    const ds = loadBuiltinDataset(nameOrPath);
    const wanted = options.labelNames;
    if (wanted && (wanted.length !== ds.labelNames.length || wanted.some((n, i) => n !== ds.labelNames[i]))) {
      throw new ConfigError(
        nameOrPath,
        "labelNames",
        `the built-in dataset has labels [${ds.labelNames.join(", ")}]; remove labelNames or give exactly these`,
      );
    }
    return ds;
  }
  const ext = extname(nameOrPath).toLowerCase();
  const formats: Record<string, "jsonl" | "csv"> = DATASET_FILE_FORMATS;
  const format = Object.hasOwn(formats, ext) ? formats[ext] : undefined;
  if (format === "jsonl") return loadJsonlDataset(nameOrPath, options);
  if (format === "csv") return loadCsvDataset(nameOrPath, options);
  throw new UnknownDatasetError(nameOrPath, listDatasets(), Object.keys(DATASET_FILE_FORMATS));
}
