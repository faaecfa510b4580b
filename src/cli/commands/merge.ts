/**
 * `peft merge <config.yml> --out <out>`: runs a mergekit-style YAML configuration (merge_method,
 * base_model, models with parameters, dtype) and writes a model folder (config.json +
 * model.safetensors, streamed tensor by tensor) or, when every input is a LoRA adapter, a PEFT
 * adapter folder. See docs/merging.md.
 */
import type { Command } from "commander";
import { checkOutput } from "../../io/output.js";
import type { CliContext } from "../context.js";
import { addOutputOption } from "../output-option.js";
import { progressBar } from "../progress-bar.js";

export function register(program: Command, ctx: CliContext): void {
  const cmd = program
    .command("merge")
    .description("merge models or LoRA adapters as described by a mergekit YAML configuration (ties, dare_ties, task_arithmetic, linear, pcb, …)")
    .argument("<config>", "mergekit-style YAML file (merge_method, base_model, models, parameters, dtype)")
    .option("--allow-non-finite", "accept NaN/Infinity in the adapters and the merged adapter (default: an error)")
    .option("--no-progress", "no progress bar on stderr (a bar is drawn only when stderr is a terminal)")
    .option("--json", "print the result as JSON");
  addOutputOption(cmd, "output folder: a model (config.json + model.safetensors) or a PEFT adapter when the inputs are adapters", { kind: "dir" }).action(
    async (configPath: string, opts: { out: string; overwrite?: boolean; allowNonFinite?: boolean; progress: boolean; json?: boolean }) => {
      const [{ readMergeConfig }, { runMergeConfig }, { USE_LITE_BASE, openBase }] = await Promise.all([
        import("../../compose/merge-config.js"),
        import("../../compose/merge-run.js"),
        import("../base-model.js"),
      ]);
      const cfg = readMergeConfig(configPath);
      checkOutput({ out: opts.out, kind: "folder", inputs: [configPath, cfg.baseModel, ...cfg.models.map((m) => m.model)], overwrite: opts.overwrite === true });
      for (const w of cfg.warnings) ctx.err(`warning: ${w}`);
      const base = cfg.baseModel === USE_LITE_BASE ? openBase(USE_LITE_BASE, cfg.models.map((m) => m.model)) : null;
      // model merges stream tensor by tensor: a bar on a terminal, nothing otherwise
      const bar = progressBar(ctx, { label: "merge", unit: "tensors", enabled: opts.progress });
      const run = () =>
        runMergeConfig(cfg, {
          outDir: opts.out,
          allowNonFinite: opts.allowNonFinite === true,
          ...(base !== null && typeof base !== "string" ? { baseModel: base } : {}),
          ...(bar ? { onTensor: (name: string, index: number, total: number) => bar.update(index + 1, total, name) } : {}),
        });
      let r: ReturnType<typeof run>;
      try {
        r = run();
      } finally {
        bar?.stop();
      }
      if (opts.json) ctx.json({ kind: r.kind, outDir: r.outDir, tensors: r.tensors, merged: r.merged.length, method: cfg.mergeMethod });
      else ctx.out(`wrote ${r.kind} ${r.outDir}: ${cfg.mergeMethod} of ${cfg.models.length} inputs, ${r.merged.length} ${r.kind === "model" ? "tensors" : "modules/copies"} merged`);
    },
  );
}
