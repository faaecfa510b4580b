/**
 * An adapter pool: one graph serves a batch whose rows each use their own adapter (or none),
 * with the adapters' tensors fed as graph inputs instead of baked into the graph (the
 * mixed-adapter machinery of `mixed.ts`, made input-driven for serving, as LoRAX and vLLM's
 * multi-LoRA do). The graph depends only on the pool's *layout* (number of slots, the modules
 * adapted and the largest rank per module, which modules carry DoRA or (IA)³ vectors, the
 * number of prompt-tuning rows); putting another adapter into a slot only rewrites host arrays.
 *
 * Per row `b` using slot `s` (slot 0 = the base model: zero LoRA factors, unit vectors), a
 * pooled linear layer computes
 *   y = base(x ⊙ l_in[s]) ⊙ l_out[s] + scaling[s]·(x·A[s]ᵀ)·B[s]ᵀ                    (LoRA, rsLoRA, (IA)³)
 *   y = f[s] ⊙ (base(x) − bias + scaling[s]·(x·A[s]ᵀ)·B[s]ᵀ) + bias                  (modules with DoRA)
 * where f = m/‖W + scaling·B·A‖ (PEFT's DoRA, norm detached) is computed on the host when the
 * adapter enters the pool. The LoRA factors are stored as Aᵀ [slots, in, rank] and scaling·Bᵀ
 * [slots, rank, out]: a row's update is two batched products of its gathered slices. Prompt
 * tuning: the pool keeps every virtual token of its adapters in one table; a prompt-tuned row
 * starts with its virtual tokens (`virtual_index` ≥ 0 there).
 */
import { AdapterStateError } from "../errors.js";
import * as G from "../graph/api.js";
import type { Graph } from "../graph/graph.js";
import type { LinearHook, ModelHooks } from "../models/context.js";
import { type Tensor, toFloat32 } from "../tensor.js";
import type { AdapterInstance } from "../tuners/common/types.js";
import { type Ia3Config, isFeedforward } from "../tuners/ia3/index.js";
import { type LoraConfig, loraKeys, moduleRankAndScale, rewritesBase } from "../tuners/lora/index.js";
import { PROMPT_KEY } from "../tuners/prompt-tuning/index.js";

/** What one module of the pool can hold. */
export interface PoolModule {
  readonly inFeatures: number;
  readonly outFeatures: number;
  readonly fanInFanOut: boolean;
  /** Largest LoRA rank (0: no LoRA on this module). */
  readonly rank: number;
  readonly dora: boolean;
  /** (IA)³ vector on the input (feed-forward modules) / on the output. */
  readonly ia3In: boolean;
  readonly ia3Out: boolean;
}

/** The shape of a pool: the generation graph is built once per layout. */
export interface PoolLayout {
  /** Slots including slot 0 (the base model). */
  readonly slots: number;
  readonly modules: ReadonlyMap<string, PoolModule>;
  /** Rows of the prompt-tuning table (0: no prompt tuning). */
  readonly virtualRows: number;
  readonly hiddenSize: number;
}

/** Where an adapter's module lives in the base model. */
export interface ModuleShape {
  readonly name: string;
  readonly inFeatures: number;
  readonly outFeatures: number;
  readonly fanInFanOut: boolean;
}

/** Throws unless `a` can be served per row from a pool. */
export function checkPoolable(a: AdapterInstance, baseHas: (key: string) => boolean): void {
  const t = a.tuner.peftType;
  if (t !== "LORA" && t !== "IA3" && !isVirtualTokenAdapter(a) && !isPrefixAdapter(a)) {
    throw new AdapterStateError(a.name, `generation serves LoRA, (IA)³, prompt-tuning, P-tuning and prefix-tuning adapters per row, not ${t}; merge it into the base model instead`);
  }
  if (t === "LORA" && rewritesBase(a.config as LoraConfig)) {
    throw new AdapterStateError(a.name, "its init_lora_weights (PiSSA / OLoRA) rewrites the base weights, which cannot change per row; save it converted to a plain LoRA (path_initial_model_for_weight_conversion)");
  }
  for (const k of a.tensors.keys()) {
    if (baseHas(k)) {
      throw new AdapterStateError(a.name, `replaces the base parameter '${k}' (modules_to_save / bias), which cannot change per row; merge it (mergeAndUnload) and serve the merged model`);
    }
  }
}

