/**
 * Python PEFT's `LoraModel.add_weighted_adapter` (peft 0.21) on host arrays: combine several LoRA
 * adapters into a new one, module by module, exactly as PEFT computes it.
 *
 * For adapter i with weight w_i and scaling s_i (lora_alpha/r, or alpha/√r with rsLoRA):
 * - `linear`, `ties`, `dare_linear`, `dare_ties`, `magnitude_prune`: PEFT combines the A's and
 *   the B's *separately* with the matching merge_utils function, A's weighted by
 *   sign(w_i·s_i)·√|w_i·s_i| and B's by √|w_i·s_i|. All adapters must share one rank.
 * - `cat`: A = [w_1·s_1·A_1; w_2·s_2·A_2; …] (rows), B = [B_1 | B_2 | …] (columns); rank Σ r_i.
 * - `svd`, `ties_svd`, `dare_linear_svd`, `dare_ties_svd`, `magnitude_prune_svd`: the function is
 *   applied to the full ΔW_i = s_i·B_i·A_i with weights w_i (peft 0.21 applies the scaling once
 *   here; releases before it multiplied the weights by s_i as well), then ΔW ≈ U·S·Vh is cut to
 *   `svdRank` (default: the largest source rank): B = U·S, A = Vh, optionally clamped to the
 *   `svdClamp` quantile of their entries.
 * The new adapter gets r = lora_alpha = new rank (so its scaling is 1, or √r with rsLoRA — PEFT
 * keeps the first adapter's `use_rslora`), empty rank/alpha patterns, and the union of the
 * target modules. With a single source adapter PEFT switches to `linear`.
 *
 * Factors are flat row-major arrays in PEFT's storage layout: A = lora_A.weight [r, in],
 * B = lora_B.weight [out, r] (also for GPT-2 Conv1D with fan_in_fan_out, which PEFT transposes
 * only at use; for embeddings `in` = num_embeddings; for Conv2d `in` = in_channels·kh·kw). ΔW is
 * always s·B·A in that layout. Where PEFT would write a factor smaller than the new rank (a
 * module whose rank_pattern rank is below the adapter's largest rank, or an SVD rank beyond
 * min(out, in)), the factors are zero-padded to the new rank, which leaves ΔW unchanged.
 */
import { ConfigError, ShapeMismatchError, UnknownMergeMethodError } from "../errors.js";
import { COMBINATION_TYPES, type CombinationType } from "./combination-types.js";
import { checkAddWeightedArgs } from "./args.js";
import {
  type MajoritySignMethod,
  peftDareLinear,
  peftDareTies,
  peftMagnitudePrune,
  peftTaskArithmetic,
  peftTies,
} from "./peft-merge-utils.js";
import type { UniformRng } from "./sparsify.js";
import { type TruncatedSvd, lowRankSvd, matmul, truncatedSvd } from "./svd.js";

/** One LoRA module's factors, as PEFT stores them. */
export interface LoraFactors {
  /** lora_A.weight, [r, inFeatures] row-major. */
  readonly A: Float32Array;
  /** lora_B.weight, [outFeatures, r] row-major. */
  readonly B: Float32Array;
  readonly r: number;
  readonly inFeatures: number;
  readonly outFeatures: number;
  /** The module's scaling (lora_alpha / r, alpha / √r with rsLoRA, patterns applied). */
  readonly scaling: number;
}

/** One adapter to combine: its modules and the config values PEFT looks at. */
export interface WeightedAdapterSource {
  /** For error messages. */
  readonly name?: string;
  /** Module name → factors. */
  readonly modules: ReadonlyMap<string, LoraFactors>;
  /** The config's `r`; with `rankPattern`, PEFT sizes the new adapter by max(r, …rank_pattern). Default: the largest module rank. */
  readonly r?: number;
  readonly rankPattern?: Readonly<Record<string, number>>;
  /** The config's `target_modules` (a list, or a regex string). */
  readonly targetModules?: readonly string[] | string | null;
}

export { COMBINATION_TYPES, type CombinationType };

export interface WeightedAdapterOptions {
  /** Default `svd`, as in PEFT. */
  readonly combinationType?: CombinationType;
  /** Rank of the SVD-based results (default: the largest source rank). */
  readonly svdRank?: number | null;
  /** Quantile in [0, 1] at which SVD factors are clamped (PEFT `svd_clamp`); null: no clamping. */
  readonly svdClamp?: number | null;
  /** Fraction kept by ties / dare / magnitude_prune variants (required by them). */
  readonly density?: number | null;
  readonly majoritySignMethod?: MajoritySignMethod;
  /** Seeded generator for the dare variants. */
  readonly rng?: UniformRng;
  /** The first adapter's `use_rslora` (PEFT copies it to the new adapter). */
  readonly useRslora?: boolean;
  /** Called after each module is combined (`index` counts from 1 to `total`): progress of long svd combinations. */
  readonly onModule?: (module: string, index: number, total: number) => void;
}

