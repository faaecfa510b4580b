/**
 * TriAdaptLoRA's rank allocator (the authors' `RankAllocator.update_and_increase`), run by the
 * trainer after every optimizer step t (0-based), T = `total_step`, b = target_total_rank
 * (default reference_rank × modules), while the total rank is below b:
 * - when t > init_warmup and t % incre_interval = 0: each module's importance is the change of its
 *   normalised Frobenius norm since the last allocation, s = ‖C_row + C_col‖_F / strips − previous;
 *   the number of modules that grow is n = ⌊(b − total)·μ⌋ (linear) or ⌊exp(μ·ln(b − total))⌋
 *   (non-linear), μ = (t − init_warmup)/(T − init_warmup), at least 1 and at most the number of
 *   modules; the n most important modules (with capacity left) gain incre_rank_num ranks each —
 *   fewer at the end, so the total never exceeds b (the authors' code can overshoot it by the
 *   last allocation);
 * - a growing module's new strips: A rows and B columns drawn N(0, 0.02²), C strips zero.
 * After every step everything outside the strips is set back to zero. The state is read from the
 * tensors at the first step (rank = leading non-zero rows of A, one strip). The trainer's
 * checkpoints hold the whole allocator state (`state` / `restore`: the strips, the norms at the
 * last allocation, the generator, the allocations so far), so a run resumed at any step allocates
 * as the uninterrupted run.
 */
import { type Tensor, toFloat32 } from "../../tensor.js";
import type { AdapterInstance, TrainingAllocator } from "../common/types.js";
import { checkedAllocatorJson } from "../common/allocator-state.js";
import { Rng, type RngState } from "../../util/rng.js";
import { type TriAdaptLoraConfig, triKeys } from "./index.js";

interface ModuleState {
  readonly name: string;
  readonly inFeatures: number;
  readonly outFeatures: number;
  readonly capacity: number;
  /** Strip boundaries: strip i covers ranks [ends[i−1] (or 0), ends[i]); the rank is the last end. */
  ends: number[];
  /** Normalised norm at the last allocation. */
  prevNorm: number;
}

export interface TriEvent {
  readonly step: number;
  /** Modules that may grow this allocation (n of the schedule) and those that did. */
  readonly count: number;
  readonly grown: readonly string[];
  readonly scores: Readonly<Record<string, number>>;
  readonly ranks: Readonly<Record<string, number>>;
}

/** The JSON part of a checkpointed `TriAllocator`. */
interface TriState {
  readonly started: boolean;
  readonly rng: RngState;
  readonly modules: Record<string, { ends: number[]; prevNorm: number }>;
  readonly events: TriEvent[];
}

export class TriAllocator implements TrainingAllocator<TriAdaptLoraConfig> {
  private readonly c: TriAdaptLoraConfig;
  private readonly mods: ModuleState[];
  readonly budget: number;
  private started = false;
  private rng: Rng;
  readonly events: TriEvent[] = [];

  constructor(adapter: AdapterInstance<TriAdaptLoraConfig>, seed = 0) {
    this.c = adapter.config;
    this.rng = new Rng(seed);
    this.mods = [...adapter.tensors.keys()]
      .filter((k) => k.endsWith(".lora_A"))
      .map((k) => {
        const name = k.slice(0, -".lora_A".length);
        const A = adapter.tensors.get(k)!;
        return { name, inFeatures: A.shape[1]!, outFeatures: adapter.tensors.get(triKeys(name).B)!.shape[0]!, capacity: A.shape[0]!, ends: [], prevNorm: 0 };
      });
    this.budget = this.c.targetTotalRank ?? this.c.referenceRank * this.mods.length;
  }

  rank(m: ModuleState): number {
    return m.ends.at(-1) ?? 0;
  }

  get ranks(): Record<string, number> {
    return Object.fromEntries(this.mods.map((m) => [m.name, this.rank(m)]));
  }

  get totalRank(): number {
    return this.mods.reduce((s, m) => s + this.rank(m), 0);
  }

