/** The tuners peft-ts implements, keyed by lower-cased `peft_type` (an explicit list, as mergekit's registry). */
import { UnknownTunerError } from "../errors.js";
import type { TunerConfigBase, TunerDef } from "./common/types.js";
import { ia3 } from "./ia3/index.js";
import { lora } from "./lora/index.js";
import { promptTuning } from "./prompt-tuning/index.js";

/**
 * A tuner seen through the base config type. Safe because the machinery only hands a tuner the
 * config its own `parseConfig`/`resolve` produced.
 */
function erase<C extends TunerConfigBase>(t: TunerDef<C>): TunerDef<TunerConfigBase> {
  return t as unknown as TunerDef<TunerConfigBase>;
}

export const TUNERS = { lora: erase(lora), ia3: erase(ia3), prompt_tuning: erase(promptTuning) } as const;
export type TunerName = keyof typeof TUNERS;

const extra = new Map<string, TunerDef<TunerConfigBase>>();

function all(): Map<string, TunerDef<TunerConfigBase>> {
  const m = new Map<string, TunerDef<TunerConfigBase>>(Object.entries(TUNERS));
  for (const [k, v] of extra) m.set(k, v);
  return m;
}

/** The tuner for a `peft_type` (`LORA`, `IA3`, `PROMPT_TUNING`, or a registered plugin). */
export function tunerFor(peftType: string, file = "adapter_config.json"): TunerDef<TunerConfigBase> {
  const t = all().get(peftType.toLowerCase());
  if (!t) throw new UnknownTunerError(peftType, [...all().values()].map((x) => x.peftType), file);
  return t;
}

/** Register a plugin tuner; names are lower-case, unique, with a unique tensor prefix (PEFT's rules). */
export function registerTuner(def: TunerDef<TunerConfigBase>): void {
  if (def.name !== def.name.toLowerCase() || def.name !== def.peftType.toLowerCase()) {
    throw new UnknownTunerError(def.peftType, [], "registerTuner: name must be the lower-cased peft_type");
  }
  const existing = all();
  if (existing.has(def.name)) throw new UnknownTunerError(def.peftType, [...existing.keys()], "registerTuner: name already registered");
  if ([...existing.values()].some((t) => t.prefix === def.prefix)) {
    throw new UnknownTunerError(def.peftType, [...existing.keys()], `registerTuner: prefix '${def.prefix}' already used`);
  }
  extra.set(def.name, def);
}