/** The new adapter's config values as PEFT sets them. */
export interface WeightedAdapterConfig {
  readonly r: number;
  readonly loraAlpha: number;
  readonly useRslora: boolean;
  readonly targetModules: string[] | string | null;
  readonly rankPattern: Record<string, number>;
  readonly alphaPattern: Record<string, number>;
}

export interface WeightedAdapterResult {
  /** The type actually used (`linear` when only one adapter was given). */
  readonly combinationType: CombinationType;
  readonly config: WeightedAdapterConfig;
  readonly modules: Map<string, LoraFactors>;
}

const WHERE = "add_weighted_adapter";
const LINEAR_FAMILY = new Set<CombinationType>(["linear", "ties", "dare_linear", "dare_ties", "magnitude_prune"]);

function adapterLabel(src: WeightedAdapterSource, i: number): string {
  return src.name ?? `adapters[${i}]`;
}

function configRank(src: WeightedAdapterSource): number {
  if (src.r !== undefined) return Math.max(src.r, ...Object.values(src.rankPattern ?? {}));
  let r = 0;
  for (const m of src.modules.values()) r = Math.max(r, m.r);
  return r;
}

function newTargetModules(adapters: readonly WeightedAdapterSource[]): string[] | string | null {
  const targets = adapters.map((a) => a.targetModules ?? null);
  if (targets.every((t) => t === null)) return null;
  const kinds = new Set(targets.map((t) => (t === null ? "none" : typeof t === "string" ? "string" : "list")));
  if (kinds.size > 1) {
    throw new ConfigError(WHERE, "target_modules", "all adapters must give target_modules the same way (all lists or all regex strings)");
  }
  if (typeof targets[0] === "string") return targets.map((t) => `(${String(t)})`).join("|");
  const union = new Set<string>();
  for (const t of targets) for (const name of t as readonly string[]) union.add(name);
  return [...union].sort();
}

function checkFactors(key: string, src: string, f: LoraFactors): void {
  if (f.A.length !== f.r * f.inFeatures) throw new ShapeMismatchError(`${src}: ${key}.lora_A`, [f.r, f.inFeatures], [f.A.length], "flat length");
  if (f.B.length !== f.outFeatures * f.r) throw new ShapeMismatchError(`${src}: ${key}.lora_B`, [f.outFeatures, f.r], [f.B.length], "flat length");
  if (!Number.isFinite(f.scaling)) throw new ConfigError(src, `${key}.scaling`, `must be a finite number, got ${f.scaling}`);
}

/** Copies [rows, r] (B-like) into [rows, newRank], zero-padding the extra columns. */
function padColumns(b: ArrayLike<number>, rows: number, r: number, newRank: number): Float32Array {
  const out = new Float32Array(rows * newRank);
  for (let i = 0; i < rows; i++) for (let c = 0; c < r; c++) out[i * newRank + c] = b[i * r + c]!;
  return out;
}

/** Copies [r, cols] (A-like) into [newRank, cols], zero-padding the extra rows. */
function padRows(a: ArrayLike<number>, r: number, cols: number, newRank: number): Float32Array {
  const out = new Float32Array(newRank * cols);
  for (let i = 0; i < Math.min(r, newRank) * cols; i++) out[i] = a[i]!;
  return out;
}

/** torch.quantile(x, q) with linear interpolation. */
function quantile(x: Float64Array, q: number): number {
  const s = Float64Array.from(x).sort();
  const pos = q * (s.length - 1);
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return s[lo]! + (s[hi]! - s[lo]!) * (pos - lo);
}

interface Present {
  readonly f: LoraFactors;
  readonly w: number;
}

function combineLinearFamily(type: CombinationType, key: string, present: readonly Present[], o: WeightedAdapterOptions): [Float64Array, Float64Array, number] {
  const r = present[0]!.f.r;
  for (const p of present) {
    if (p.f.r !== r) throw new ConfigError(WHERE, key, `combination '${type}' needs all adapters to have the same rank at each module, got ${r} and ${p.f.r}`);
  }
  const wA: number[] = [];
  const wB: number[] = [];
  for (const { f, w } of present) {
    const ws = w * f.scaling;
    const root = Math.sqrt(Math.abs(ws));
    wA.push(ws >= 0 ? root : -root);
    wB.push(root);
  }
  const As = present.map((p) => Float64Array.from(p.f.A));
  const Bs = present.map((p) => Float64Array.from(p.f.B));
  const combine = (tasks: Float64Array[], weights: number[]): Float64Array => applyFn(type, tasks, weights, o);
  return [combine(As, wA), combine(Bs, wB), r];
}

