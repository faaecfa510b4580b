/**
 * A search space (AutoPEFT's configuration space, for the methods peft-ts trains), read from YAML
 * or JSON, and its encoding as the unit cube the optimiser works in: one coordinate for the
 * method, one per layer (on/off), one per module group (LoRA rank, 0 = off; on/off for (IA)³), one
 * for prompt tuning's virtual tokens, one for the learning rate (log scale). A point of the cube
 * decodes to a {@link TrialConfig}, which turns into `peft train` options.
 */
import { readFileSync } from "node:fs";
import { parse as parseYaml } from "yaml";
import { z } from "zod";
import { ConfigError } from "../errors.js";
import { trainMethods } from "../tuners/registry.js";

/** Objectives the search can optimise (accuracy is maximised, the others minimised). */
export const SEARCH_OBJECTIVES = ["accuracy", "loss", "trainable_params", "step_time"] as const;
export type SearchObjective = (typeof SEARCH_OBJECTIVES)[number];

/** Methods a space may list (their per-method coordinates are described in docs/search.md). */
export const SEARCH_METHODS = ["lora", "ia3", "prompt-tuning"] as const;
export type SearchMethod = (typeof SEARCH_METHODS)[number];

const positiveInt = z.number().int().positive();
const group = z
  .object({
    targets: z.array(z.string().min(1)).min(1),
    ranks: z.array(z.number().int().min(0)).min(1),
    /** (IA)³: the group's modules are feed-forward (scaled on their input). */
    feedforward: z.boolean().optional(),
  })
  .strict();
const schema = z
  .object({
    objectives: z.array(z.enum(SEARCH_OBJECTIVES)).min(2).max(3).optional(),
    methods: z.array(z.enum(SEARCH_METHODS)).min(1),
    layers: z.array(z.number().int().min(0)).min(1).optional(),
    /** The name part before a layer's number (`layer` for BERT and USE-lite, `h` for GPT-2, `layers` for Llama). */
    layers_pattern: z.string().regex(/^[A-Za-z0-9_]+$/).optional(),
    /** The listed layers are the only ones ever adapted (all of them on is not "every layer"). */
    layers_only: z.boolean().optional(),
    groups: z.record(z.string().regex(/^[A-Za-z0-9_.-]+$/), group).optional(),
    num_virtual_tokens: z.array(positiveInt).min(1).optional(),
    lr: z.union([z.number().positive(), z.tuple([z.number().positive(), z.number().positive()])]).optional(),
    fidelity: z.object({ epochs: z.number().positive().optional(), max_examples: positiveInt.optional() }).strict().optional(),
    train: z.object({ batch_size: positiveInt.optional(), seed: z.number().int().min(0).optional(), max_length: positiveInt.optional() }).strict().optional(),
  })
  .strict();

export interface SearchGroup {
  readonly name: string;
  readonly targets: readonly string[];
  readonly ranks: readonly number[];
  readonly feedforward: boolean;
}

export interface SearchSpace {
  readonly objectives: readonly SearchObjective[];
  readonly methods: readonly SearchMethod[];
  /** Layers switched on/off per trial; null: every layer always. */
  readonly layers: readonly number[] | null;
  readonly layersPattern: string;
  /** `layers` are the only layers ever adapted (a pruned list, e.g. by a layer-importance prior). */
  readonly layersOnly: boolean;
  readonly groups: readonly SearchGroup[];
  readonly numVirtualTokens: readonly number[];
  /** [low, high] (log-uniform) or a fixed value as [v, v]. */
  readonly lr: readonly [number, number];
  readonly fidelity: { readonly epochs: number; readonly maxExamples: number | null };
  readonly train: { readonly batchSize: number; readonly seed: number; readonly maxLength: number | null };
}

