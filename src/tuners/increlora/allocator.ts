/**
 * IncreLoRA's rank allocator (the authors' `RankAllocator.update_and_increase`), run by the trainer
 * after every optimizer step t (0-based) while the total rank is below the budget
 * b = target_total_rank (default target_r × modules):
 * - importance of a module: s = Σ|ΔW ⊙ ∇_ΔW L| / √(out·in), ΔW the update the step's forward used
 *   (∇_ΔW L is the gradient of the module's zero probe), smoothed as AdaLoRA's,
 *   Ī ← β₁Ī + (1−β₁)s, Ū ← β₂Ū + (1−β₂)|s − Ī|, score Ī·Ū;
 * - when t > init_warmup and t % incre_interval = 0, the top_h modules by score (that still have
 *   capacity) each gain incre_rank_num components — fewer at the end, so the total never exceeds b:
 *   their reserve components (λ fixed at 1e-5 while P and Q already learn, the authors' "advance
 *   learning") become trainable, and new reserve components are drawn (P, Q ~ N(0, 0.02²));
 * - once the budget is spent (or no module has capacity left) the reserve components are zeroed.
 * Slots beyond a module's components stay zero. The state is read back from the tensors at the
 * first step (components = leading non-zero rows of A, reserve = trailing ones with λ = 1e-5). The
 * trainer's checkpoints hold the whole allocator state (`state` / `restore`: ranks, reserves,
 * importance EMAs, the last forward's A/E/B, the generator, the allocations so far), so a run
 * resumed at any step allocates as the uninterrupted run.
 */
import { type Tensor, toFloat32 } from "../../tensor.js";
import type { AdapterInstance, TrainingAllocator } from "../common/types.js";
import { checkedAllocatorJson } from "../common/allocator-state.js";
import { Rng, type RngState } from "../../util/rng.js";
import { type IncreLoraConfig, PROBE_GAIN, RESERVE_E, increKeys, increScale } from "./index.js";

interface ModuleState {
  readonly name: string;
  readonly inFeatures: number;
  readonly outFeatures: number;
  readonly capacity: number;
  /** Trainable components (rank). */
  rank: number;
  /** Reserve components after them. */
  reserve: number;
  ipt: number;
  unc: number;
  /** A, E, B as the last forward saw them (for ΔW of the importance score). */
  snap: { A: Float32Array; E: Float32Array; B: Float32Array };
}

/** One allocation: the step and every module's rank after it. */
export interface IncreEvent {
  readonly step: number;
  readonly grown: readonly string[];
  readonly ranks: Readonly<Record<string, number>>;
}

/** The JSON part of a checkpointed `IncreAllocator`. */
interface IncreState {
  readonly started: boolean;
  readonly growing: boolean;
  readonly rng: RngState;
  readonly modules: Record<string, { rank: number; reserve: number; ipt: number; unc: number }>;
  readonly events: IncreEvent[];
}

export class IncreAllocator implements TrainingAllocator<IncreLoraConfig> {
  private readonly c: IncreLoraConfig;
  private readonly mods: ModuleState[];
  readonly budget: number;
  private growing = true;
  private started = false;
  private rng: Rng;
  /** Every allocation, for logs, tests and the rank-allocation plot. */
  readonly events: IncreEvent[] = [];

  constructor(adapter: AdapterInstance<IncreLoraConfig>, seed = 0) {
    this.c = adapter.config;
    this.rng = new Rng(seed);
    this.mods = [...adapter.tensors.keys()]
      .filter((k) => k.endsWith(".lora_A"))
      .map((k) => {
        const name = k.slice(0, -".lora_A".length);
        const keys = increKeys(name);
        const A = adapter.tensors.get(keys.A)!;
        const B = adapter.tensors.get(keys.B)!;
        return {
          name,
          inFeatures: A.shape[1]!,
          outFeatures: B.shape[0]!,
          capacity: A.shape[0]!,
          rank: 0,
          reserve: 0,
          ipt: 0,
          unc: 0,
          snap: { A: Float32Array.from(toFloat32(A)), E: Float32Array.from(toFloat32(adapter.tensors.get(keys.E)!)), B: Float32Array.from(toFloat32(B)) },
        };
      });
    this.budget = this.c.targetTotalRank ?? this.c.targetR * this.mods.length;
  }

  /** Current ranks by module. */
  get ranks(): Record<string, number> {
    return Object.fromEntries(this.mods.map((m) => [m.name, m.rank]));
  }

  get totalRank(): number {
    return this.mods.reduce((s, m) => s + m.rank, 0);
  }

