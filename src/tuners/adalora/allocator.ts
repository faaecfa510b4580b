/**
 * AdaLoRA's rank allocator (PEFT's `RankAllocator` + `AdaLoraModel.update_and_allocate`), run by
 * the trainer after every optimizer step t (0-based), with T = `total_step`:
 * - t < T − tfinal: importance I = |θ·∇θ| of every A, E, B entry, smoothed
 *   Ī ← β₁Ī + (1−β₁)I and uncertainty Ū ← β₂Ū + (1−β₂)|I − Ī|; then the budget schedule:
 *   t ≤ tinit keeps every triplet; afterwards the budget falls cubically,
 *   b(t) = ⌊(b₀ − b_T)·(1 − (t − tinit)/(T − tfinal − tinit))³ + b_T⌋ (b₀ = Σ ranks,
 *   b_T = target_r × layers), and every `deltaT` steps the triplets whose score
 *   s_k = Ī·Ū(E_k) + mean_in Ī·Ū(A_k) + mean_out Ī·Ū(B_k) is at most the (b₀ − b)-th smallest are
 *   zeroed (E_k = 0);
 * - t = T − tfinal: the final mask at budget b_T becomes `rank_pattern`;
 * - t > T − tfinal: that mask is applied again after each step.
 * The EMAs and the mask are part of the trainer's checkpoints (`state` / `restore`), so a resumed
 * run allocates as the straight run.
 */
import { AdapterStateError } from "../../errors.js";
import { type Tensor, toFloat32 } from "../../tensor.js";
import type { AdapterInstance, TrainingAllocator } from "../common/types.js";
import type { AdaLoraConfig } from "./index.js";

interface Ema {
  ipt: Float64Array;
  unc: Float64Array;
}

export class RankAllocator implements TrainingAllocator<AdaLoraConfig> {
  private ema = new Map<string, Ema>();
  private pattern: Record<string, boolean[]> | null = null;
  private readonly initBudget: number;
  private readonly targetBudget: number;
  /** Budget and whether the step masked, for tests and logs. */
  lastBudget = 0;

  constructor(
    private readonly c: AdaLoraConfig,
    private readonly modules: readonly string[],
    private readonly ranks: ReadonlyMap<string, number>,
  ) {
    if (c.rankPattern) throw new AdapterStateError("adalora", "this adapter already has a rank_pattern (its triplets were pruned); train a fresh AdaLoRA adapter instead");
    this.initBudget = modules.reduce((s, m) => s + ranks.get(m)!, 0);
    this.targetBudget = c.targetR * modules.length;
  }

  /** PEFT's `budget_schedule`. */
  budgetAt(step: number): { budget: number; mask: boolean } {
    const { tinit, tfinal, totalStep: T } = this.c;
    if (step <= tinit) return { budget: this.initBudget, mask: false };
    if (step > T - tfinal) return { budget: this.targetBudget, mask: true };
    const mul = 1 - (step - tinit) / (T - tfinal - tinit);
    return { budget: Math.trunc((this.initBudget - this.targetBudget) * mul ** 3 + this.targetBudget), mask: step % this.c.deltaT === 0 };
  }

  afterStep(step: number, values: ReadonlyMap<string, Float32Array>, grads: ReadonlyMap<string, Float32Array>): void {
    const edge = this.c.totalStep - this.c.tfinal;
    if (step < edge) {
      this.updateImportance(values, grads);
      const { budget, mask } = this.budgetAt(step);
      this.lastBudget = budget;
      if (mask) this.pattern = this.maskToBudget(values, budget);
    } else if (step === edge) {
      const { budget } = this.budgetAt(step);
      this.lastBudget = budget;
      this.pattern = this.maskToBudget(values, budget);
      this.ema = new Map();
    } else if (this.pattern) {
      for (const m of this.modules) {
        const keep = this.pattern[`${m}.lora_E`]!;
        const e = values.get(`${m}.lora_E`)!;
        keep.forEach((k, i) => {
          if (!k) e[i] = 0;
        });
      }
    }
  }

  private updateImportance(values: ReadonlyMap<string, Float32Array>, grads: ReadonlyMap<string, Float32Array>): void {
    const b1 = this.c.beta1;
    const b2 = this.c.beta2;
    for (const m of this.modules) {
      for (const suffix of ["lora_A", "lora_B", "lora_E"]) {
        const key = `${m}.${suffix}`;
        const p = values.get(key);
        const g = grads.get(key);
        if (!p || !g) continue;
        let e = this.ema.get(key);
        if (!e) {
          e = { ipt: new Float64Array(p.length), unc: new Float64Array(p.length) };
          this.ema.set(key, e);
        }
        for (let i = 0; i < p.length; i++) {
          const ipt = Math.abs(p[i]! * g[i]!);
          e.ipt[i] = b1 * e.ipt[i]! + (1 - b1) * ipt;
          e.unc[i] = b2 * e.unc[i]! + (1 - b2) * Math.abs(ipt - e.ipt[i]!);
        }
      }
    }
  }