/** The merge_utils function behind a combination type (without its `_svd` suffix). */
function applyFn(type: CombinationType, tasks: Float64Array[], weights: number[], o: WeightedAdapterOptions): Float64Array {
  const base = type.endsWith("_svd") ? type.slice(0, -4) : type;
  if (base === "linear" || base === "svd") return peftTaskArithmetic(tasks, weights);
  const density = o.density;
  if (density === undefined || density === null) throw new ConfigError(WHERE, "density", `combination '${type}' needs a density in [0, 1]`);
  const sign = o.majoritySignMethod ?? "total";
  const rng = (): UniformRng => {
    if (!o.rng) throw new ConfigError(WHERE, "rng", `combination '${type}' drops entries at random: pass a seeded generator`);
    return o.rng;
  };
  switch (base) {
    case "ties":
      return peftTies(tasks, weights, density, sign);
    case "magnitude_prune":
      return peftMagnitudePrune(tasks, weights, density);
    case "dare_linear":
      return peftDareLinear(tasks, weights, density, rng());
    case "dare_ties":
      return peftDareTies(tasks, weights, density, rng(), sign);
    default:
      throw new UnknownMergeMethodError(type, COMBINATION_TYPES, "combination type");
  }
}

function combineSvd(type: CombinationType, present: readonly Present[], newRank: number, o: WeightedAdapterOptions): TruncatedSvd {
  const { outFeatures: rows, inFeatures: cols } = present[0]!.f;
  if (type === "svd") {
    // Σ_i w_i·s_i·B_i·A_i = [c_1·B_1 | c_2·B_2 | …]·[A_1; A_2; …] with c_i = w_i·s_i: decompose the thin product.
    const inner = present.reduce((s, p) => s + p.f.r, 0);
    const bCat = new Float64Array(rows * inner);
    const aCat = new Float64Array(inner * cols);
    let off = 0;
    for (const { f, w } of present) {
      const c = w * f.scaling;
      for (let i = 0; i < rows; i++) for (let k = 0; k < f.r; k++) bCat[i * inner + off + k] = c * f.B[i * f.r + k]!;
      aCat.set(Float64Array.from(f.A), off * cols);
      off += f.r;
    }
    return lowRankSvd(bCat, aCat, rows, inner, cols, newRank);
  }
  const deltas = present.map(({ f }) => {
    const d = matmul(f.B, f.A, rows, f.r, cols);
    for (let k = 0; k < d.length; k++) d[k] = d[k]! * f.scaling;
    return d;
  });
  const merged = applyFn(type, deltas, present.map((p) => p.w), o);
  return truncatedSvd(merged, rows, cols, newRank);
}

function clampSvd(f: TruncatedSvd, q: number): void {
  const k = Math.min(f.rank, f.rows, f.cols);
  const dist = new Float64Array(f.rows * k + k * f.cols);
  let p = 0;
  for (let i = 0; i < f.rows; i++) for (let c = 0; c < k; c++) dist[p++] = f.us[i * f.rank + c]!;
  for (let i = 0; i < k * f.cols; i++) dist[p++] = f.vh[i]!;
  const hi = quantile(dist, q);
  const lo = -hi;
  for (const arr of [f.us, f.vh]) for (let i = 0; i < arr.length; i++) arr[i] = Math.min(Math.max(arr[i]!, lo), hi);
}

/**
 * Combines `adapters` with `weights` into a new LoRA adapter the way PEFT's
 * `add_weighted_adapter` does (see the module comment). Weights may be negative.
 */
