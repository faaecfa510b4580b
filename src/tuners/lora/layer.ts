/** Graph builders for a LoRA-adapted linear layer (plain, rsLoRA, DoRA) and mixed-adapter batches. */
import { GraphBuildError } from "../../errors.js";
import * as G from "../../graph/api.js";
import { dense, dropout } from "../../graph/composite.js";
import type { Value } from "../../graph/types.js";
import type { ConvSite, LinearSite } from "../../models/context.js";

export interface LoraFactors {
  readonly A: Value; // [r, in]
  readonly B: Value; // [out, r]
  readonly scaling: number;
  readonly magnitude?: Value; // [out], DoRA
  readonly dropout: number;
}

/** x·Aᵀ·Bᵀ·scaling (+ `base`, accumulated by the second Gemm instead of a separate Add). */
export function loraDelta(x: Value, f: LoraFactors, base: Value | null = null): Value {
  return dense(dense(x, f.A, null, { transB: true }), f.B, base, { transB: true, alpha: f.scaling });
}

/** The stored weight as [out, in]. */
function weightOutIn(site: LinearSite): Value {
  return site.fanInFanOut ? G.transpose(site.weight, [1, 0]) : site.weight;
}

/**
 * LoRA forward: base(x) + scaling·B·A·dropout(x); with DoRA (`magnitude`), PEFT's
 * base(x) + (m/‖W + s·BA‖ − 1)·W·x' + (m/‖W + s·BA‖)·s·B·A·x' with the norm detached.
 */
export function applyLora(site: LinearSite, f: LoraFactors, training: boolean, seed: number): Value {
  const xd = training && f.dropout > 0 ? dropout(site.x, f.dropout, seed) : site.x;
  const base = site.base(site.x);
  if (!f.magnitude) return loraDelta(xd, f, base);
  const delta = loraDelta(xd, f);
  const w = weightOutIn(site);
  const combined = G.add(w, G.mul(G.matmul(f.B, f.A), f.scaling));
  // float16: the row norms are taken in float32 (autocast runs linalg.norm in float32)
  const c32 = G.cast(combined, combined.dtype === "float16" ? "float32" : combined.dtype);
  const norm = site.g.stopGradient(G.cast(G.sqrt(G.reduceSum(G.mul(c32, c32), [1], false)), combined.dtype));
  const scale = G.div(f.magnitude, norm);
  const baseNoBias = G.matmul(xd, G.transpose(w, [1, 0]));
  return G.add(G.add(base, G.mul(G.sub(scale, 1), baseNoBias)), G.mul(scale, delta));
}

export interface StackedLora {
  /** [N, rmax, in], zero rows beyond an adapter's rank and for rows without an adapter. */
  readonly A: Value;
  /** [N, out, rmax] */
  readonly B: Value;
  /** [N] scaling per stacked adapter (0 for the base model). */
  readonly scaling: Value;
}

/**
 * One graph for a batch whose rows use different adapters: each row gathers its adapter's
 * stacked A, B and scaling by `rowIndex` [batch] and adds its own low-rank update.
 */
export function applyMixedLora(site: LinearSite, s: StackedLora, rowIndex: Value): Value {
  return G.add(site.base(site.x), mixedLoraDelta(site, s, rowIndex));
}

/** The per-row low-rank update of {@link applyMixedLora}, without the base output. */
export function mixedLoraDelta(site: LinearSite, s: StackedLora, rowIndex: Value): Value {
  let x = site.x;
  const rank2 = x.rank === 2;
  if (rank2) x = G.unsqueeze(x, [1]);
  if (x.rank !== 3) throw new GraphBuildError("lora", `mixed-adapter batches need [batch, seq, features] inputs at ${site.name}`);
  const a = G.gather(s.A, rowIndex); // [b, r, in]
  const b = G.gather(s.B, rowIndex); // [b, out, r]
  const sc = G.unsqueeze(G.gather(s.scaling, rowIndex), [1, 2]); // [b, 1, 1]
  // scale the rank-r activations, not the [b, seq, out] product
  let y = G.matmul(G.mul(G.matmul(x, G.transpose(a, [0, 2, 1])), sc), G.transpose(b, [0, 2, 1]));
  if (rank2) y = G.squeeze(y, [1]);
  return y;
}

/** LoRA factors of a convolution (PEFT's `lora.Conv2d`). */
export interface LoraConvFactors {
  /** [r, in, kh, kw]: a convolution with the base layer's kernel size, stride and padding. */
  readonly A: Value;
  /** [out, r, 1, 1]: a 1×1 convolution. */
  readonly B: Value;
  readonly scaling: number;
  readonly dropout: number;
}

/** LoRA on a convolution: base(x) + scaling·lora_B(lora_A(dropout(x))), lora_A with the layer's geometry, lora_B 1×1. */
export function applyLoraConv(site: ConvSite, f: LoraConvFactors, training: boolean, seed: number): Value {
  const xd = training && f.dropout > 0 ? dropout(site.x, f.dropout, seed) : site.x;
  const h = site.conv(xd, f.A);
  const y = G.conv2d(h, f.B, null);
  return G.add(site.base(site.x), f.scaling === 1 ? y : G.mul(y, f.scaling));
}