/** Prompt tuning and P-tuning: the adapter's saved `prompt_embeddings` are virtual tokens in front of the input. */
export function isVirtualTokenAdapter(a: AdapterInstance): boolean {
  return a.tuner.peftType === "PROMPT_TUNING" || a.tuner.peftType === "P_TUNING";
}

/**
 * Prefix tuning: the adapter's keys and values start the row's KV cache (`prefillPrefix` in
 * generate/prefix.ts); such a row uses the pool's base slot.
 */
export function isPrefixAdapter(a: AdapterInstance): boolean {
  return a.tuner.prefixKv !== undefined;
}

/** The virtual tokens [n, hidden] of a prompt-tuning or P-tuning adapter (a P-tuning encoder's output, as PEFT saves it). */
export function virtualTokenTable(a: AdapterInstance): Tensor {
  return (a.tuner.savedTensors?.(a) ?? a.tensors).get(PROMPT_KEY)!;
}

/** Virtual tokens a row of adapter `a` starts with (0 unless prompt tuning / P-tuning). */
export function virtualTokenCount(a: AdapterInstance | null): number {
  if (!a || !isVirtualTokenAdapter(a)) return 0;
  return a.tuner.peftType === "PROMPT_TUNING" ? a.tensors.get(PROMPT_KEY)!.shape[0]! : a.tuner.virtualTokens!(a.config);
}

/** The layout needs of one adapter: module → (rank, dora, ia3 side), and its virtual tokens. */
function needs(a: AdapterInstance): { modules: Map<string, { rank: number; dora: boolean; ia3In: boolean; ia3Out: boolean }>; virtual: number } {
  const modules = new Map<string, { rank: number; dora: boolean; ia3In: boolean; ia3Out: boolean }>();
  let virtual = 0;
  if (a.tuner.peftType === "LORA") {
    const c = a.config as LoraConfig;
    for (const [k, t] of a.tensors) {
      if (!k.endsWith(".lora_A.weight")) continue;
      const name = k.slice(0, -".lora_A.weight".length);
      modules.set(name, { rank: t.shape[0]!, dora: c.useDora, ia3In: false, ia3Out: false });
    }
  } else if (a.tuner.peftType === "IA3") {
    const c = a.config as Ia3Config;
    for (const k of a.tensors.keys()) {
      if (!k.endsWith(".ia3_l")) continue;
      const name = k.slice(0, -".ia3_l".length);
      const ff = isFeedforward(c, name);
      modules.set(name, { rank: 0, dora: false, ia3In: ff, ia3Out: !ff });
    }
  } else if (isVirtualTokenAdapter(a)) {
    virtual = virtualTokenCount(a);
  }
  return { modules, virtual };
}

/**
 * The smallest layout holding `adapters` (at least `minSlots` slots besides the base, ranks at
 * least `minRank` on the modules any adapter touches, `minVirtual` prompt-tuning rows).
 */
export function planLayout(
  adapters: readonly AdapterInstance[],
  shapes: (name: string) => ModuleShape,
  hiddenSize: number,
  opts: { minSlots?: number; minRank?: number; minVirtual?: number; base?: PoolLayout } = {},
): PoolLayout {
  const modules = new Map<string, PoolModule>(opts.base?.modules ?? []);
  let virtualRows = Math.max(opts.base?.virtualRows ?? 0, opts.minVirtual ?? 0);
  let virtualNeed = 0;
  for (const a of adapters) {
    const n = needs(a);
    virtualNeed += n.virtual;
    for (const [name, m] of n.modules) {
      const s = shapes(name);
      const old = modules.get(name);
      const rank = m.rank > 0 ? Math.max(m.rank, opts.minRank ?? 0, old?.rank ?? 0) : (old?.rank ?? 0);
      modules.set(name, {
        inFeatures: s.inFeatures,
        outFeatures: s.outFeatures,
        fanInFanOut: s.fanInFanOut,
        rank,
        dora: m.dora || (old?.dora ?? false),
        ia3In: m.ia3In || (old?.ia3In ?? false),
        ia3Out: m.ia3Out || (old?.ia3Out ?? false),
      });
    }
  }
  virtualRows = Math.max(virtualRows, virtualNeed);
  const slots = Math.max(opts.base?.slots ?? 0, adapters.length + 1, (opts.minSlots ?? 0) + 1);
  return { slots, modules, virtualRows, hiddenSize };
}

