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
 */
export interface CommandModule {
  register(program: Command, ctx: CliContext): void;
}

/** The real process streams; the exit status goes to `process.exitCode`. */
export function processIo(): CliIo {
  return {
    stdout: (t) => void process.stdout.write(t),
    stderr: (t) => void process.stderr.write(t),
    setExitCode: (c) => {
      process.exitCode = c;
    },
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
