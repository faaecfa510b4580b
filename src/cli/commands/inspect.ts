/** `peft inspect <path>`: what a model folder, adapter folder or safetensors file holds (headers only). */
import type { Command } from "commander";
import type { CliContext } from "../context.js";
import type { readRunImportance } from "../../runs/importance.js";

export function register(program: Command, ctx: CliContext): void {
  program
    .command("inspect")
    .description("show the architecture, config, parameter counts and dtypes of a model folder, an adapter folder or a .safetensors file (reads headers only)")
    .argument("<path>", "model folder (config.json + safetensors), adapter folder (adapter_config.json + adapter_model.safetensors) or .safetensors file")
    .option("--json", "print the report as JSON")
    .option("--tensors", "also list every tensor (name, dtype, shape, parameters)")
    .option("--importance", "<path> is a 'peft train' run: print its layer importance (importance.json), most important first")
    .action(async (path: string, opts: { json?: boolean; tensors?: boolean; importance?: boolean }) => {
      if (opts.importance) {
        const { readRunImportance } = await import("../../runs/importance.js");
        const imp = readRunImportance(path);
        if (opts.json) ctx.json(imp);
        else ctx.out(formatImportance(path, imp));
        return;
      }
      const [{ inspectPath }, { formatInspectReport }] = await Promise.all([import("../inspect/inspect.js"), import("../inspect/format.js")]);
      const report = inspectPath(path, { tensors: opts.tensors === true });
      if (opts.json) ctx.json(report);
      else ctx.out(formatInspectReport(report));
    });
}

function formatImportance(path: string, imp: ReturnType<typeof readRunImportance>): string {
  const e = (x: number) => x.toExponential(3);
  const lines = [`layer importance of ${path}: Σ over ${imp.steps} steps of |⟨gradient, update⟩| per layer (first-order loss change)${imp.resumed ? "; the steps after the last resume only" : ""}`];
  lines.push("rank  layer  taylor      grad²/step  ‖Δθ‖        params");
  for (const l of [...imp.layers].sort((a, b) => a.rank - b.rank)) {
    lines.push(`${String(l.rank).padStart(4)}  ${String(l.layer).padStart(5)}  ${e(l.taylor).padEnd(10)}  ${e(l.gradSq).padEnd(10)}  ${e(l.update).padEnd(10)}  ${l.params.toLocaleString("en-US")}`);
  }
  if (imp.other) lines.push(`   –  other  ${e(imp.other.taylor).padEnd(10)}  ${e(imp.other.gradSq).padEnd(10)}  ${e(imp.other.update).padEnd(10)}  ${imp.other.params.toLocaleString("en-US")} (outside the layers: head, prompt)`);
  return lines.join("\n");
}
