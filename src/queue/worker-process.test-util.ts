/**
 * `peft worker` child processes for tests: the compiled CLI, its output collected, killed with
 * SIGKILL by `killAll()` (which tests call in `after`) if a test left one running.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { join } from "node:path";
import { packageRoot } from "../util/paths.js";

export interface WorkerProcess {
  readonly proc: ChildProcess;
  readonly pid: number;
  /** stdout + stderr so far. */
  output(): string;
  /** Resolves when the worker printed its `ready` line (rejects if it exits first or after `ms`). */
  ready(ms: number): Promise<void>;
  /** Resolves with the exit code (null when killed by a signal) and the signal. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

const live = new Set<ChildProcess>();
process.once("exit", () => {
  for (const p of live) p.kill("SIGKILL");
});

export function spawnWorker(args: readonly string[]): WorkerProcess {
  const proc = spawn(process.execPath, [join(packageRoot(), "bin", "peft.js"), "worker", ...args], { stdio: ["ignore", "pipe", "pipe"] });
  live.add(proc);
  let out = "";
  proc.stdout!.on("data", (d: Buffer) => (out += d.toString()));
  proc.stderr!.on("data", (d: Buffer) => (out += d.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    proc.once("exit", (code, signal) => {
      live.delete(proc);
      resolve({ code, signal });
    }),
  );
  return {
    proc,
    pid: proc.pid!,
    output: () => out,
    exited,
    ready: (ms) =>
      new Promise<void>((resolve, reject) => {
        const t0 = Date.now();
        const tick = setInterval(() => {
          if (/: ready on /.test(out)) {
            clearInterval(tick);
            resolve();
          } else if (proc.exitCode !== null || proc.signalCode !== null || Date.now() - t0 > ms) {
            clearInterval(tick);
            reject(new Error(`peft worker (pid ${proc.pid}) not ready after ${Date.now() - t0} ms:\n${out}`));
          }
        }, 50);
      }),
  };
}

/** SIGKILLs every worker still running and waits for them to exit. */
export async function killAllWorkers(): Promise<void> {
  const ps = [...live];
  for (const p of ps) p.kill("SIGKILL");
  await Promise.all(ps.map((p) => (p.exitCode !== null || p.signalCode !== null ? undefined : new Promise((r) => p.once("exit", r)))));
}
