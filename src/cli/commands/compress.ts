/**
 * `peft compress compeft <adapter> --out <file>`: ComPEFT-compresses a PEFT adapter folder (LoRA
 * factors and (IA)³ vectors sparsified to `--density` and quantised to ±α·std; heads stored as
 * they are; adapter_config.json in the file's header). `peft decompress` restores the folder.
 */
import { statSync } from "node:fs";
import { join } from "node:path";
import { type Command, InvalidArgumentError } from "commander";
import { checkOutput } from "../../io/output.js";
import type { CliContext } from "../context.js";
import { addOutputOption } from "../output-option.js";

function density(v: string): number {
  const n = Number(v);
  if (!(Number.isFinite(n) && n > 0 && n <= 1)) throw new InvalidArgumentError("must be a number in (0, 1]");
  return n;
}

function positive(v: string): number {
  const n = Number(v);
  if (!(Number.isFinite(n) && n > 0)) throw new InvalidArgumentError("must be a finite number > 0");
  return n;
}

export function register(program: Command, ctx: CliContext): void {
  const compress = program.command("compress").description("compress an adapter for storage or transfer (see docs/compression.md)");
  const cmd = compress
    .command("compeft")
    .description("ComPEFT: keep the largest --density fraction of the adapter's update entries as ±alpha·std (LoRA baseline 0, (IA)³ baseline 1)")
    .argument("<adapter>", "PEFT adapter folder (adapter_config.json + adapter_model.safetensors)")
    .option("--density <d>", "fraction of entries kept, in (0, 1]", density, 0.1)
    .option("--alpha <a>", "kept magnitude in units of the update's standard deviation", positive, 1)
    .option("--json", "print the result as JSON");
  addOutputOption(cmd, "ComPEFT file to write (atomically)", { kind: "file" }).action(async (adapter: string, opts: { out: string; overwrite?: boolean; density: number; alpha: number; json?: boolean }) => {
      checkOutput({ out: opts.out, kind: "file", inputs: [adapter], overwrite: opts.overwrite === true });
      const [{ compressAdapter }, { ADAPTER_WEIGHTS_NAME }] = await Promise.all([import("../../compress/compeft/adapter.js"), import("../../io/peft-files.js")]);
      const r = compressAdapter(adapter, opts.out, { density: opts.density, alpha: opts.alpha });
      const source = statSync(join(adapter, ADAPTER_WEIGHTS_NAME)).size;
      if (opts.json) {
        ctx.json({ ...r, density: opts.density, alpha: opts.alpha, sourceBytes: source });
        return;
      }
      ctx.out(
        `wrote ${r.file}: ComPEFT of a ${r.peftType} adapter, kept ${r.kept.toLocaleString("en-US")} of ${r.sparseParams.toLocaleString("en-US")} ` +
          `entries (density ${opts.density}, alpha ${opts.alpha}), ${r.denseTensors} tensors stored dense (${r.denseParams.toLocaleString("en-US")} values); ` +
          `${r.bytes.toLocaleString("en-US")} bytes vs ${source.toLocaleString("en-US")} in ${ADAPTER_WEIGHTS_NAME} (${(source / r.bytes).toFixed(1)}× smaller)`,
      );
    });
}