  /** The allocator's state for a training checkpoint: per module the snapshot tensors, the rest as JSON. */
  state(): { tensors: Map<string, Tensor>; json: unknown } {
    const tensors = new Map<string, Tensor>();
    for (const m of this.mods) {
      tensors.set(`${m.name}.snap_A`, { dtype: "float32", shape: [m.capacity, m.inFeatures], data: Float32Array.from(m.snap.A) });
      tensors.set(`${m.name}.snap_E`, { dtype: "float32", shape: [m.capacity, 1], data: Float32Array.from(m.snap.E) });
      tensors.set(`${m.name}.snap_B`, { dtype: "float32", shape: [m.outFeatures, m.capacity], data: Float32Array.from(m.snap.B) });
    }
    const json: IncreState = {
      started: this.started,
      growing: this.growing,
      rng: this.rng.state(),
      modules: Object.fromEntries(this.mods.map((m) => [m.name, { rank: m.rank, reserve: m.reserve, ipt: m.ipt, unc: m.unc }])),
      events: this.events.map((e) => ({ ...e, grown: [...e.grown], ranks: { ...e.ranks } })),
    };
    return { tensors, json };
  }

  /** Continue from a checkpoint's `state()` (the same adapter's modules and capacities). */
  restore(state: { readonly tensors: ReadonlyMap<string, Tensor>; readonly json: unknown }): void {
    const { state: j, bad } = checkedAllocatorJson<IncreState>("increlora", "an IncreLoRA", state.json, this.mods.map((m) => m.name));
    for (const m of this.mods) {
      const st = j.modules[m.name]!;
      if (!Number.isInteger(st.rank) || !Number.isInteger(st.reserve) || st.rank + st.reserve > m.capacity) bad(`module '${m.name}': rank ${st.rank} + reserve ${st.reserve} exceed its capacity ${m.capacity}`);
      for (const part of ["A", "E", "B"] as const) {
        const t = state.tensors.get(`${m.name}.snap_${part}`);
        if (!t || t.dtype !== "float32" || (t.data as Float32Array).length !== m.snap[part].length) bad(`module '${m.name}': snapshot of ${part} missing or of the wrong size`);
        m.snap[part].set(t!.data as Float32Array);
      }
      m.rank = st.rank;
      m.reserve = st.reserve;
      m.ipt = st.ipt;
      m.unc = st.unc;
    }
    this.started = j.started;
    this.growing = j.growing;
    this.rng = Rng.fromState(j.rng);
    this.events.length = 0;
    this.events.push(...j.events);
  }

  /** Reads each module's components and reserve from the current values (first step, or a resumed run). */
  private readState(values: ReadonlyMap<string, Float32Array>): void {
    for (const m of this.mods) {
      const k = increKeys(m.name);
      const A = values.get(k.A)!;
      const E = values.get(k.E)!;
      let used = 0;
      for (let s = 0; s < m.capacity; s++) if (A.subarray(s * m.inFeatures, (s + 1) * m.inFeatures).some((v) => v !== 0)) used = s + 1;
      let reserve = 0;
      while (reserve < used && E[used - 1 - reserve] === RESERVE_E) reserve++;
      m.rank = used - reserve;
      m.reserve = reserve;
    }
    this.growing = this.totalRank < this.budget && this.mods.some((m) => m.reserve > 0 || m.rank < m.capacity);
  }

  /** Module importance scores Ī·Ū, by module (for tests and logs). */
  get scores(): Record<string, number> {
    return Object.fromEntries(this.mods.map((m) => [m.name, m.ipt * m.unc]));
  }

  afterStep(step: number, values: ReadonlyMap<string, Float32Array>, grads: ReadonlyMap<string, Float32Array>): void {
    if (!this.started) {
      this.readState(values);
      this.started = true;
    }
    if (this.growing) {
      this.updateImportance(grads);
      if (step > this.c.initWarmup && step % this.c.increInterval === 0) this.grow(step, values);
    }
    this.enforce(values);
    for (const m of this.mods) {
      const k = increKeys(m.name);
      m.snap.A.set(values.get(k.A)!);
      m.snap.E.set(values.get(k.E)!);
      m.snap.B.set(values.get(k.B)!);
    }
  }

  private updateImportance(grads: ReadonlyMap<string, Float32Array>): void {
    const scale = increScale(this.c);
    const { beta1: b1, beta2: b2 } = this.c;
    for (const m of this.mods) {
      const g = grads.get(increKeys(m.name).probe);
      if (!g) continue;
      const { A, E, B } = m.snap;
      const R = m.capacity;
      const inn = m.inFeatures;
      const row = new Float64Array(inn);
      let s = 0;
      for (let o = 0; o < m.outFeatures; o++) {
        row.fill(0);
        for (let k = 0; k < m.rank + m.reserve; k++) {
          const f = B[o * R + k]! * E[k]! * scale;
          if (f === 0) continue;
          for (let i = 0; i < inn; i++) row[i]! += f * A[k * inn + i]!;
        }
        for (let i = 0; i < inn; i++) s += Math.abs(row[i]! * g[o * inn + i]!);
      }
      s /= Math.sqrt(m.outFeatures * inn) * PROBE_GAIN;
      m.ipt = b1 * m.ipt + (1 - b1) * s;
      m.unc = b2 * m.unc + (1 - b2) * Math.abs(s - m.ipt);
    }
  }

