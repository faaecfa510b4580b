/** Shared dataset types: a labelled text example and a loaded dataset with its label names. */

/** One labelled example. `label` is a class id in [0, numLabels). */
export interface Example {
  readonly text: string;
  readonly label: number;
  /** Where the example came from, e.g. `"amazon"` in `uci-sentiment`. */
  readonly source?: string;
}

/** What a run stores about its dataset. `labelNames[i]` names class id i. */
export interface DatasetMeta {
  readonly name: string;
  readonly numLabels: number;
  readonly labelNames: readonly string[];
}

export interface Dataset extends DatasetMeta {
  readonly examples: readonly Example[];
}

/** Options for loading a user file. */
export interface LoadDatasetOptions {
  /**
   * Fixes the label vocabulary: a string label maps to its index here, an integer label must be
   * below `labelNames.length`, anything else is a `DatasetError`. Use it so a train file and an
   * evaluation file that lacks some class get the same ids.
   */
  readonly labelNames?: readonly string[];
  /** Longest line read from a file, in bytes (default `MAX_LINE_BYTES`, 1 MiB); a longer line is a `DatasetError` naming it. */
  readonly maxLineBytes?: number;
}
