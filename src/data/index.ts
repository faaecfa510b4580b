export type { Dataset, DatasetMeta, Example, LoadDatasetOptions } from "./types.js";
export {
  BUILTIN_DATASETS,
  UCI_LABEL_NAMES,
  UCI_SOURCES,
  isBuiltinDataset,
  loadBuiltinDataset,
  builtinDatasetFrom,
  uciExamples,
  uciSourcePath,
} from "./builtin.js";
export type { BuiltinDatasetDef, BuiltinDatasetName, UciSource } from "./builtin.js";
export { MAX_LINE_BYTES, loadCsvDataset, loadJsonlDataset, parseCsvDataset, parseJsonlDataset, readLines } from "./files.js";
export { parseCsv } from "./csv.js";
export type { CsvRecord } from "./csv.js";
export { MAX_LABELS, buildLabelVocabulary } from "./labels.js";
export type { LabelVocabulary, RawLabel } from "./labels.js";
export { DATASET_FILE_FORMATS, listDatasets, loadDataset } from "./registry.js";
export { SPLIT_NAMES, hashSplit, splitDataset } from "./split.js";
export type { DatasetSplit, SplitInfo, SplitName, SplitOptions } from "./split.js";
export { parseIdx, idxExamples } from "./idx.js";
export type { IdxArray } from "./idx.js";
