/** Mixed-adapter batches: one graph, each row using its own LoRA adapter (or none). */
import { AdapterStateError } from "../errors.js";
import type { Graph } from "../graph/graph.js";
import type { Value } from "../graph/types.js";
import { type ComputeDtype, type LinearHook, type ModelHooks, castTensor } from "../models/context.js";
import type { AdapterInstance } from "../tuners/common/types.js";
import { type LoraConfig, applyMixedLora, loraKeys, moduleRankAndScale } from "../tuners/lora/index.js";
import { toFloat32 } from "../tensor.js";

export const BASE_ADAPTER = "__base__";

/**
 * Hooks for a batch whose rows name adapters from `adapters` (in that order; row index
 * `adapters.length` means the base model). Per module, A and B of every adapter are zero-padded
 * to the largest rank and stacked into constants the rows gather from.
 */
export function mixedLoraHooks(g: Graph, adapters: readonly AdapterInstance[], rowIndex: Value, dtype: ComputeDtype = "float32"): ModelHooks {
  for (const a of adapters) {
    if (a.tuner.peftType !== "LORA") throw new AdapterStateError(a.name, `mixed-adapter batches support LoRA adapters only, not ${a.tuner.peftType}`);
    const c = a.config as LoraConfig;
    if (c.useDora) throw new AdapterStateError(a.name, "mixed-adapter batches do not support DoRA (as in PEFT)");
    for (const k of a.tensors.keys()) {
      if (!k.includes(".lora_")) throw new AdapterStateError(a.name, `mixed-adapter batches cannot switch the base parameter '${k}' per row (modules_to_save / bias)`);
    }
  }
  const n = adapters.length + 1;
  return {
    linear: (name): LinearHook | null => {
      const users = adapters.filter((a) => a.tensors.has(loraKeys(name).A));
      if (users.length === 0) return null;
      return (site) => {
        const rmax = Math.max(...users.map((a) => a.tensors.get(loraKeys(name).A)!.shape[0]!));
        const { inFeatures: fin, outFeatures: fout } = site;
        const A = new Float32Array(n * rmax * fin);
        const B = new Float32Array(n * fout * rmax);
        const S = new Float32Array(n);
        adapters.forEach((a, idx) => {
          const k = loraKeys(name);
          const ta = a.tensors.get(k.A);
          if (!ta) return;
          const r = ta.shape[0]!;
          const av = toFloat32(ta);
          const bv = toFloat32(a.tensors.get(k.B)!);
          A.set(av, idx * rmax * fin); // rows beyond r stay zero
          for (let o = 0; o < fout; o++) for (let j = 0; j < r; j++) B[idx * fout * rmax + o * rmax + j] = bv[o * r + j]!;
          S[idx] = moduleRankAndScale(a.config as LoraConfig, name).scaling;
        });
        const cast = (d: Float32Array, shape: number[]) => g.constant(castTensor({ dtype: "float32", shape, data: d }, dtype));
        return applyMixedLora(site, { A: cast(A, [n, rmax, fin]), B: cast(B, [n, fout, rmax]), scaling: cast(S, [n]) }, rowIndex);
      };
    },
  };
}
