/**
 * `peft export-lora --base <model dir | use-lite> --adapter <dir> [--rank b] --out <dir>`: a LoRA
 * variant's adapter (DyLoRA, SoRA, SVFit, Block-LoRA) written as a plain PEFT LoRA adapter folder
 * — DyLoRA at any rank b, SoRA with its pruned rank per module in `rank_pattern` — that loads,
 * serves, merges and compresses as any LoRA adapter.
 */
import { type Command, InvalidArgumentError } from "commander";
import { checkOutput } from "../../io/output.js";
import type { CliContext } from "../context.js";
import { addOutputOption } from "../output-option.js";

interface ExportFlags {
  base: string;
  adapter: string;
  rank?: number;
  out: string;
  overwrite?: boolean;
  json?: boolean;
}

function positiveInt(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError("must be a positive integer");
  return n;
}

export function register(program: Command, ctx: CliContext): void {
  const cmd = program
    .command("export-lora")
    .description("write a DyLoRA / SoRA / SVFit / Block-LoRA adapter as a plain PEFT LoRA adapter folder")
    .requiredOption("--base <dir>", "base model the adapter was trained on: a model folder or 'use-lite'")
    .requiredOption("--adapter <dir>", "the adapter folder")
    .option("--rank <b>", "DyLoRA: the rank to keep (default: its full rank r)", positiveInt)
    .option("--json", "print the result as JSON");
  addOutputOption(cmd, "output LoRA adapter folder", { kind: "dir" }).action(async (f: ExportFlags) => {
    const [{ loadModel }, { saveAsLora }, { PeftModel }, { openBase }] = await Promise.all([import("../../models/load.js"), import("../../peft/export-lora.js"), import("../../peft/peft-model.js"), import("../base-model.js")]);
    checkOutput({ out: f.out, kind: "folder", inputs: [f.adapter, f.base], overwrite: f.overwrite === true });
    const base = openBase(f.base, [f.adapter]);
    const pm = PeftModel.fromPretrained(typeof base === "string" ? loadModel(base) : base, f.adapter);
    const a = saveAsLora(pm, "default", f.out, { rank: f.rank ?? null });
    const ranks = [...a.tensors].filter(([k]) => k.endsWith(".lora_A.weight")).map(([, t]) => t.shape[0]!);
    const result = { out: f.out, from: pm.adapter("default").tuner.peftType, modules: ranks.length, ranks: [...new Set(ranks)].sort((x, y) => x - y) };
    if (f.json) ctx.json(result);
    else ctx.out(`wrote ${f.out}: ${result.from} as LoRA, ${result.modules} modules, rank ${result.ranks.join("/")}`);
  });
}