/** One decoded point: what a trial trains. */
export interface TrialConfig {
  readonly method: SearchMethod;
  /** Layers adapted (null: all). */
  readonly layers: readonly number[] | null;
  /** LoRA rank per group (0: off); for (IA)³ > 0 means on. */
  readonly ranks: Readonly<Record<string, number>>;
  readonly numVirtualTokens: number;
  readonly lr: number;
}

/** Validates a space object (from YAML/JSON); `file` names it in errors. */
export function parseSearchSpace(raw: unknown, file = "search space"): SearchSpace {
  const r = schema.safeParse(raw);
  if (!r.success) {
    const issue = r.error.issues[0]!;
    throw new ConfigError(file, issue.path.join("."), issue.message);
  }
  const s = r.data;
  for (const m of s.methods) if (!trainMethods().includes(m)) throw new ConfigError(file, "methods", `method '${m}' is not in the tuner registry (${trainMethods().join(", ")})`);
  const objectives = s.objectives ?? ["accuracy", "trainable_params"];
  if (new Set(objectives).size !== objectives.length) throw new ConfigError(file, "objectives", "each objective once");
  if (objectives.includes("accuracy") && objectives.includes("loss")) throw new ConfigError(file, "objectives", "accuracy or loss, not both");
  const groups = Object.entries(s.groups ?? {}).map(([name, g]) => ({ name, targets: g.targets, ranks: [...g.ranks].sort((a, b) => a - b), feedforward: g.feedforward ?? false }));
  if ((s.methods.includes("lora") || s.methods.includes("ia3")) && groups.length === 0) throw new ConfigError(file, "groups", "lora and ia3 need at least one module group (targets and ranks)");
  for (const g of groups) if (g.ranks.every((x) => x === 0)) throw new ConfigError(file, `groups.${g.name}.ranks`, "needs a rank above 0");
  const lr: [number, number] = s.lr === undefined ? [1e-3, 1e-3] : typeof s.lr === "number" ? [s.lr, s.lr] : [Math.min(...s.lr), Math.max(...s.lr)];
  return {
    objectives,
    methods: s.methods,
    layers: s.layers ? [...new Set(s.layers)].sort((a, b) => a - b) : null,
    layersPattern: s.layers_pattern ?? "layer",
    layersOnly: s.layers_only ?? false,
    groups,
    numVirtualTokens: s.num_virtual_tokens ?? [20],
    lr,
    fidelity: { epochs: s.fidelity?.epochs ?? 1, maxExamples: s.fidelity?.max_examples ?? null },
    train: { batchSize: s.train?.batch_size ?? 16, seed: s.train?.seed ?? 0, maxLength: s.train?.max_length ?? null },
  };
}

/** Reads a space from a `.yaml`/`.yml`/`.json` file. */
export function readSearchSpace(file: string): SearchSpace {
  const text = readFileSync(file, "utf8");
  let raw: unknown;
  try {
    raw = parseYaml(text); // YAML is a superset of JSON
  } catch (e) {
    throw new ConfigError(file, "", `not valid YAML/JSON: ${(e as Error).message}`);
  }
  return parseSearchSpace(raw, file);
}

type Dim = { readonly kind: "method" } | { readonly kind: "layer"; readonly layer: number } | { readonly kind: "group"; readonly group: SearchGroup } | { readonly kind: "tokens" } | { readonly kind: "lr" };

/** The coordinates of the space's cube, in order. */
export function spaceDims(s: SearchSpace): Dim[] {
  const dims: Dim[] = [];
  if (s.methods.length > 1) dims.push({ kind: "method" });
  const adaptsModules = s.methods.some((m) => m !== "prompt-tuning");
  if (adaptsModules && s.layers) for (const layer of s.layers) dims.push({ kind: "layer", layer });
  if (adaptsModules) for (const group of s.groups) if (group.ranks.length > 1) dims.push({ kind: "group", group });
  if (s.methods.includes("prompt-tuning") && s.numVirtualTokens.length > 1) dims.push({ kind: "tokens" });
  if (s.lr[0] < s.lr[1]) dims.push({ kind: "lr" });
  return dims;
}

