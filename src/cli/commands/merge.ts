/**
 * `peft merge <config.yml> --out <out>`: runs a mergekit-style YAML configuration (merge_method,
 * base_model, models with parameters, dtype) and writes a model folder (config.json +
 * model.safetensors, streamed tensor by tensor) or, when every input is a LoRA adapter, a PEFT
 * adapter folder. See docs/merging.md.
 */
import type { Command } from "commander";
import { readMergeConfig } from "../../compose/merge-config.js";
import { runMergeConfig } from "../../compose/merge-run.js";
import { checkOutput } from "../../io/output.js";
import type { CliContext } from "../context.js";
import { USE_LITE_BASE, openBase } from "../base-model.js";
import { addOutputOption } from "../output-option.js";

export function register(program: Command, ctx: CliContext): void {
  const cmd = program
    .command("merge")
    .description("merge models or LoRA adapters as described by a mergekit YAML configuration (ties, dare_ties, task_arithmetic, linear, pcb, …)")
    .argument("<config>", "mergekit-style YAML file (merge_method, base_model, models, parameters, dtype)")
    .option("--allow-non-finite", "accept NaN/Infinity in the adapters and the merged adapter (default: an error)")
    .option("--json", "print the result as JSON");
  addOutputOption(cmd, "output folder: a model (config.json + model.safetensors) or a PEFT adapter when the inputs are adapters", { kind: "dir" }).action(
    (configPath: string, opts: { out: string; overwrite?: boolean; allowNonFinite?: boolean; json?: boolean }) => {
      const cfg = readMergeConfig(configPath);
      checkOutput({ out: opts.out, kind: "folder", inputs: [configPath, cfg.baseModel, ...cfg.models.map((m) => m.model)], overwrite: opts.overwrite === true });
      for (const w of cfg.warnings) ctx.err(`warning: ${w}`);
      const base = cfg.baseModel === USE_LITE_BASE ? openBase(USE_LITE_BASE, cfg.models.map((m) => m.model)) : null;
      const r = runMergeConfig(cfg, { outDir: opts.out, allowNonFinite: opts.allowNonFinite === true, ...(base !== null && typeof base !== "string" ? { baseModel: base } : {}) });
      if (opts.json) ctx.json({ kind: r.kind, outDir: r.outDir, tensors: r.tensors, merged: r.merged.length, method: cfg.mergeMethod });
      else ctx.out(`wrote ${r.kind} ${r.outDir}: ${cfg.mergeMethod} of ${cfg.models.length} inputs, ${r.merged.length} ${r.kind === "model" ? "tensors" : "modules/copies"} merged`);
    },
  );
}
