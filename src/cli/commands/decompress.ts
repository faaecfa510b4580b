/** `peft decompress <file> --out <dir>`: a ComPEFT file (from `peft compress compeft`) back to a PEFT adapter folder. */
import type { Command } from "commander";
import { checkOutput } from "../../io/output.js";
import type { CliContext } from "../context.js";
import { addOutputOption } from "../output-option.js";

export function register(program: Command, ctx: CliContext): void {
  const cmd = program
    .command("decompress")
    .description("write the PEFT adapter folder held in a ComPEFT file (checked fully before anything is written)")
    .argument("<file>", "ComPEFT file written by 'peft compress compeft'")
    .option("--json", "print the result as JSON");
  addOutputOption(cmd, "adapter folder to write (created if missing)", { kind: "dir" }).action(async (file: string, opts: { out: string; overwrite?: boolean; json?: boolean }) => {
      checkOutput({ out: opts.out, kind: "folder", inputs: [file], overwrite: opts.overwrite === true });
      const { decompressAdapter } = await import("../../compress/compeft/adapter.js");
      const r = decompressAdapter(file, opts.out);
      if (opts.json) ctx.json(r);
      else ctx.out(`wrote PEFT adapter ${r.dir} (${r.tensors} tensors) from ${file}`);
    });
}