  /**
   * One allocation: the modules that gain ranks, by score (ties: module order), and how many each.
   * Exposed for tests: `choose(scores)` on a constructed example.
   */
  choose(scores: readonly number[]): { module: number; add: number }[] {
    let left = this.budget - this.totalRank;
    const order = this.mods
      .map((m, i) => ({ i, s: scores[i]!, room: m.capacity - m.rank }))
      .filter((x) => x.room > 0)
      .sort((a, b) => b.s - a.s || a.i - b.i);
    const out: { module: number; add: number }[] = [];
    for (const x of order.slice(0, this.c.topH)) {
      if (left <= 0) break;
      const add = Math.min(this.c.increRankNum, x.room, left);
      out.push({ module: x.i, add });
      left -= add;
    }
    return out;
  }

  private grow(step: number, values: ReadonlyMap<string, Float32Array>): void {
    const picks = this.choose(this.mods.map((m) => m.ipt * m.unc));
    for (const { module, add } of picks) {
      const m = this.mods[module]!;
      const k = increKeys(m.name);
      const A = values.get(k.A)!;
      const E = values.get(k.E)!;
      const B = values.get(k.B)!;
      const R = m.capacity;
      // reserve components become trainable first (λ starts at its 1e-5), then fresh ones at λ = 0
      for (let s = m.rank + m.reserve; s < m.rank + add; s++) this.draw(m, A, B, s);
      for (let s = m.rank + Math.min(add, m.reserve); s < m.rank + add; s++) E[s] = 0;
      m.reserve = Math.max(0, m.reserve - add);
      m.rank += add;
      // new reserve components up to incre_rank_num, within the capacity
      const want = Math.min(this.c.increRankNum, R - m.rank);
      for (let s = m.rank + m.reserve; s < m.rank + want; s++) {
        this.draw(m, A, B, s);
        E[s] = RESERVE_E;
      }
      m.reserve = Math.max(m.reserve, want);
    }
    this.events.push({ step, grown: picks.map((p) => this.mods[p.module]!.name), ranks: this.ranks });
    if (this.totalRank >= this.budget || this.mods.every((m) => m.rank >= m.capacity)) {
      this.growing = false;
      for (const m of this.mods) m.reserve = 0; // enforce() zeroes them
    }
  }

  private draw(m: ModuleState, A: Float32Array, B: Float32Array, s: number): void {
    for (let i = 0; i < m.inFeatures; i++) A[s * m.inFeatures + i] = this.rng.normal() * 0.02;
    for (let o = 0; o < m.outFeatures; o++) B[o * m.capacity + s] = this.rng.normal() * 0.02;
  }

  /** Reserve λ back at 1e-5, everything beyond the components zero, the probe zero. */
  private enforce(values: ReadonlyMap<string, Float32Array>): void {
    for (const m of this.mods) {
      const k = increKeys(m.name);
      const A = values.get(k.A)!;
      const E = values.get(k.E)!;
      const B = values.get(k.B)!;
      for (let s = m.rank; s < m.rank + m.reserve; s++) E[s] = RESERVE_E;
      for (let s = m.rank + m.reserve; s < m.capacity; s++) {
        E[s] = 0;
        A.fill(0, s * m.inFeatures, (s + 1) * m.inFeatures);
        for (let o = 0; o < m.outFeatures; o++) B[o * m.capacity + s] = 0;
      }
      values.get(k.probe)?.fill(0);
    }
  }

  finish(adapter: AdapterInstance<IncreLoraConfig>): { config: IncreLoraConfig; tensors: Map<string, Tensor> } | null {
    if (!this.started) return null;
    const tensors = new Map<string, Tensor>();
    for (const [key, t] of adapter.tensors) if (!this.mods.some((m) => key.startsWith(`${m.name}.lora_`))) tensors.set(key, t);
    for (const m of this.mods) {
      const k = increKeys(m.name);
      const r = m.rank;
      const R = m.capacity;
      const a = toFloat32(adapter.tensors.get(k.A)!);
      const e = toFloat32(adapter.tensors.get(k.E)!);
      const b = toFloat32(adapter.tensors.get(k.B)!);
      const B = new Float32Array(m.outFeatures * r);
      for (let o = 0; o < m.outFeatures; o++) for (let s = 0; s < r; s++) B[o * r + s] = b[o * R + s]!;
      tensors.set(k.A, { dtype: "float32", shape: [r, m.inFeatures], data: Float32Array.from(a.subarray(0, r * m.inFeatures)) });
      tensors.set(k.E, { dtype: "float32", shape: [r, 1], data: Float32Array.from(e.subarray(0, r)) });
      tensors.set(k.B, { dtype: "float32", shape: [m.outFeatures, r], data: B });
    }
    return { config: { ...adapter.config, rankPattern: this.ranks }, tensors };
  }
}
