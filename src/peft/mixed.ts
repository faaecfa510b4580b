/**
 * Mixed-adapter batches: one graph, each row using its own adapter (or none). Any tuner that
 * declares `mixedBatch` takes part: its adapters' linear hooks are applied to the batch and each
 * row keeps the update of its own adapter; a tuner may give a one-graph `stacked` form instead
 * (LoRA gathers zero-padded stacked factors per row).
 */
import { AdapterStateError } from "../errors.js";
import * as G from "../graph/api.js";
import type { Graph } from "../graph/graph.js";
import type { Value } from "../graph/types.js";
import { type ComputeDtype, type ConvHook, type ConvSite, type LinearHook, type LinearSite, type ModelHooks, castTensor } from "../models/context.js";
import type { AdapterInstance, TunerDef } from "../tuners/common/types.js";

export const BASE_ADAPTER = "__base__";

/** Throws AdapterStateError when `a` cannot serve rows of a mixed-adapter batch. */
export function checkMixable(a: AdapterInstance): void {
  const mb = a.tuner.mixedBatch;
  if (!mb) throw new AdapterStateError(a.name, `${a.tuner.peftType} adapters cannot serve rows of a mixed-adapter batch`);
  mb.check?.(a);
  for (const k of a.tensors.keys()) {
    if (a.tuner.role(k) === null) throw new AdapterStateError(a.name, `mixed-adapter batches cannot switch the base parameter '${k}' per row (modules_to_save / bias)`);
  }
}

/** `[batch]` row selector as a 0/1 multiplier broadcastable against `like` ([batch, …]). */
function rowMask(rowIndex: Value, idx: number, like: Value, dtype: ComputeDtype): Value {
  const m = G.cast(G.equal(rowIndex, rowIndex.graph.scalar(idx, "int64")), dtype);
  return G.reshape(m, [-1, ...Array.from({ length: like.rank - 1 }, () => 1)]);
}

/**
 * Hooks for a batch whose rows name adapters from `adapters` (in that order; row index
 * `adapters.length` means the base model).
 */
export function mixedHooks(g: Graph, adapters: readonly AdapterInstance[], rowIndex: Value, dtype: ComputeDtype = "float32"): ModelHooks {
  for (const a of adapters) checkMixable(a);
  const hooks = adapters.map((a) => {
    const cache = new Map<string, Value>();
    return a.tuner.hooks(
      a,
      (key) => {
        let v = cache.get(key);
        if (!v) {
          v = g.constant(castTensor(a.tensors.get(key)!, dtype));
          cache.set(key, v);
        }
        return v;
      },
      { training: false, seed: 0 },
    );
  });
  return {
    linear: (name): LinearHook | null => {
      const users = adapters.map((_, i) => hooks[i]!.linear?.(name) ?? null);
      if (users.every((h) => h === null)) return null;
      return (site) => {
        const baseOut = site.base(site.x);
        const s: LinearSite = { ...site, base: (x) => (x === site.x ? baseOut : site.base(x)) };
        let out = baseOut;
        const tuners = new Set<TunerDef>();
        adapters.forEach((a, i) => users[i] && tuners.add(a.tuner));
        for (const t of tuners) {
          const stacked = t.mixedBatch?.stacked;
          if (stacked) {
            const d = stacked(s, adapters.map((a) => (a.tuner === t ? a : null)), rowIndex, dtype);
            if (d) out = G.add(out, d);
            continue;
          }
          adapters.forEach((a, i) => {
            const h = users[i];
            if (!h || a.tuner !== t) return;
            const delta = G.sub(h(s), baseOut);
            out = G.add(out, G.mul(delta, rowMask(rowIndex, i, delta, dtype)));
          });
        }
        return out;
      };
    },
    // convolution layers: each row keeps its own adapter's change of the layer's output
    conv: (name): ConvHook | null => {
      const users = adapters.map((_, i) => hooks[i]!.conv?.(name) ?? null);
      if (users.every((h) => h === null)) return null;
      return (site) => {
        const baseOut = site.base(site.x);
        const s: ConvSite = { ...site, base: (x) => (x === site.x ? baseOut : site.base(x)) };
        let out = baseOut;
        users.forEach((h, i) => {
          if (!h) return;
          const delta = G.sub(h(s), baseOut);
          out = G.add(out, G.mul(delta, rowMask(rowIndex, i, delta, dtype)));
        });
        return out;
      };
    },
  };
}