  /** The allocator's state for a training checkpoint (JSON only). */
  state(): { tensors: Map<string, Tensor>; json: unknown } {
    const json: TriState = {
      started: this.started,
      rng: this.rng.state(),
      modules: Object.fromEntries(this.mods.map((m) => [m.name, { ends: [...m.ends], prevNorm: m.prevNorm }])),
      events: this.events.map((e) => ({ ...e, grown: [...e.grown], scores: { ...e.scores }, ranks: { ...e.ranks } })),
    };
    return { tensors: new Map(), json };
  }

  /** Continue from a checkpoint's `state()` (the same adapter's modules and capacities). */
  restore(state: { readonly tensors: ReadonlyMap<string, Tensor>; readonly json: unknown }): void {
    const { state: j, bad } = checkedAllocatorJson<TriState>("triadaptlora", "a TriAdaptLoRA", state.json, this.mods.map((m) => m.name));
    for (const m of this.mods) {
      const st = j.modules[m.name]!;
      const ok = Array.isArray(st.ends) && st.ends.every((e, i) => Number.isInteger(e) && e > (i === 0 ? 0 : st.ends[i - 1]!) && e <= m.capacity);
      if (!ok) bad(`module '${m.name}': strip ends ${JSON.stringify(st.ends)} are not increasing within its capacity ${m.capacity}`);
      m.ends = [...st.ends];
      m.prevNorm = st.prevNorm;
    }
    this.started = j.started;
    this.rng = Rng.fromState(j.rng);
    this.events.length = 0;
    this.events.push(...j.events);
  }

  private readState(values: ReadonlyMap<string, Float32Array>): void {
    for (const m of this.mods) {
      const A = values.get(triKeys(m.name).A)!;
      let used = 0;
      for (let s = 0; s < m.capacity; s++) if (A.subarray(s * m.inFeatures, (s + 1) * m.inFeatures).some((v) => v !== 0)) used = s + 1;
      m.ends = [Math.max(used, Math.min(this.c.initRank, m.capacity))];
      m.prevNorm = this.normalisedNorm(m, values);
    }
  }

  /** ‖C_row + C_col‖_F / strips. */
  normalisedNorm(m: ModuleState, values: ReadonlyMap<string, Float32Array>): number {
    const k = triKeys(m.name);
    const row = values.get(k.row)!;
    const col = values.get(k.col)!;
    let s = 0;
    for (let i = 0; i < row.length; i++) s += (row[i]! + col[i]!) ** 2;
    return Math.sqrt(s) / Math.max(1, m.ends.length);
  }

  /** How many modules grow at step t (the paper's linear / non-linear threshold schedule). */
  growCount(step: number): number {
    const left = this.budget - this.totalRank;
    if (left <= 0) return 0;
    const mu = (step - this.c.initWarmup) / (this.c.totalStep - this.c.initWarmup);
    const n = this.c.rankGrowthModel === "linear" ? Math.trunc(left * mu) : Math.trunc(Math.exp(mu * Math.log(left)));
    return Math.min(Math.max(n, 1), this.mods.length);
  }

  /** The modules that grow and by how much, given importance scores (ties: module order). */
  choose(scores: readonly number[], count: number): { module: number; add: number }[] {
    let left = this.budget - this.totalRank;
    const order = this.mods
      .map((m, i) => ({ i, s: scores[i]!, room: m.capacity - this.rank(m) }))
      .filter((x) => x.room > 0)
      .sort((a, b) => b.s - a.s || a.i - b.i);
    const out: { module: number; add: number }[] = [];
    for (const x of order.slice(0, count)) {
      if (left <= 0) break;
      const add = Math.min(this.c.increRankNum, x.room, left);
      out.push({ module: x.i, add });
      left -= add;
    }
    return out;
  }

