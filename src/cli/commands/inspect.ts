/** `peft inspect <path>`: what a model folder, adapter folder or safetensors file holds (headers only). */
import type { Command } from "commander";
import type { CliContext } from "../context.js";

export function register(program: Command, ctx: CliContext): void {
  program
    .command("inspect")
    .description("show the architecture, config, parameter counts and dtypes of a model folder, an adapter folder or a .safetensors file (reads headers only)")
    .argument("<path>", "model folder (config.json + safetensors), adapter folder (adapter_config.json + adapter_model.safetensors) or .safetensors file")
    .option("--json", "print the report as JSON")
    .option("--tensors", "also list every tensor (name, dtype, shape, parameters)")
    .action(async (path: string, opts: { json?: boolean; tensors?: boolean }) => {
      const [{ inspectPath }, { formatInspectReport }] = await Promise.all([import("../inspect/inspect.js"), import("../inspect/format.js")]);
      const report = inspectPath(path, { tensors: opts.tensors === true });
      if (opts.json) ctx.json(report);
      else ctx.out(formatInspectReport(report));
    });
}
