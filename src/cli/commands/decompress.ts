/** `peft decompress <file> -o <dir>`: a ComPEFT file (from `peft compress compeft`) back to a PEFT adapter folder. */
import type { Command } from "commander";
import { decompressAdapter } from "../../compress/compeft/adapter.js";
import type { CliContext } from "../context.js";

export function register(program: Command, ctx: CliContext): void {
  program
    .command("decompress")
    .description("write the PEFT adapter folder held in a ComPEFT file (checked fully before anything is written)")
    .argument("<file>", "ComPEFT file written by 'peft compress compeft'")
    .requiredOption("-o, --output <dir>", "adapter folder to write (created if missing; an adapter already there is replaced)")
    .option("--json", "print the result as JSON")
    .action((file: string, opts: { output: string; json?: boolean }) => {
      const r = decompressAdapter(file, opts.output);
      if (opts.json) ctx.json(r);
      else ctx.out(`wrote PEFT adapter ${r.dir} (${r.tensors} tensors) from ${file}`);
    });
}
