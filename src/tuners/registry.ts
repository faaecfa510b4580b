/**
 * The tuners peft-ts implements, keyed by lower-cased `peft_type` (an explicit list, as mergekit's
 * registry). Adding a method is one folder under `src/tuners/` plus one line here; everything
 * else (loading, saving, training, `peft train --method`, merging, mixed batches, ComPEFT,
 * `peft inspect`) reads the method's `TunerDef`.
 */
import { ConfigError, UnknownTunerError } from "../errors.js";
import type { TunerConfigBase, TunerDef } from "./common/types.js";
import { adalora } from "./adalora/index.js";
import { blockLora } from "./block-lora/index.js";
import { boft } from "./boft/index.js";
import { dylora } from "./dylora/index.js";
import { flora } from "./flora/index.js";
import { fourierft } from "./fourierft/index.js";
import { ia3 } from "./ia3/index.js";
import { increlora } from "./increlora/index.js";
import { lnTuning } from "./ln-tuning/index.js";
import { loha } from "./loha/index.js";
import { lokr } from "./lokr/index.js";
import { lora } from "./lora/index.js";
import { oft } from "./oft/index.js";
import { pTuning } from "./p-tuning/index.js";
import { prefixTuning } from "./prefix-tuning/index.js";
import { promptTuning } from "./prompt-tuning/index.js";
import { svfit } from "./svfit/index.js";
import { sora } from "./sora/index.js";
import { triadaptlora } from "./triadaptlora/index.js";
import { vera } from "./vera/index.js";

/**
 * A tuner seen through the base config type. Safe because the machinery only hands a tuner the
 * config its own `parseConfig`/`resolve` produced.
 */
function erase<C extends TunerConfigBase>(t: TunerDef<C>): TunerDef<TunerConfigBase> {
  return t as unknown as TunerDef<TunerConfigBase>;
}

export const TUNERS = {
  lora: erase(lora),
  ia3: erase(ia3),
  prompt_tuning: erase(promptTuning),
  loha: erase(loha),
  lokr: erase(lokr),
  vera: erase(vera),
  oft: erase(oft),
  ln_tuning: erase(lnTuning),
  fourierft: erase(fourierft),
  adalora: erase(adalora),
  boft: erase(boft),
  p_tuning: erase(pTuning),
  prefix_tuning: erase(prefixTuning),
  dylora: erase(dylora),
  sora: erase(sora),
  svfit: erase(svfit),
  block_lora: erase(blockLora),
  increlora: erase(increlora),
  triadaptlora: erase(triadaptlora),
  flora: erase(flora),
} as const;
export type TunerName = keyof typeof TUNERS;

const extra = new Map<string, TunerDef<TunerConfigBase>>();

/** Every tuner: the built-in ones, then those added with `registerTuner`. */
export function allTuners(): Map<string, TunerDef<TunerConfigBase>> {
  const m = new Map<string, TunerDef<TunerConfigBase>>(Object.entries(TUNERS));
  for (const [k, v] of extra) m.set(k, v);
  return m;
}

/** The tuner for a `peft_type` (`LORA`, `IA3`, `PROMPT_TUNING`, or a registered plugin). */
export function tunerFor(peftType: string, file = "adapter_config.json"): TunerDef<TunerConfigBase> {
  const t = allTuners().get(peftType.toLowerCase());
  if (!t) throw new UnknownTunerError(peftType, [...allTuners().values()].map((x) => x.peftType), file);
  return t;
}

/** The registered tuner for a `peft_type`, or null (for readers that also accept methods peft-ts does not implement). */
export function findTuner(peftType: string): TunerDef<TunerConfigBase> | null {
  return allTuners().get(peftType.toLowerCase()) ?? null;
}

/** The tuner `peft train --method <method>` names (`lora`, `prefix-tuning`). */
export function tunerForMethod(method: string, where = "--method"): TunerDef<TunerConfigBase> {
  const t = [...allTuners().values()].find((x) => x.method === method);
  if (!t) throw new ConfigError("peft train", where, `unknown method '${method}'; peft-ts trains: ${trainMethods().join(", ")}`);
  return t;
}

/** The names `--method` accepts, in registry order. */
export function trainMethods(): string[] {
  return [...allTuners().values()].map((t) => t.method);
}

/** Register a plugin tuner; names are lower-case, unique, with a unique tensor prefix and method name (PEFT's rules). */
export function registerTuner(def: TunerDef<TunerConfigBase>): void {
  if (def.name !== def.name.toLowerCase() || def.name !== def.peftType.toLowerCase()) {
    throw new UnknownTunerError(def.peftType, [], "registerTuner: name must be the lower-cased peft_type");
  }
  const existing = allTuners();
  if (existing.has(def.name)) throw new UnknownTunerError(def.peftType, [...existing.keys()], "registerTuner: name already registered");
  if ([...existing.values()].some((t) => t.prefix === def.prefix)) {
    throw new UnknownTunerError(def.peftType, [...existing.keys()], `registerTuner: prefix '${def.prefix}' already used`);
  }
  if ([...existing.values()].some((t) => t.method === def.method)) {
    throw new UnknownTunerError(def.peftType, trainMethods(), `registerTuner: method name '${def.method}' already used`);
  }
  extra.set(def.name, def);
}
