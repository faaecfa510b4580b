/**
 * What a CLI command sees: where to write (so tests can capture output in-process) and the
 * shape every command file has. Commands write through `ctx`, never `console.log`.
 */
import type { Command } from "commander";

/** Raw output streams and the exit status of one CLI run. */
export interface CliIo {
  /** Writes text to standard output as is (no newline added). */
  stdout(text: string): void;
  /** Writes text to standard error as is (no newline added). */
  stderr(text: string): void;
  /** Records the process exit status (the process itself is never killed from inside the CLI). */
  setExitCode(code: number): void;
  /** Standard error is a terminal: progress bars are drawn only then (default: false). */
  readonly stderrIsTTY?: boolean;
}

/** Helpers handed to every command's `register`. */
export interface CliContext {
  readonly io: CliIo;
  /** Writes one line (a newline is appended) to standard output. */
  out(line: string): void;
  /** Writes one line to standard error. */
  err(line: string): void;
  /** Writes `value` as pretty JSON (one document, newline-terminated) to standard output. */
  json(value: unknown): void;
  /** True when `PEFT_DEBUG=1`: print stacks and extra detail. */
  readonly debug: boolean;
}

/**
 * One command file under `src/cli/commands/`: adds its sub-command (and options and action) to
 * the program. Register it by adding one line to `COMMANDS` in `main.ts`.
 *
 * A command file imports only what its options need (commander, argument parsers, small
 * dependency-free modules): `peft --help` loads every command file, so the runtime
 * (onnxruntime, models, tuners, the server) is loaded by `await import(…)` inside the action.
 * `src/cli/lazy-load.test.ts` checks this.
 */
export interface CommandModule {
  register(program: Command, ctx: CliContext): void;
  /**
   * Loads what the command's options need beyond that (e.g. the tuner registry behind
   * `peft train --method`'s choices); called with the registered command, before its arguments
   * are parsed, only when that command runs or shows its help.
   */
  prepare?(cmd: Command): Promise<void>;
}

/** The real process streams; the exit status goes to `process.exitCode`. */
export function processIo(): CliIo {
  return {
    stdout: (t) => void process.stdout.write(t),
    stderr: (t) => void process.stderr.write(t),
    setExitCode: (c) => {
      process.exitCode = c;
    },
    stderrIsTTY: process.stderr.isTTY === true,
  };
}

export function createContext(io: CliIo, env: NodeJS.ProcessEnv = process.env): CliContext {
  return {
    io,
    out: (line) => io.stdout(`${line}\n`),
    err: (line) => io.stderr(`${line}\n`),
    json: (value) => io.stdout(`${JSON.stringify(value, null, 2)}\n`),
    debug: env.PEFT_DEBUG === "1",
  };
}