  afterStep(step: number, values: ReadonlyMap<string, Float32Array>): void {
    if (!this.started) {
      this.readState(values);
      this.started = true;
    }
    if (this.totalRank < this.budget && step > this.c.initWarmup && step % this.c.increInterval === 0) {
      const scores = this.mods.map((m) => {
        const norm = this.normalisedNorm(m, values);
        const s = norm - m.prevNorm;
        m.prevNorm = norm;
        return s;
      });
      const count = this.growCount(step);
      const picks = this.choose(scores, count);
      for (const { module, add } of picks) this.grow(this.mods[module]!, add, values);
      this.events.push({ step, count, grown: picks.map((p) => this.mods[p.module]!.name), scores: Object.fromEntries(this.mods.map((m, i) => [m.name, scores[i]!])), ranks: this.ranks });
    }
    this.enforce(values);
  }

  private grow(m: ModuleState, add: number, values: ReadonlyMap<string, Float32Array>): void {
    const k = triKeys(m.name);
    const A = values.get(k.A)!;
    const B = values.get(k.B)!;
    const n = this.rank(m);
    for (let s = n; s < n + add; s++) {
      for (let i = 0; i < m.inFeatures; i++) A[s * m.inFeatures + i] = this.rng.normal() * 0.02;
      for (let o = 0; o < m.outFeatures; o++) B[o * m.capacity + s] = this.rng.normal() * 0.02;
    }
    m.ends.push(n + add);
  }

  /** Zero outside the strips: C_row[p, q] lives for q < end of p's strip, C_col[p, q] for p < end of q's strip. */
  private enforce(values: ReadonlyMap<string, Float32Array>): void {
    for (const m of this.mods) {
      const k = triKeys(m.name);
      const R = m.capacity;
      const r = this.rank(m);
      const endOf = new Int32Array(R); // end of the strip holding rank p (0 beyond the rank)
      let start = 0;
      for (const e of m.ends) {
        for (let p = start; p < e; p++) endOf[p] = e;
        start = e;
      }
      const row = values.get(k.row)!;
      const col = values.get(k.col)!;
      for (let p = 0; p < R; p++) {
        for (let q = 0; q < R; q++) {
          if (!(q < endOf[p]!)) row[p * R + q] = 0;
          if (!(p < endOf[q]!)) col[p * R + q] = 0;
        }
      }
      const A = values.get(k.A)!;
      const B = values.get(k.B)!;
      A.fill(0, r * m.inFeatures);
      for (let o = 0; o < m.outFeatures; o++) B.fill(0, o * R + r, (o + 1) * R);
    }
  }

  finish(adapter: AdapterInstance<TriAdaptLoraConfig>): { config: TriAdaptLoraConfig; tensors: Map<string, Tensor> } | null {
    if (!this.started) return null;
    const tensors = new Map(adapter.tensors);
    for (const m of this.mods) {
      const k = triKeys(m.name);
      const r = this.rank(m);
      const R = m.capacity;
      const a = toFloat32(adapter.tensors.get(k.A)!);
      const b = toFloat32(adapter.tensors.get(k.B)!);
      const B = new Float32Array(m.outFeatures * r);
      for (let o = 0; o < m.outFeatures; o++) for (let s = 0; s < r; s++) B[o * r + s] = b[o * R + s]!;
      const sub = (t: Tensor): Tensor => {
        const d = toFloat32(t);
        const out = new Float32Array(r * r);
        for (let p = 0; p < r; p++) for (let q = 0; q < r; q++) out[p * r + q] = d[p * R + q]!;
        return { dtype: "float32", shape: [r, r], data: out };
      };
      tensors.set(k.A, { dtype: "float32", shape: [r, m.inFeatures], data: Float32Array.from(a.subarray(0, r * m.inFeatures)) });
      tensors.set(k.B, { dtype: "float32", shape: [m.outFeatures, r], data: B });
      tensors.set(k.row, sub(adapter.tensors.get(k.row)!));
      tensors.set(k.col, sub(adapter.tensors.get(k.col)!));
    }
    return { config: { ...adapter.config, rankPattern: this.ranks }, tensors };
  }
}
