/**
 * The constants `peft intrinsic-dim --help` shows: projection kinds and run defaults. Kept free of
 * imports so the CLI can describe its options without loading the graph or the training code.
 */

/** A random projection P of the subspace θ = θ₀ + P·d (identity: P = I, the full training). */
export type ProjectionKind = "identity" | "dense" | "fastfood";
export const PROJECTION_KINDS: readonly (ProjectionKind | "auto")[] = ["auto", "dense", "fastfood", "identity"];

export const INTRINSIC_DIM_DEFAULTS = { projection: "auto", epochs: 1, batchSize: 16, lr: 0.1, fullLr: 1e-4, threshold: 0.9, seed: 0 } as const;
