/**
 * Scale-out as a user meets it: a real redis-server, two `peft worker` processes (the compiled
 * CLI) sharing a state folder and an adapter store, four `train` jobs spread over both. One worker
 * is killed with SIGKILL in the middle of a job: BullMQ's stalled-job check puts the job back, the
 * other worker resumes it from its last checkpoint, and every job's adapter is in the store once.
 */
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { makeTinyModelDir, writeTinyDataset } from "../runs/testing.js";
import { runSearch } from "../search/run.js";
import { TINY_SPACE } from "../search/tiny-space.test-util.js";
import { parseSearchSpace } from "../search/space.js";
import { JobQueue, type JobUpdate } from "./client.js";
import { QueueTrialExecutor, searchTrialJobId } from "./search-kind.js";
import { type TestRedis, startTestRedis } from "./redis.test-util.js";
import { listStore } from "./store.js";
import type { TrainJobResult } from "./train-kind.js";
import { type WorkerProcess, killAllWorkers, spawnWorker } from "./worker-process.test-util.js";

describe("peft worker: two processes on a real Redis, one killed mid-job", () => {
  let redis: TestRedis;
  let queue: JobQueue;
  let root: string;
  let model: string;
  let data: string;
  let state: string;
  let store: string;
  /** Workers still running after a test (the next one reuses them). */
  let live: WorkerProcess[] = [];

  before(async () => {
    root = mkdtempSync(join(tmpdir(), "peft-workers-"));
    redis = await startTestRedis();
    queue = new JobQueue(redis.url);
    await queue.ready();
    model = makeTinyModelDir("bert", join(root, "model"));
    data = writeTinyDataset(join(root, "data.jsonl"), 100, 1, 2);
    state = join(root, "state");
    store = join(root, "store");
  });

  const workerArgs = () => ["--queue", redis.url, "--state", state, "--adapter-store", store, "--lock-duration", "2500"];

  after(async () => {
    await killAllWorkers();
    await queue?.close();
    await redis?.stop();
    if (root) rmSync(root, { recursive: true, force: true });
  });

  test("4 train jobs over 2 workers; kill -9 one mid-job → the other resumes it from its checkpoint; each adapter once", async () => {
    const workers: WorkerProcess[] = [spawnWorker(workerArgs()), spawnWorker(workerArgs())];
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

    // every job's adapter present once, complete, and nothing half-written left in the store
    assert.deepEqual(listStore(store), ids);
    assert.deepEqual(readdirSync(store).sort(), ids, "no temporary folders left");
    for (const [i, r] of results.entries()) {
      assert.equal(r.adapter, join(store, ids[i]!));
      assert.equal(r.published, true, `${ids[i]}: ${JSON.stringify(await queue.jobEvents(ids[i]!))}\n${workers.map((w) => w.output()).join("\n---\n")}`);
      for (const f of ["adapter_config.json", "adapter_model.safetensors", "metrics.json"]) assert.ok(existsSync(join(store, ids[i]!, f)), `${ids[i]}/${f}`);
      assert.equal((r.metrics as { steps?: number }).steps, 80);
    }
    live = [survivor];
  });

  test("peft search over the queue: trials on two workers, one killed mid-trial → the search still finishes every trial once", async () => {
    const workers = [...live, spawnWorker(workerArgs())];
    await Promise.all(workers.map((w) => w.ready(60_000)));
    const out = join(root, "search");
    // 80 train rows, batch 8, 6 epochs = 60 steps per trial, a checkpoint per epoch
    const space = parseSearchSpace({ ...TINY_SPACE, fidelity: { epochs: 6, max_examples: 100 } });
    let victim: { trial: number; worker: string; step: number } | null = null;
    const workerNames = new Set<string>();
    const executor = new QueueTrialExecutor(queue, {
      timeoutMs: 120_000,
      onUpdate: (index, u) => {
        workerNames.add(u.worker);
        if (victim === null && u.step >= 12 && u.step <= u.totalSteps - 10) {
          const w = workers.find((x) => u.worker.endsWith(`:${x.pid}`));
          if (!w) return;
          victim = { trial: index, worker: u.worker, step: u.step };
          w.proc.kill("SIGKILL");
        }
      },
    });
    const r = await runSearch({ space, model, data, out, trials: 4, initial: 3, parallel: 2, threads: 1 }, executor);
    assert.equal(r.trials.length, 4);
    assert.ok(r.trials.every((t) => t.status === "done"), JSON.stringify(r.trials.map((t) => t.error ?? null)));
    assert.equal(workerNames.size, 2, "trials ran on both workers");
    const v = victim as { trial: number; worker: string; step: number } | null;
    assert.ok(v, "a worker was killed mid-trial");
    const st = await queue.status(searchTrialJobId(JSON.parse(readFileSync(join(out, "search.json"), "utf8")).id as string, v.trial));
    assert.equal(st?.state, "completed");
    assert.ok((st?.attemptsStarted ?? 0) >= 2, `attempts ${st?.attemptsStarted}`);
    assert.ok(!st?.worker?.endsWith(v.worker.split(":").at(-1)!), "finished by the other worker");
    assert.ok(existsSync(join(out, "pareto.json")) && existsSync(join(out, "pareto.png")));
    // each trial's queue job completed exactly once: one completion per job id
    const counts = await queue.counts();
    assert.equal(counts.failed, 0);

    // graceful stop: SIGTERM → the remaining worker finishes, says so and exits 0
    const rest = workers.filter((w) => !v.worker.endsWith(`:${w.pid}`));
    assert.equal(rest.length, 1);
    rest[0]!.proc.kill("SIGTERM");
    const exit = await rest[0]!.exited;
    assert.equal(exit.code, 0, rest[0]!.output());
    assert.match(rest[0]!.output(), /SIGTERM: finishing running jobs[\s\S]*: stopped/);
  });
});
