/**
 * `peft combine --adapters <dirA>,<dirB>,… --weights 0.7,0.5 --type ties [--density 0.5]
 * [--svd-rank 4] [--svd-clamp q] [--majority-sign total|frequency] [--seed n] --base <model dir>
 * --out <dir>`: PEFT's `add_weighted_adapter` from adapter folders to a new adapter folder.
 */
import { type Command, InvalidArgumentError, Option } from "commander";
import { ConfigError } from "../../errors.js";
import { COMBINATION_TYPES, type CombinationType } from "../../compose/combination-types.js";
import { checkOutput } from "../../io/output.js";
import type { CliContext } from "../context.js";
import { addOutputOption } from "../output-option.js";
import { progressBar } from "../progress-bar.js";

function list(v: string): string[] {
  const parts = v.split(",").map((s) => s.trim());
  if (parts.some((s) => s === "")) throw new InvalidArgumentError("expected a comma-separated list without empty entries");
  return parts;
}

function numberList(v: string): number[] {
  return list(v).map((s) => {
    const n = Number(s);
    if (!Number.isFinite(n)) throw new InvalidArgumentError(`'${s}' is not a number`);
    return n;
  });
}

function fraction(v: string): number {
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0 || n > 1) throw new InvalidArgumentError("must be a number in [0, 1]");
  return n;
}

function positiveInt(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError("must be a positive integer");
  return n;
}

function nonNegativeInt(v: string): number {
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < 0) throw new InvalidArgumentError("must be a non-negative integer");
  return n;
}

interface CombineFlags {
  adapters: string[];
  weights: number[];
  type: CombinationType;
  density?: number;
  svdRank?: number;
  svdClamp?: number;
  majoritySign: "total" | "frequency";
  seed: number;
  base: string;
  out: string;
  overwrite?: boolean;
  allowNonFinite?: boolean;
  progress: boolean;
  json?: boolean;
}

export function register(program: Command, ctx: CliContext): void {
  const cmd = program
    .command("combine")
    .description("combine LoRA adapters into a new adapter folder, as PEFT's add_weighted_adapter")
    .requiredOption("--adapters <dirs>", "comma-separated PEFT LoRA adapter folders", list)
    .requiredOption("--weights <ws>", "comma-separated weight per adapter (may be negative)", numberList)
    .addOption(new Option("--type <type>", "combination type").choices([...COMBINATION_TYPES]).default("svd"))
    .option("--density <d>", "fraction of entries kept by ties / dare / magnitude_prune types", fraction)
    .option("--svd-rank <k>", "rank of svd-based results (default: the largest adapter rank)", positiveInt)
    .option("--svd-clamp <q>", "clamp svd factors at this quantile of their entries", fraction)
    .addOption(new Option("--majority-sign <method>", "sign election of ties types").choices(["total", "frequency"]).default("total"))
    .option("--seed <n>", "seed of the dare variants' random drops", nonNegativeInt, 0)
    .requiredOption("--base <dir>", "base model the adapters were trained on: a model folder (config.json + model.safetensors) or 'use-lite'")
    .option("--allow-non-finite", "accept NaN/Infinity in the adapters and the result (default: an error)")
    .option("--no-progress", "no progress bar on stderr (a bar is drawn only when stderr is a terminal)")
    .option("--json", "print the result as JSON");
  addOutputOption(cmd, "output adapter folder (adapter_config.json + adapter_model.safetensors)", { kind: "dir" }).action(async (f: CombineFlags) => {
    checkOutput({ out: f.out, kind: "folder", inputs: [...f.adapters, f.base], overwrite: f.overwrite === true });
    if (f.weights.length !== f.adapters.length) {
      throw new ConfigError("command line", "--weights", `has ${f.weights.length} values for ${f.adapters.length} adapters; give one weight per adapter`);
    }
    const [{ combineAdapterDirs }, { openBase }] = await Promise.all([import("../../compose/combine-adapters.js"), import("../base-model.js")]);
    // a bar on a terminal (long svd combinations), nothing otherwise
    const bar = progressBar(ctx, { label: "combine", unit: "modules", enabled: f.progress });
    let r: ReturnType<typeof combineAdapterDirs>;
    try {
      r = combineAdapterDirs({
        base: openBase(f.base, f.adapters),
        adapters: f.adapters,
        weights: f.weights,
        combinationType: f.type,
        density: f.density ?? null,
        svdRank: f.svdRank ?? null,
        svdClamp: f.svdClamp ?? null,
        majoritySignMethod: f.majoritySign,
        seed: f.seed,
        outDir: f.out,
        allowNonFinite: f.allowNonFinite === true,
        ...(bar ? { onModule: (module: string, i: number, total: number) => bar.update(i, total, module) } : {}),
      });
    } finally {
      bar?.stop();
    }
    for (const w of r.warnings) ctx.err(`warning: ${w}`);
    if (f.json) ctx.json(r);
    else ctx.out(`wrote ${r.outDir}: ${r.combinationType} of ${f.adapters.length} adapters, r=${r.r}, ${r.modules} modules`);
  });
}
