/**
 * Which modules an adapter applies to, exactly as PEFT's `check_target_module_exists` decides:
 * `exclude_modules` first, never a `modules_to_save` module, then `target_modules` (a regex that
 * must match the whole name, or exact names / `.`-suffixes), then `layers_to_transform`.
 */
import { ConfigError } from "../../errors.js";

export type TargetSpec =
  | { readonly kind: "regex"; readonly pattern: string }
  | { readonly kind: "names"; readonly names: readonly string[] }
  | { readonly kind: "allLinear" };

export interface TargetingConfig {
  readonly targetModules: TargetSpec | null;
  readonly excludeModules: TargetSpec | null;
  readonly modulesToSave: readonly string[];
  readonly layersToTransform: readonly number[] | null;
  readonly layersPattern: readonly string[] | null;
}

/** Python `re` syntax → JavaScript RegExp source (named groups, anchors). */
export function pythonRegex(pattern: string, file = "adapter_config.json"): RegExp {
  const src = pattern.replace(/\(\?P</g, "(?<").replace(/\(\?P=(\w+)\)/g, "\\k<$1>").replace(/\\Z/g, "$").replace(/\\A/g, "^");
  try {
    return new RegExp(`^(?:${src})$`, "u");
  } catch (e) {
    throw new ConfigError(file, "target_modules", `invalid regular expression ${JSON.stringify(pattern)}: ${(e as Error).message}`);
  }
}

export function parseTargetSpec(raw: unknown, file: string, key: string): TargetSpec | null {
  if (raw === null || raw === undefined) return null;
  if (typeof raw === "string") {
    if (raw.toLowerCase() === "all-linear") return { kind: "allLinear" };
    pythonRegex(raw, file);
    return { kind: "regex", pattern: raw };
  }
  if (Array.isArray(raw) && raw.every((x) => typeof x === "string")) return { kind: "names", names: [...raw] };
  throw new ConfigError(file, key, "must be a string (regex or 'all-linear'), a list of module names, or null");
}

/** The spec as PEFT writes it in adapter_config.json. */
export function targetSpecToRaw(spec: TargetSpec | null): string | string[] | null {
  if (!spec) return null;
  if (spec.kind === "allLinear") return "all-linear";
  if (spec.kind === "regex") return spec.pattern;
  return [...spec.names];
}

function matchesSpec(spec: TargetSpec, key: string): boolean {
  if (spec.kind === "regex") return pythonRegex(spec.pattern).test(key);
  if (spec.kind === "names") return spec.names.includes(key) || spec.names.some((n) => key.endsWith(`.${n}`));
  return false;
}

/** True when `key` belongs to a `modules_to_save` module (PEFT: `(^|.*\.)m($|\..*)`). */
export function isModuleToSave(modulesToSave: readonly string[], key: string): boolean {
  return modulesToSave.some((m) => new RegExp(`^(?:.*\\.)?${m}(?:$|\\..*)`, "u").test(key));
}

/**
 * Does the adapter apply to module `key`? `allLinear` is expanded by the caller into a list of
 * names (see `expandAllLinear`) before this is asked.
 */
export function isTargeted(cfg: TargetingConfig, key: string): boolean {
  if (cfg.excludeModules && matchesSpec(cfg.excludeModules, key)) return false;
  if (cfg.modulesToSave.length > 0 && isModuleToSave(cfg.modulesToSave, key)) return false;
  const t = cfg.targetModules;
  if (!t) return false;
  if (t.kind === "allLinear") throw new ConfigError("adapter_config.json", "target_modules", "'all-linear' must be expanded before matching");
  if (t.kind === "regex") return matchesSpec(t, key);
  if (t.names.includes(key)) return true;
  if (!t.names.some((n) => key.endsWith(`.${n}`))) return false;
  const layers = cfg.layersToTransform;
  if (!layers || layers.length === 0) return true;
  let m: RegExpMatchArray | null = null;
  if (!cfg.layersPattern || cfg.layersPattern.length === 0) m = key.match(/^.*?\.[^.]*\.(\d+)\./u);
  else {
    for (const p of cfg.layersPattern) {
      m = key.match(new RegExp(`^.*?\\.${p}\\.(\\d+)\\.`, "u"));
      if (m) break;
    }
  }
  return m !== null && layers.includes(Number(m[1]));
}

/** `all-linear`: every linear layer except the model's output layer (lm_head / classifier). */
export function expandAllLinear(linearNames: readonly string[], outputModules: readonly string[]): TargetSpec {
  const out = new Set(outputModules);
  return { kind: "names", names: linearNames.filter((n) => !out.has(n)) };
}

/** PEFT `get_pattern_key`: the first pattern key that matches the end of `key` (else `key`). */
export function patternKey(patternKeys: readonly string[], key: string): string {
  for (const p of patternKeys) {
    if (new RegExp(`^(?:.*\\.)?(?:${p})$`, "u").test(key)) return p;
  }
  return key;
}

/** A tuner's `resolve` for configs whose `target_modules` may be `all-linear`: expanded against the model's linear layers. */
export function resolveAllLinear<C extends { readonly targetModules: TargetSpec | null }>(c: C, model: { readonly linearModules: readonly { readonly name: string }[]; readonly outputModules: readonly string[] }): C {
  if (c.targetModules?.kind !== "allLinear") return c;
  return { ...c, targetModules: expandAllLinear(model.linearModules.map((m) => m.name), model.outputModules) };
}