export function addWeightedAdapter(
  adapters: readonly WeightedAdapterSource[],
  weights: readonly number[],
  options: WeightedAdapterOptions = {},
): WeightedAdapterResult {
  checkAddWeightedArgs(adapters, weights, options);
  if (adapters.length === 0) throw new ConfigError(WHERE, "adapters", "needs at least one adapter");
  if (weights.length !== adapters.length) throw new ConfigError(WHERE, "weights", `${weights.length} weights for ${adapters.length} adapters`);
  weights.forEach((w, i) => {
    if (!Number.isFinite(w)) throw new ConfigError(WHERE, `weights[${i}]`, `must be a finite number, got ${w}`);
  });
  const requested = options.combinationType ?? "svd";
  if (!(COMBINATION_TYPES as readonly string[]).includes(requested)) throw new UnknownMergeMethodError(requested, COMBINATION_TYPES, "combination type");
  const type: CombinationType = adapters.length === 1 ? "linear" : requested;
  if (options.svdRank !== undefined && options.svdRank !== null && !(Number.isInteger(options.svdRank) && options.svdRank >= 1)) {
    throw new ConfigError(WHERE, "svd_rank", `must be an integer >= 1, got ${options.svdRank}`);
  }
  if (options.svdClamp !== undefined && options.svdClamp !== null && !(options.svdClamp >= 0 && options.svdClamp <= 1)) {
    throw new ConfigError(WHERE, "svd_clamp", `must be a quantile in [0, 1], got ${options.svdClamp}`);
  }

  const ranks = adapters.map(configRank);
  let newRank: number;
  if (LINEAR_FAMILY.has(type)) {
    if (new Set(ranks).size !== 1) {
      throw new ConfigError(WHERE, "r", `combination '${type}' needs all adapters to have the same r, got ${ranks.join(", ")}; use 'cat' or an svd type`);
    }
    newRank = ranks[0]!;
  } else if (type === "cat") newRank = ranks.reduce((s, r) => s + r, 0);
  else newRank = options.svdRank ?? Math.max(...ranks);

  const useRslora = options.useRslora ?? false;
  const config: WeightedAdapterConfig = {
    r: newRank,
    loraAlpha: newRank,
    useRslora,
    targetModules: newTargetModules(adapters),
    rankPattern: {},
    alphaPattern: {},
  };
  const scaling = useRslora ? newRank / Math.sqrt(newRank) : 1;

  const names: string[] = [];
  const seen = new Set<string>();
  for (const a of adapters) {
    for (const k of a.modules.keys()) {
      if (seen.has(k)) continue;
      seen.add(k);
      names.push(k);
    }
  }

  const modules = new Map<string, LoraFactors>();
  for (const key of names) {
    const present: Present[] = [];
    adapters.forEach((a, i) => {
      const f = a.modules.get(key);
      if (!f) return;
      checkFactors(key, adapterLabel(a, i), f);
      const ref = present[0]?.f;
      if (ref && (ref.inFeatures !== f.inFeatures || ref.outFeatures !== f.outFeatures)) {
        throw new ShapeMismatchError(`${adapterLabel(a, i)}: ${key}`, [ref.outFeatures, ref.inFeatures], [f.outFeatures, f.inFeatures], "the adapters target layers of different sizes");
      }
      present.push({ f, w: weights[i]! });
    });
    const { inFeatures, outFeatures } = present[0]!.f;
    let A: Float32Array;
    let B: Float32Array;
    if (type === "cat") {
      A = new Float32Array(newRank * inFeatures);
      B = new Float32Array(outFeatures * newRank);
      let off = 0;
      for (const { f, w } of present) {
        const c = w * f.scaling;
        for (let k = 0; k < f.r * inFeatures; k++) A[off * inFeatures + k] = f.A[k]! * c;
        for (let i = 0; i < outFeatures; i++) for (let k = 0; k < f.r; k++) B[i * newRank + off + k] = f.B[i * f.r + k]!;
        off += f.r;
      }
    } else if (LINEAR_FAMILY.has(type)) {
      const [a, b, r] = combineLinearFamily(type, key, present, options);
      if (r > newRank) throw new ConfigError(WHERE, key, `module rank ${r} exceeds the adapters' r ${newRank}; give rankPattern for it`);
      A = padRows(a, r, inFeatures, newRank);
      B = padColumns(b, outFeatures, r, newRank);
    } else {
      // a [out, in] layer has rank at most min(in, out): a larger svd_rank cannot be factorised
      const bound = Math.min(inFeatures, outFeatures);
      if (options.svdRank !== undefined && options.svdRank !== null && options.svdRank > bound) {
        throw new ConfigError(
          WHERE,
          "svd_rank",
          `${options.svdRank} is above the rank of module '${key}' (a [${outFeatures}, ${inFeatures}] layer has rank at most ${bound}); use svd_rank <= ${bound}`,
        );
      }
      const f = combineSvd(type, present, newRank, options);
      if (options.svdClamp !== undefined && options.svdClamp !== null) clampSvd(f, options.svdClamp);
      A = Float32Array.from(f.vh);
      B = Float32Array.from(f.us);
    }
    modules.set(key, { A, B, r: newRank, inFeatures, outFeatures, scaling });
    options.onModule?.(key, modules.size, names.length);
  }
  return { combinationType: type, config, modules };
}