const choice = <T>(u: number, xs: readonly T[]): T => xs[Math.min(xs.length - 1, Math.max(0, Math.floor(u * xs.length)))]!;

/**
 * The configuration at point `x` of the cube. At least one layer and one group stay on: when a
 * point switches all off, the layer (group) with the largest coordinate is kept.
 */
export function decodePoint(s: SearchSpace, x: readonly number[]): TrialConfig {
  const dims = spaceDims(s);
  if (x.length !== dims.length) throw new ConfigError("search", "point", `has ${x.length} coordinates, the space ${dims.length}`);
  const at = (pred: (d: Dim) => boolean) => dims.findIndex(pred);
  const mi = at((d) => d.kind === "method");
  const method = mi >= 0 ? choice(x[mi]!, s.methods) : s.methods[0]!;
  let layers: number[] | null = null;
  if (s.layers) {
    const idx = dims.map((d, i) => (d.kind === "layer" ? i : -1)).filter((i) => i >= 0);
    if (idx.length > 0) {
      layers = idx.filter((i) => x[i]! >= 0.5).map((i) => (dims[i] as { layer: number }).layer);
      if (layers.length === 0) {
        const best = idx.reduce((a, b) => (x[b]! > x[a]! ? b : a));
        layers = [(dims[best] as { layer: number }).layer];
      }
      if (layers.length === s.layers.length && !s.layersOnly) layers = null;
    }
  }
  const ranks: Record<string, number> = {};
  for (const g of s.groups) {
    const i = at((d) => d.kind === "group" && d.group === g);
    ranks[g.name] = i >= 0 ? choice(x[i]!, g.ranks) : g.ranks[0]!;
  }
  if (s.groups.length > 0 && Object.values(ranks).every((r) => r === 0)) {
    const gi = s.groups.map((g) => at((d) => d.kind === "group" && d.group === g));
    let keep = 0;
    for (let k = 1; k < s.groups.length; k++) if ((x[gi[k]!] ?? 0) > (x[gi[keep]!] ?? 0)) keep = k;
    const g = s.groups[keep]!;
    ranks[g.name] = g.ranks.find((r) => r > 0)!;
  }
  const ti = at((d) => d.kind === "tokens");
  const li = at((d) => d.kind === "lr");
  return {
    method,
    layers,
    ranks,
    numVirtualTokens: ti >= 0 ? choice(x[ti]!, s.numVirtualTokens) : s.numVirtualTokens[0]!,
    lr: li >= 0 ? s.lr[0] * (s.lr[1] / s.lr[0]) ** x[li]! : s.lr[0],
  };
}

/** What a trial config trains: `peft train`'s method, rank, targets and adapter_config.json fields. */
export interface TrialTraining {
  readonly method: string;
  readonly r: number;
  readonly alpha: number;
  /** Module names, or a regex (PEFT's target_modules string) when (IA)³ is limited to some layers. */
  readonly target: readonly string[] | string | null;
  readonly feedforward: readonly string[] | string | null;
  readonly numVirtualTokens: number;
  readonly adapterConfig: Record<string, unknown>;
}