/** True when `a` fits `layout` (its modules, ranks, vector kinds and virtual tokens). */
export function fitsLayout(layout: PoolLayout, a: AdapterInstance, freeVirtual: number): boolean {
  const n = needs(a);
  if (n.virtual > freeVirtual) return false;
  for (const [name, m] of n.modules) {
    const l = layout.modules.get(name);
    if (!l || m.rank > l.rank || (m.dora && !l.dora) || (m.ia3In && !l.ia3In) || (m.ia3Out && !l.ia3Out)) return false;
  }
  return true;
}

const inputName = (module: string, what: string) => `pool.${module}.${what}`;

/**
 * Hooks applying the pool in a graph: `adapter_index` [batch] picks each row's slot. Adds the
 * pool's inputs to `g` (names `pool.<module>.<part>`, `pool.prompt_embeddings`, `virtual_index`).
 */
export function poolHooks(g: Graph, layout: PoolLayout, dtype: "float32" | "float64" | "float16" = "float32"): ModelHooks {
  const hasModules = layout.modules.size > 0;
  const rows = hasModules ? g.input("adapter_index", "int64", ["batch"]) : null;
  const S = layout.slots;
  const perRow = (name: string, shape: number[]) => G.cast(G.gather(g.input(name, "float32", shape), rows!), dtype);
  const hooks: ModelHooks = {
    linear: (name): LinearHook | null => {
      const m = layout.modules.get(name);
      if (!m) return null;
      return (site) => {
        const x = site.x;
        const vec = (what: string, n: number) => G.unsqueeze(perRow(inputName(name, what), [S, n]), [1]); // [B, 1, n]
        let y = site.base(m.ia3In ? G.mul(x, vec("ia3_in", m.inFeatures)) : x);
        if (m.ia3Out) y = G.mul(y, vec("ia3_out", m.outFeatures));
        if (m.rank === 0) return y;
        // stored transposed, the scaling folded into B: two batched products, no transposes
        const at = perRow(inputName(name, "lora_A"), [S, m.inFeatures, m.rank]); // [B, in, r] = Aᵀ
        const bt = perRow(inputName(name, "lora_B"), [S, m.rank, m.outFeatures]); // [B, r, out] = scaling·Bᵀ
        const d = G.matmul(G.matmul(x, at), bt);
        if (!m.dora) return G.add(y, d);
        const f = vec("dora_scale", m.outFeatures);
        if (!site.bias) return G.mul(f, G.add(y, d));
        return G.add(G.mul(f, G.add(G.sub(y, site.bias), d)), site.bias);
      };
    },
  };
  if (layout.virtualRows > 0) {
    const table = g.input("pool.prompt_embeddings", "float32", [layout.virtualRows, layout.hiddenSize]);
    const vidx = g.input("virtual_index", "int64", ["batch", "seq"]);
    hooks.embeds = ({ embeds, mask }) => {
      const virt = G.cast(G.gather(table, G.maximum(vidx, g.scalar(0, "int64"))), embeds.dtype);
      const isVirt = G.unsqueeze(G.not(G.less(vidx, g.scalar(0, "int64"))), [2]);
      return { embeds: G.where(isVirt, virt, embeds), mask };
    };
  }
  return hooks;
}

/**
 * The host side of a pool: the arrays fed to the graph, and which adapter occupies which slot.
 * Slot 0 is the base model and never changes.
 */
export class AdapterPool {
  private readonly arrays = new Map<string, { data: Float32Array; shape: number[] }>();
  private readonly occupant: (string | null)[];
  private readonly versions: (number | null)[];
  /** Prompt-tuning table rows per slot: [offset, count]. */
  private readonly virtualRows = new Map<number, [number, number]>();

