/**
 * The `combination_type`s of PEFT's `add_weighted_adapter`, in a module with no imports, so
 * `peft combine --help` lists them without loading the composition code.
 */
export const COMBINATION_TYPES = [
  "svd",
  "linear",
  "cat",
  "ties",
  "ties_svd",
  "dare_ties",
  "dare_linear",
  "dare_ties_svd",
  "dare_linear_svd",
  "magnitude_prune",
  "magnitude_prune_svd",
] as const;

export type CombinationType = (typeof COMBINATION_TYPES)[number];
