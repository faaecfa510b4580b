/**
 * A private `redis-server` for tests: started on a free loopback port with its own temporary
 * folder and no persistence, stopped (and its folder removed) by `stop()` — which tests call in
 * `after`, so also when a test failed. A process-exit hook kills a server a crashed test left.
 * Close every BullMQ Queue / Worker / QueueEvents before `stop()`: a client whose Redis is gone
 * reconnects for ever.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createConnection, createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

export const REDIS_SERVER = "/usr/bin/redis-server";

export interface TestRedis {
  readonly url: string;
  readonly port: number;
  stop(): Promise<void>;
}

/** A free TCP port on 127.0.0.1 (the OS picks it). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const addr = srv.address();
      srv.close(() => (typeof addr === "object" && addr ? resolve(addr.port) : reject(new Error("no port"))));
    });
  });
}

/** Sends PING over a raw socket; true on +PONG within `ms`. */
function ping(port: number, ms: number): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = createConnection({ host: "127.0.0.1", port });
    const done = (ok: boolean) => {
      sock.destroy();
      resolve(ok);
    };
    sock.setTimeout(ms, () => done(false));
    sock.once("error", () => done(false));
    sock.once("connect", () => sock.write("PING\r\n"));
    sock.once("data", (d) => done(d.toString().startsWith("+PONG")));
  });
}

const live = new Set<ChildProcess>();
process.once("exit", () => {
  for (const p of live) p.kill("SIGKILL");
});

/** Starts redis-server; resolves once it answers PING (at most 10 s). */
export async function startTestRedis(): Promise<TestRedis> {
  const dir = mkdtempSync(join(tmpdir(), "peft-redis-"));
  const port = await freePort();
  const log = join(dir, "redis.log");
  const proc = spawn(REDIS_SERVER, ["--port", String(port), "--bind", "127.0.0.1", "--dir", dir, "--save", "", "--appendonly", "no", "--logfile", log, "--daemonize", "no"], { stdio: "ignore" });
  live.add(proc);
  let exited = false;
  const exit = new Promise<void>((resolve) => proc.once("exit", () => ((exited = true), live.delete(proc), resolve())));
  const stop = async () => {
    if (!exited) {
      proc.kill("SIGTERM");
      const t = setTimeout(() => proc.kill("SIGKILL"), 5000);
      await exit;
      clearTimeout(t);
    }
    rmSync(dir, { recursive: true, force: true });
  };
  const deadline = Date.now() + 10_000;
  while (!(await ping(port, 500))) {
    if (exited || Date.now() > deadline) {
      const why = existsSync(log) ? readFileSync(log, "utf8").slice(-2000) : "no log";
      await stop();
      throw new Error(`redis-server did not start on port ${port}: ${why}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return { url: `redis://127.0.0.1:${port}`, port, stop };
}
