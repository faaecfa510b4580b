/**
 * The one output option of every writing command: `-o, --out <path>` (the older spelling
 * `--output` still works, hidden from the help) and `--overwrite`. The rule itself (never an
 * input, an existing output only with --overwrite) is `checkOutput` in `src/io/output.ts`.
 */
import { type Command, Option } from "commander";

export interface OutputFlags {
  readonly out: string;
  readonly overwrite?: boolean;
}

/** Adds `-o, --out <path>`, its hidden alias `--output <path>` and `--overwrite` to `cmd`. */
export function addOutputOption(cmd: Command, description: string, opts: { kind: "file" | "dir"; required?: boolean; defaultValue?: string }): Command {
  const out = new Option(`-o, --out <${opts.kind}>`, description);
  if (opts.required !== false) out.makeOptionMandatory();
  if (opts.defaultValue !== undefined) out.default(opts.defaultValue);
  cmd.addOption(out);
  cmd.addOption(new Option(`--output <${opts.kind}>`, "alias of --out").hideHelp());
  // the alias fills --out while the options are parsed, before commander checks mandatory ones
  cmd.on("option:output", (v: string) => cmd.setOptionValueWithSource("out", v, "cli"));
  cmd.option("--overwrite", "replace an existing --out (an output that is, contains or is inside an input is always refused)");
  return cmd;
}
