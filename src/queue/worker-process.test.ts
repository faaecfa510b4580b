/**
 * Scale-out as a user meets it: a real redis-server, two `peft worker` processes (the compiled
 * CLI) sharing a state folder and an adapter store, four `train` jobs spread over both. One worker
 * is killed with SIGKILL in the middle of a job: BullMQ's stalled-job check puts the job back, the
 * other worker resumes it from its last checkpoint, and every job's adapter is in the store once.
 */
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { makeTinyModelDir, writeTinyDataset } from "../runs/testing.js";
import { JobQueue, type JobUpdate } from "./client.js";
import { type TestRedis, startTestRedis } from "./redis.test-util.js";
import { listStore } from "./store.js";
import type { TrainJobResult } from "./train-kind.js";
import { type WorkerProcess, killAllWorkers, spawnWorker } from "./worker-process.test-util.js";

describe("peft worker: two processes on a real Redis, one killed mid-job", () => {
  let redis: TestRedis;
  let queue: JobQueue;
  let root: string;

  before(async () => {
    root = mkdtempSync(join(tmpdir(), "peft-workers-"));
    redis = await startTestRedis();
    queue = new JobQueue(redis.url);
    await queue.ready();
  });

  after(async () => {
    await killAllWorkers();
    await queue?.close();
    await redis?.stop();
    if (root) rmSync(root, { recursive: true, force: true });
  });

  test("4 train jobs over 2 workers; kill -9 one mid-job → the other resumes it from its checkpoint; each adapter once", async () => {
    const model = makeTinyModelDir("bert", join(root, "model"));
    const data = writeTinyDataset(join(root, "data.jsonl"), 100, 1, 2);
    const state = join(root, "state");
    const store = join(root, "store");
    const args = ["--queue", redis.url, "--state", state, "--adapter-store", store, "--lock-duration", "2500"];
    const workers: WorkerProcess[] = [spawnWorker(args), spawnWorker(args)];
    await Promise.all(workers.map((w) => w.ready(60_000)));

    // 80 train rows, batch 4, 4 epochs = 80 steps; checkpoint (and evaluation) every 10 steps
    const job = (i: number) => ({ model, data, method: "lora", r: 2, epochs: 4, batchSize: 4, lr: 0.01, seed: i, evalEvery: 10, threads: 1 });
    const ids: string[] = [];
    const seen = new Map<string, Set<string>>(); // job → workers that reported progress for it
    let victim: { job: string; worker: string; step: number } | null = null;
    let killed: (() => void) | null = null;
    const killedDone = new Promise<void>((r) => (killed = r));
    for (let i = 0; i < 4; i++) {
      const id = `train-${i}`;
      await queue.watch(id, (u: JobUpdate) => {
        if (!seen.has(id)) seen.set(id, new Set());
        seen.get(id)!.add(u.worker);
        if (victim === null && u.step >= 25 && u.step <= u.totalSteps - 25) {
          const pid = Number(u.worker.split(":").at(-1));
          const w = workers.find((x) => x.pid === pid);
          if (!w) return;
          victim = { job: id, worker: u.worker, step: u.step };
          w.proc.kill("SIGKILL");
          killed!();
        }
      });
      ids.push(await queue.add("train", job(i), { id }));
    }
    await Promise.race([killedDone, new Promise((_, rej) => setTimeout(() => rej(new Error("no job reached the middle in 60 s")), 60_000).unref())]);
    const results = await Promise.all(ids.map((id) => queue.wait<TrainJobResult>(id, 90_000)));

    const v = victim as { job: string; worker: string; step: number } | null;
    assert.ok(v, "a worker was killed");
    const dead = workers.find((w) => v.worker.endsWith(`:${w.pid}`))!;
    const survivor = workers.find((w) => w !== dead)!;
    assert.equal((await dead.exited).signal, "SIGKILL");
    // both workers took jobs; the killed job was finished by the survivor, resumed from a checkpoint
    assert.equal(new Set([...seen.values()].flatMap((s) => [...s])).size, 2, "jobs spread over both workers");
    const st = await queue.status(v.job);
    assert.equal(st?.state, "completed");
    assert.ok((st?.attemptsStarted ?? 0) >= 2, `attempts ${st?.attemptsStarted}`);
    assert.ok(st?.worker?.endsWith(`:${survivor.pid}`), `finished by ${st?.worker}`);
    const resumed = (await queue.jobEvents(v.job)).map((e) => e.message).find((m) => m.startsWith("resumed from the checkpoint at step "));
    assert.ok(resumed, "the retried job resumed from a checkpoint");
    const from = Number(/step (\d+)/.exec(resumed)![1]);
    assert.ok(from >= 10 && from <= v.step, `resumed at ${from}, killed at ${v.step}`);
    assert.ok(survivor.output().includes(`job ${v.job} stalled`) || (st?.attemptsStarted ?? 0) >= 2);

    // every job's adapter present once, complete, and nothing half-written left in the store
    assert.deepEqual(listStore(store), ids);
    assert.deepEqual(readdirSync(store).sort(), ids, "no temporary folders left");
    for (const [i, r] of results.entries()) {
      assert.equal(r.adapter, join(store, ids[i]!));
      assert.equal(r.published, true, `${ids[i]}: ${JSON.stringify(await queue.jobEvents(ids[i]!))}\n${workers.map((w) => w.output()).join("\n---\n")}`);
      for (const f of ["adapter_config.json", "adapter_model.safetensors", "metrics.json"]) assert.ok(existsSync(join(store, ids[i]!, f)), `${ids[i]}/${f}`);
      assert.equal((r.metrics as { steps?: number }).steps, 80);
    }

    // graceful stop: SIGTERM → the survivor finishes, says so and exits 0
    survivor.proc.kill("SIGTERM");
    const exit = await survivor.exited;
    assert.equal(exit.code, 0, survivor.output());
    assert.match(survivor.output(), /SIGTERM: finishing running jobs[\s\S]*: stopped/);
  });
});