  constructor(
    readonly layout: PoolLayout,
    private readonly baseWeight: (name: string) => Tensor,
    private readonly baseHas: (name: string) => boolean,
  ) {
    const S = layout.slots;
    this.occupant = Array.from({ length: S }, () => null);
    this.versions = Array.from({ length: S }, () => null);
    for (const [name, m] of layout.modules) {
      if (m.rank > 0) {
        this.arrays.set(inputName(name, "lora_A"), { data: new Float32Array(S * m.inFeatures * m.rank), shape: [S, m.inFeatures, m.rank] });
        this.arrays.set(inputName(name, "lora_B"), { data: new Float32Array(S * m.rank * m.outFeatures), shape: [S, m.rank, m.outFeatures] });
      }
      if (m.dora) this.arrays.set(inputName(name, "dora_scale"), { data: new Float32Array(S * m.outFeatures).fill(1), shape: [S, m.outFeatures] });
      if (m.ia3In) this.arrays.set(inputName(name, "ia3_in"), { data: new Float32Array(S * m.inFeatures).fill(1), shape: [S, m.inFeatures] });
      if (m.ia3Out) this.arrays.set(inputName(name, "ia3_out"), { data: new Float32Array(S * m.outFeatures).fill(1), shape: [S, m.outFeatures] });
    }
    if (layout.virtualRows > 0) {
      this.arrays.set("pool.prompt_embeddings", { data: new Float32Array(layout.virtualRows * layout.hiddenSize), shape: [layout.virtualRows, layout.hiddenSize] });
    }
  }

  /** The slot holding adapter `name` at `version`, or -1. */
  slotOf(name: string, version?: number): number {
    for (let i = 1; i < this.occupant.length; i++) {
      if (this.occupant[i] === name && (version === undefined || this.versions[i] === version)) return i;
    }
    return -1;
  }

  /** Adapter names by slot (null: free; slot 0 is the base). */
  get occupants(): readonly (string | null)[] {
    return this.occupant;
  }

  /** Prompt-tuning rows free for a new adapter. */
  freeVirtualRows(): number {
    let used = 0;
    for (const [, [, n]] of this.virtualRows) used += n;
    return this.layout.virtualRows - used;
  }

  /** Virtual tokens of the adapter in `slot` as rows of the pool's table: [offset, count], or null. */
  virtualTokens(slot: number): readonly [number, number] | null {
    return this.virtualRows.get(slot) ?? null;
  }

  /** A free slot (not slot 0), or -1. */
  freeSlot(): number {
    for (let i = 1; i < this.occupant.length; i++) if (this.occupant[i] === null) return i;
    return -1;
  }

  /** Empties `slot` (its rows read as the base model). */
  clear(slot: number): void {
    if (slot <= 0) return;
    for (const [name, m] of this.layout.modules) {
      if (m.rank > 0) {
        this.slice(inputName(name, "lora_A"), slot).fill(0);
        this.slice(inputName(name, "lora_B"), slot).fill(0);
      }
      if (m.dora) this.slice(inputName(name, "dora_scale"), slot).fill(1);
      if (m.ia3In) this.slice(inputName(name, "ia3_in"), slot).fill(1);
      if (m.ia3Out) this.slice(inputName(name, "ia3_out"), slot).fill(1);
    }
    this.virtualRows.delete(slot);
    this.occupant[slot] = null;
    this.versions[slot] = null;
  }

  private slice(input: string, slot: number): Float32Array {
    const a = this.arrays.get(input)!;
    const per = a.data.length / this.layout.slots;
    return a.data.subarray(slot * per, (slot + 1) * per);
  }

  /** Writes adapter `a` into `slot` (it must fit the layout; see `fitsLayout`). */
  assign(slot: number, a: AdapterInstance, version = 0): void {
    checkPoolable(a, this.baseHas);
    if (isPrefixAdapter(a)) throw new AdapterStateError(a.name, "a prefix-tuning adapter takes no pool slot: its keys and values prefill the row's cache slot (prefillPrefix)");
    if (slot <= 0 || slot >= this.layout.slots) throw new AdapterStateError(a.name, `pool slot ${slot} does not exist`);
    if (!fitsLayout(this.layout, a, this.freeVirtualRows() + (this.virtualRows.get(slot)?.[1] ?? 0))) {
      throw new AdapterStateError(a.name, "does not fit the generation graph's adapter layout");
    }
    this.clear(slot);
    if (a.tuner.peftType === "LORA") this.assignLora(slot, a as AdapterInstance<LoraConfig>);
    else if (a.tuner.peftType === "IA3") this.assignIa3(slot, a as AdapterInstance<Ia3Config>);
    else this.assignPrompt(slot, a);
    this.occupant[slot] = a.name;
    this.versions[slot] = version;
  }

