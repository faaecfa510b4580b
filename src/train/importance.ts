/**
 * Layer importance from a training run's gradient and update statistics (IST-style: which layers'
 * adapters change the loss most, measured during a short run rather than by ablations).
 *
 * For every optimizer step t and every trainable tensor, the first-order estimate of the loss
 * change caused by the tensor's update is ⟨g_t, θ_{t+1} − θ_t⟩ (g_t the step's gradient). A layer's
 * score is the sum over steps of |Σ_{tensors in the layer} ⟨g_t, Δθ_t⟩| (`taylor`); also kept: the
 * mean squared gradient norm per step (`gradSq`) and the norm of the layer's total update
 * ‖θ_T − θ_0‖ (`update`). Tensors are assigned to a layer by the model's layer pattern
 * (`….layer.3.…`); the others (a classification head, prompt embeddings) are reported apart as
 * `other` and not ranked.
 */
import type { GradientInfo } from "./trainer.js";

export interface LayerScore {
  readonly layer: number;
  /** Σ_t |Σ ⟨g_t, Δθ_t⟩| over the layer's tensors. */
  readonly taylor: number;
  /** Mean over steps of the squared gradient norm of the layer's tensors. */
  readonly gradSq: number;
  /** ‖θ_T − θ_0‖ of the layer's tensors. */
  readonly update: number;
  readonly params: number;
  readonly tensors: number;
  /** 1 = most important (by `taylor`). */
  readonly rank: number;
}

export interface LayerImportance {
  readonly criterion: "taylor";
  /** Optimizer steps observed. */
  readonly steps: number;
  readonly layers: readonly LayerScore[];
  /** Tensors outside the layers (heads, prompt embeddings), summed. */
  readonly other: Omit<LayerScore, "layer" | "rank"> | null;
}

interface Acc {
  taylor: number;
  gradSq: number;
  params: number;
  tensors: Set<string>;
}

/** The layer index of a tensor name: the number after one of `patterns` (`layer`, `h`, `layers`, …); null outside the layers. */
export function layerOfName(name: string, patterns: readonly string[]): number | null {
  for (const p of patterns) {
    const m = new RegExp(`(?:^|\\.)${p.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}\\.(\\d+)(?:\\.|$)`).exec(name);
    if (m) return Number(m[1]);
  }
  return null;
}

/** Accumulates layer scores from the trainer's `onGradients` callback. */
export class LayerImportanceRecorder {
  private readonly acc = new Map<number | "other", Acc>();
  private previous = new Map<string, Float32Array>();
  private initial = new Map<string, Float32Array>();
  private steps = 0;

  /** `patterns`: the model's layer names (`ModelDef.layersPattern`). */
  constructor(readonly patterns: readonly string[]) {}

  private bucket(name: string, key: string): number | "other" {
    return layerOfName(key, this.patterns) ?? layerOfName(name, this.patterns) ?? "other";
  }

  /** Pass as `TrainCallbacks.onGradients`. */
  readonly observe = (info: GradientInfo): void => {
    const first = this.steps === 0;
    this.steps++;
    const perBucket = new Map<number | "other", number>();
    for (const [name, g] of info.gradients) {
      const p = info.params.get(name);
      if (!p) continue;
      const o = info.owners.get(name);
      const b = this.bucket(name, o?.key ?? name);
      let a = this.acc.get(b);
      if (!a) {
        a = { taylor: 0, gradSq: 0, params: 0, tensors: new Set() };
        this.acc.set(b, a);
      }
      if (!a.tensors.has(name)) {
        a.tensors.add(name);
        a.params += p.length;
      }
      // θ before this step: the previous step's copy, or (first step of a fresh run) the initial values
      let before = this.previous.get(name);
      if (!before && first && info.step === 1) before = Float32Array.from(info.initial.get(name)!.data as Float32Array);
      if (!this.initial.has(name)) this.initial.set(name, before ? Float32Array.from(before) : Float32Array.from(p));
      let dot = 0;
      let sq = 0;
      for (let i = 0; i < g.length; i++) {
        sq += g[i]! * g[i]!;
        if (before) dot += g[i]! * (p[i]! - before[i]!);
      }
      a.gradSq += sq;
      perBucket.set(b, (perBucket.get(b) ?? 0) + dot);
      const prev = this.previous.get(name);
      if (prev) prev.set(p);
      else this.previous.set(name, Float32Array.from(p));
    }
    for (const [b, dot] of perBucket) this.acc.get(b)!.taylor += Math.abs(dot);
  };

  result(): LayerImportance {
    const score = (a: Acc) => {
      let upd = 0;
      for (const n of a.tensors) {
        const p0 = this.initial.get(n)!;
        const p = this.previous.get(n)!;
        for (let i = 0; i < p.length; i++) upd += (p[i]! - p0[i]!) ** 2;
      }
      return { taylor: a.taylor, gradSq: this.steps > 0 ? a.gradSq / this.steps : 0, update: Math.sqrt(upd), params: a.params, tensors: a.tensors.size };
    };
    const layers = [...this.acc.entries()]
      .filter((e): e is [number, Acc] => e[0] !== "other")
      .map(([layer, a]) => ({ layer, ...score(a) }))
      .sort((x, y) => y.taylor - x.taylor || x.layer - y.layer)
      .map((s, i) => ({ ...s, rank: i + 1 }))
      .sort((x, y) => x.layer - y.layer);
    const other = this.acc.get("other");
    return { criterion: "taylor", steps: this.steps, layers, other: other ? score(other) : null };
  }

  /** Layer indices, most important first. */
  static ranking(imp: LayerImportance): number[] {
    return [...imp.layers].sort((a, b) => a.rank - b.rank).map((l) => l.layer);
  }
}