  state(): { tensors: Map<string, Tensor>; json: unknown } {
    const tensors = new Map<string, Tensor>();
    for (const [key, e] of this.ema) {
      tensors.set(`${key}.ipt`, { dtype: "float64", shape: [e.ipt.length], data: Float64Array.from(e.ipt) });
      tensors.set(`${key}.unc`, { dtype: "float64", shape: [e.unc.length], data: Float64Array.from(e.unc) });
    }
    return { tensors, json: { pattern: this.pattern } };
  }

  restore(state: { readonly tensors: ReadonlyMap<string, Tensor>; readonly json: unknown }): void {
    const ema = new Map<string, Ema>();
    for (const [name, t] of state.tensors) {
      const m = /^(.*)\.(ipt|unc)$/u.exec(name);
      if (!m || t.dtype !== "float64") throw new AdapterStateError("adalora", `checkpointed allocator tensor '${name}' is not an importance EMA`);
      const e = ema.get(m[1]!) ?? { ipt: new Float64Array(0), unc: new Float64Array(0) };
      e[m[2] as "ipt" | "unc"] = Float64Array.from(t.data as Float64Array);
      ema.set(m[1]!, e);
    }
    const json = state.json as { pattern?: Record<string, boolean[]> | null } | null;
    this.ema = ema;
    this.pattern = json?.pattern ?? null;
  }

  /** Ī·Ū of one tensor entry. */
  private score(key: string, i: number): number {
    const e = this.ema.get(key);
    return e ? e.ipt[i]! * e.unc[i]! : 0;
  }

  /** Zero the least important triplets down to `budget`; returns the kept mask per `<module>.lora_E`. */
  private maskToBudget(values: ReadonlyMap<string, Float32Array>, budget: number): Record<string, boolean[]> {
    const triplet = new Map<string, Float64Array>();
    const all: number[] = [];
    for (const m of this.modules) {
      const r = this.ranks.get(m)!;
      const A = values.get(`${m}.lora_A`)!;
      const B = values.get(`${m}.lora_B`)!;
      const inn = A.length / r;
      const out = B.length / r;
      const s = new Float64Array(r);
      for (let k = 0; k < r; k++) {
        let a = 0;
        for (let i = 0; i < inn; i++) a += this.score(`${m}.lora_A`, k * inn + i);
        let b = 0;
        for (let o = 0; o < out; o++) b += this.score(`${m}.lora_B`, o * r + k);
        s[k] = this.score(`${m}.lora_E`, k) + a / inn + b / out;
        all.push(s[k]!);
      }
      triplet.set(m, s);
    }
    const k = this.initBudget - budget;
    // torch.kthvalue: the k-th smallest score (nothing is masked when the budget is the full rank)
    const threshold = k >= 1 ? [...all].sort((x, y) => x - y)[Math.min(k, all.length) - 1]! : -Infinity;
    const pattern: Record<string, boolean[]> = {};
    for (const m of this.modules) {
      const s = triplet.get(m)!;
      const e = values.get(`${m}.lora_E`)!;
      const keep = Array.from(s, (v) => !(v <= threshold));
      keep.forEach((kept, i) => {
        if (!kept) e[i] = 0;
      });
      pattern[`${m}.lora_E`] = keep;
    }
    return pattern;
  }

  get rankPattern(): Readonly<Record<string, readonly boolean[]>> | null {
    return this.pattern;
  }

  finish(adapter: AdapterInstance<AdaLoraConfig>): { config: AdaLoraConfig; tensors: Map<string, Tensor> } | null {
    if (!this.pattern) return null;
    const tensors = new Map(adapter.tensors);
    for (const m of this.modules) {
      const keep = this.pattern[`${m}.lora_E`]!;
      const idx = keep.flatMap((k, i) => (k ? [i] : []));
      const r = keep.length;
      const A = adapter.tensors.get(`${m}.lora_A`)!;
      const B = adapter.tensors.get(`${m}.lora_B`)!;
      const E = adapter.tensors.get(`${m}.lora_E`)!;
      const inn = A.shape[1]!;
      const out = B.shape[0]!;
      const a = toFloat32(A);
      const b = toFloat32(B);
      const e = toFloat32(E);
      tensors.set(`${m}.lora_A`, { dtype: "float32", shape: [idx.length, inn], data: Float32Array.from(idx.flatMap((i) => Array.from(a.subarray(i * inn, (i + 1) * inn)))) });
      tensors.set(`${m}.lora_E`, { dtype: "float32", shape: [idx.length, 1], data: Float32Array.from(idx, (i) => e[i]!) });
      const bd = new Float32Array(out * idx.length);
      for (let o = 0; o < out; o++) idx.forEach((i, j) => (bd[o * idx.length + j] = b[o * r + i]!));
      tensors.set(`${m}.lora_B`, { dtype: "float32", shape: [out, idx.length], data: bd });
    }
    return { config: { ...adapter.config, rankPattern: this.pattern }, tensors };
  }
}