export function trialTraining(s: SearchSpace, c: TrialConfig): TrialTraining {
  const on = s.groups.filter((g) => (c.ranks[g.name] ?? 0) > 0);
  const layerFields = c.layers ? { layers_to_transform: [...c.layers] } : {};
  if (c.method === "prompt-tuning") return { method: c.method, r: 8, alpha: 16, target: null, feedforward: null, numVirtualTokens: c.numVirtualTokens, adapterConfig: {} };
  const target = on.flatMap((g) => g.targets);
  if (c.method === "ia3") {
    const ff = on.filter((g) => g.feedforward).flatMap((g) => g.targets);
    if (!c.layers) return { method: c.method, r: 8, alpha: 16, target, feedforward: ff, numVirtualTokens: c.numVirtualTokens, adapterConfig: {} };
    // PEFT's IA3Config has no layers_to_transform: the layers go into target_modules as a regex
    const inLayers = (names: readonly string[]) => `.*\\.${s.layersPattern}\\.(${c.layers!.join("|")})\\.(.*\\.)?(${names.map(escapeRegex).join("|")})`;
    return { method: c.method, r: 8, alpha: 16, target: inLayers(target), feedforward: ff.length > 0 ? inLayers(ff) : [], numVirtualTokens: c.numVirtualTokens, adapterConfig: {} };
  }
  const r = Math.max(...on.map((g) => c.ranks[g.name]!));
  const rankPattern: Record<string, number> = {};
  const alphaPattern: Record<string, number> = {};
  for (const g of on) {
    const gr = c.ranks[g.name]!;
    if (gr === r) continue;
    for (const t of g.targets) {
      rankPattern[t] = gr;
      alphaPattern[t] = 2 * gr;
    }
  }
  const patterns = Object.keys(rankPattern).length > 0 ? { rank_pattern: rankPattern, alpha_pattern: alphaPattern } : {};
  return { method: c.method, r, alpha: 2 * r, target, feedforward: null, numVirtualTokens: c.numVirtualTokens, adapterConfig: { ...layerFields, ...patterns } };
}

const escapeRegex = (t: string) => t.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

/** A short human label of a config (for tables and the plot). */
export function describeConfig(c: TrialConfig): string {
  const layers = c.layers ? ` layers ${c.layers.join(",")}` : "";
  if (c.method === "prompt-tuning") return `prompt-tuning ${c.numVirtualTokens} tokens`;
  const groups = Object.entries(c.ranks)
    .filter(([, r]) => r > 0)
    .map(([g, r]) => (c.method === "lora" ? `${g} r${r}` : g))
    .join(" + ");
  return `${c.method} ${groups}${layers}`;
}

/** A parsed space back in its file form (to validate it again). */
export function searchSpaceToRaw(s: SearchSpace): Record<string, unknown> {
  return {
    objectives: s.objectives,
    methods: s.methods,
    ...(s.layers ? { layers: s.layers, layers_pattern: s.layersPattern, ...(s.layersOnly ? { layers_only: true } : {}) } : {}),
    ...(s.groups.length > 0 ? { groups: Object.fromEntries(s.groups.map((g) => [g.name, { targets: g.targets, ranks: g.ranks, feedforward: g.feedforward }])) } : {}),
    num_virtual_tokens: s.numVirtualTokens,
    lr: s.lr[0] === s.lr[1] ? s.lr[0] : [s.lr[0], s.lr[1]],
    fidelity: { epochs: s.fidelity.epochs, ...(s.fidelity.maxExamples !== null ? { max_examples: s.fidelity.maxExamples } : {}) },
    train: { batch_size: s.train.batchSize, seed: s.train.seed, ...(s.train.maxLength !== null ? { max_length: s.train.maxLength } : {}) },
  };
}

/**
 * A layer-importance prior (from a training run's `importance.json`): only the `keep` most
 * important layers are searched (switched on/off per trial); the others are never adapted.
 * `ranking`: layer indices, most important first. With `layers` in the space, only those compete.
 */
export function applyLayerPrior(s: SearchSpace, ranking: readonly number[], keep: number): SearchSpace {
  if (!(Number.isInteger(keep) && keep >= 1)) throw new ConfigError("search", "keep-layers", `must be a positive integer, got ${keep}`);
  const candidates = s.layers ? ranking.filter((l) => s.layers!.includes(l)) : [...ranking];
  if (candidates.length === 0) throw new ConfigError("search", "importance", `the run's importance ranks layers ${ranking.join(", ")}, none of the space's layers ${s.layers?.join(", ") ?? ""}`);
  const layers = candidates.slice(0, keep).sort((a, b) => a - b);
  return { ...s, layers, layersOnly: true };
}
