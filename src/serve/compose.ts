/**
 * LoRAX's per-request composition: `adapter_parameters: {ids, weights, merge_strategy, density,
 * majority_sign_method}` combines loaded LoRA adapters with the project's merge code (PEFT's
 * `add_weighted_adapter`: linear, ties, dare_linear, dare_ties) into a new adapter. The result is
 * cached in the adapter registry under a name derived from the parameters (so the same mix is
 * computed once, evicted like any adapter and rebuilt on demand), and forgotten when a source
 * adapter is reloaded or unloaded.
 */
import { createHash } from "node:crypto";
import { z } from "zod";
import { InvalidRequestError, UnknownModelError } from "../errors.js";
import { addWeightedLoraAdapter } from "../compose/combine-adapters.js";
import type { PeftModel } from "../peft/peft-model.js";
import type { Lease } from "./adapters.js";
import { type ServeContext, leaseFor, modelNames } from "./context.js";

/** LoRAX's `adapter_parameters` (its defaults: linear, density 1, majority sign by total). */
export const AdapterParameters = z.object({
  ids: z.array(z.string().min(1)).min(1).max(16),
  weights: z.array(z.number().finite()).min(1).max(16),
  merge_strategy: z.enum(["linear", "ties", "dare_linear", "dare_ties"]).default("linear"),
  density: z.number().gt(0).max(1).default(1),
  majority_sign_method: z.enum(["total", "frequency"]).default("total"),
});

export type AdapterParametersT = z.infer<typeof AdapterParameters>;

/** The registry name of a composition (a hash of its normalised parameters). */
export function compositionName(p: AdapterParametersT): string {
  const key = JSON.stringify([p.ids, p.weights, p.merge_strategy, p.density, p.majority_sign_method]);
  return `mix_${createHash("sha256").update(key).digest("hex").slice(0, 16)}`;
}

/**
 * The adapter a generation request runs on: `adapter_parameters` when given (with `model` the
 * base model or left out), else the adapter `model` names; null for the base model.
 */
export async function leaseForRequest(ctx: ServeContext, pm: PeftModel, model: string | undefined, params: AdapterParametersT | null, signal: AbortSignal): Promise<Lease | null> {
  if (params === null) return await leaseFor(ctx, model, signal);
  if (model !== undefined && model !== ctx.model.id) {
    throw new InvalidRequestError("model", `with adapter_parameters, model must be the base model '${ctx.model.id}' (the adapters are named in adapter_parameters.ids)`);
  }
  if (params.ids.length !== params.weights.length) throw new InvalidRequestError("adapter_parameters.weights", `${params.weights.length} weights for ${params.ids.length} ids; give one weight per adapter`);
  for (const id of params.ids) if (!ctx.adapters.has(id)) throw new UnknownModelError(id, modelNames(ctx));
  const name = compositionName(params);
  const known = () => modelNames(ctx);
  ctx.adapters.addBuilt(name, `adapter_parameters ${JSON.stringify(params)}`, params.ids, async (id) => {
    const holds: Lease[] = [];
    try {
      for (const src of params.ids) holds.push(await ctx.adapters.hold(src, known));
      addWeightedLoraAdapter(
        pm,
        holds.map((h) => h.id),
        params.weights,
        id,
        {
          combinationType: params.merge_strategy,
          ...(params.merge_strategy === "linear" ? {} : { density: params.density }),
          ...(params.merge_strategy.endsWith("ties") ? { majoritySignMethod: params.majority_sign_method } : {}),
        },
      );
    } finally {
      for (const h of holds) h.release();
    }
  });
  return await ctx.adapters.acquire(name, { signal, known });
}