  private assignLora(slot: number, a: AdapterInstance<LoraConfig>): void {
    for (const [k, ta] of a.tensors) {
      if (!k.endsWith(".lora_A.weight")) continue;
      const name = k.slice(0, -".lora_A.weight".length);
      const m = this.layout.modules.get(name)!;
      const keys = loraKeys(name);
      const r = ta.shape[0]!;
      const A = toFloat32(ta);
      const B = toFloat32(a.tensors.get(keys.B)!);
      const { scaling } = moduleRankAndScale(a.config, name);
      // Aᵀ [in, rank] and scaling·Bᵀ [rank, out]; ranks beyond r stay zero
      const at = this.slice(inputName(name, "lora_A"), slot);
      for (let j = 0; j < r; j++) for (let i = 0; i < m.inFeatures; i++) at[i * m.rank + j] = A[j * m.inFeatures + i]!;
      const bt = this.slice(inputName(name, "lora_B"), slot);
      for (let o = 0; o < m.outFeatures; o++) for (let j = 0; j < r; j++) bt[j * m.outFeatures + o] = scaling * B[o * r + j]!;
      if (a.config.useDora) this.slice(inputName(name, "dora_scale"), slot).set(doraScale(this.baseWeight(`${name}.weight`), m.fanInFanOut, A, B, r, scaling, toFloat32(a.tensors.get(keys.magnitude)!)));
    }
  }

  private assignIa3(slot: number, a: AdapterInstance<Ia3Config>): void {
    for (const [k, t] of a.tensors) {
      if (!k.endsWith(".ia3_l")) continue;
      const name = k.slice(0, -".ia3_l".length);
      this.slice(inputName(name, isFeedforward(a.config, name) ? "ia3_in" : "ia3_out"), slot).set(toFloat32(t));
    }
  }

  private assignPrompt(slot: number, a: AdapterInstance): void {
    const t = virtualTokenTable(a);
    const n = t.shape[0]!;
    const used = [...this.virtualRows.values()].sort((x, y) => x[0] - y[0]);
    let offset = 0;
    for (const [o, c] of used) {
      if (o - offset >= n) break;
      offset = o + c;
    }
    const table = this.arrays.get("pool.prompt_embeddings")!.data;
    table.set(toFloat32(t), offset * this.layout.hiddenSize);
    this.virtualRows.set(slot, [offset, n]);
  }

  /** The pool's graph inputs (the arrays themselves: no copy). */
  feeds(): Record<string, Tensor> {
    const out: Record<string, Tensor> = {};
    for (const [k, a] of this.arrays) out[k] = { dtype: "float32", shape: a.shape, data: a.data };
    return out;
  }
}

/**
 * DoRA's per-output-row factor m / ‖W + scaling·B·A‖ (PEFT: `lora_magnitude_vector /
 * weight_norm`, the norm taken over each output row of the combined weight), accumulated in float64.
 */
function doraScale(w: Tensor, fanInFanOut: boolean, A: Float32Array, B: Float32Array, r: number, scaling: number, magnitude: Float32Array): Float32Array {
  const W = toFloat32(w);
  const [d0, d1] = w.shape as [number, number];
  const out = fanInFanOut ? d1 : d0;
  const inF = fanInFanOut ? d0 : d1;
  const f = new Float32Array(out);
  const row = new Float64Array(inF);
  for (let o = 0; o < out; o++) {
    for (let i = 0; i < inF; i++) row[i] = fanInFanOut ? W[i * d1 + o]! : W[o * d1 + i]!;
    for (let j = 0; j < r; j++) {
      const bj = B[o * r + j]! * scaling;
      if (bj === 0) continue;
      for (let i = 0; i < inF; i++) row[i]! += bj * A[j * inF + i]!;
    }
    let s = 0;
    for (let i = 0; i < inF; i++) s += row[i]! * row[i]!;
    f[o] = magnitude[o]! / Math.sqrt(s);
  }
  return f;
}
