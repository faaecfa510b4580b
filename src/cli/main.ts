/**
 * The `peft` command line. Each command lives in its own file under `./commands/` and is listed
 * once in `COMMANDS` (an explicit list: nothing registers itself through an import side effect).
 * To add a command: write `commands/<name>.ts` exporting `register(program, ctx)`, then add one
 * import and one entry below.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { Command, CommanderError } from "commander";
import { PeftError } from "../errors.js";
import { wrapFsError } from "../io/fs-error.js";
import { packageRoot } from "../util/paths.js";
import * as atlas from "./commands/atlas.js";
import * as combine from "./commands/combine.js";
import * as exportLora from "./commands/export-lora.js";
import * as compress from "./commands/compress.js";
import * as decompress from "./commands/decompress.js";
import * as demo from "./commands/demo.js";
import * as evaluate from "./commands/eval.js";
import * as forward from "./commands/forward.js";
import * as generate from "./commands/generate.js";
import * as inspect from "./commands/inspect.js";
import * as jobs from "./commands/jobs.js";
import * as merge from "./commands/merge.js";
import * as search from "./commands/search.js";
import * as intrinsicDim from "./commands/intrinsic-dim.js";
import * as serve from "./commands/serve.js";
import * as train from "./commands/train.js";
import * as worker from "./commands/worker.js";
import { type CliContext, type CliIo, type CommandModule, createContext, processIo } from "./context.js";

/** Every `peft` sub-command, in the order `peft --help` lists them. */
export const COMMANDS: readonly CommandModule[] = [inspect, forward, generate, combine, exportLora, merge, compress, decompress, train, atlas, evaluate, demo, search, intrinsicDim, serve, jobs, worker];

/** The `version` field of peft-ts's package.json. */
export function packageVersion(): string {
  const pj = JSON.parse(readFileSync(join(packageRoot(), "package.json"), "utf8")) as { version?: unknown };
  return typeof pj.version === "string" ? pj.version : "0.0.0";
}

/** The command file of each registered top-level command (for its `prepare`). */
const commandFiles = new WeakMap<Command, CommandModule>();

/** The commander program with every command registered; output and exits go through `ctx`. */
export function buildProgram(ctx: CliContext): Command {
  const program = new Command("peft")
    .description("Adapt, compose, compress and serve pre-trained models with small parameter blocks (Hugging Face PEFT files, onnxruntime).")
    .version(packageVersion(), "-V, --version", "print the peft-ts version")
    .configureOutput({ writeOut: (s) => ctx.io.stdout(s), writeErr: (s) => ctx.io.stderr(s) })
    .showHelpAfterError("(run 'peft --help' for usage)")
    .exitOverride();
  for (const c of COMMANDS) {
    const before = program.commands.length;
    c.register(program, ctx);
    for (const cmd of program.commands.slice(before)) commandFiles.set(cmd, c);
  }
  for (const c of program.commands) applyConventions(c, "peft");
  return program;
}

/**
 * Runs the `prepare` of the command `args` invoke (`peft <cmd> …` or `peft help <cmd>`), so
 * only that command loads what its options need; `peft --help` prepares nothing.
 */
export async function prepareInvokedCommand(program: Command, args: readonly string[]): Promise<void> {
  const name = args[0] === "help" ? args[1] : args[0];
  if (name === undefined || name.startsWith("-")) return;
  const cmd = program.commands.find((c) => c.name() === name || c.aliases().includes(name));
  if (cmd) await commandFiles.get(cmd)?.prepare?.(cmd);
}

/**
 * Conventions every command gets: required options say so in `--help`, and a usage error points
 * to the command's own help (`peft train --help`), for nested commands too.
 */
function applyConventions(cmd: Command, parent: string): void {
  const path = `${parent} ${cmd.name()}`;
  cmd.showHelpAfterError(`(run '${path} --help' for usage)`);
  for (const o of cmd.options) {
    if (o.mandatory && !o.description.endsWith("(required)")) o.description = `${o.description} (required)`;
  }
  for (const sub of cmd.commands) applyConventions(sub, path);
}

/**
 * Prints an error the way the CLI reports it and returns the exit status: `error [CODE]: message`
 * for a `PeftError`, `error: message` otherwise; the stack only when `ctx.debug` (PEFT_DEBUG=1).
 */
export function reportError(e: unknown, ctx: CliContext): number {
  if (e instanceof CommanderError) return e.exitCode; // commander already printed its message (or the help/version)
  e = wrapFsError(e); // a system error (ENOENT, EROFS, ENOSPC…) becomes PEFT_ERR_FILESYSTEM naming the file
  if (e instanceof PeftError) ctx.err(`error [${e.code}]: ${e.message}`);
  else ctx.err(`error: ${e instanceof Error ? e.message : String(e)}`);
  if (ctx.debug && e instanceof Error && e.stack) {
    ctx.err(e.stack);
    let cause: unknown = e.cause;
    while (cause instanceof Error) {
      ctx.err(`caused by: ${cause.stack ?? cause.message}`);
      cause = cause.cause;
    }
  }
  return 1;
}

/**
 * Runs the CLI with node-style `argv` (`[node, script, ...args]`, i.e. `process.argv`). Never
 * throws and never exits the process: failures are printed and the status goes to `io.setExitCode`.
 */
export async function main(argv: string[], io: CliIo = processIo()): Promise<void> {
  const ctx = createContext(io);
  try {
    const program = buildProgram(ctx);
    await prepareInvokedCommand(program, argv.slice(2));
    await program.parseAsync(argv, { from: "node" });
  } catch (e) {
    io.setExitCode(reportError(e, ctx));
  }
}

export interface CliRunResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs `peft <args…>` in-process with captured output (for tests and embedding). */
export async function runCli(args: readonly string[]): Promise<CliRunResult> {
  let stdout = "";
  let stderr = "";
  let code = 0;
  await main(["node", "peft", ...args], {
    stdout: (t) => void (stdout += t),
    stderr: (t) => void (stderr += t),
    setExitCode: (c) => void (code = c),
  });
  return { code, stdout, stderr };
}
