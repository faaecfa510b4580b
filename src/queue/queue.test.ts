/**
 * The queue layer against a real redis-server (started here on a free port, stopped in `after`):
 * enqueue → a worker in this process runs the job → progress and events stream back through
 * QueueEvents → the result (or the failure, with its PEFT_ERR_* code) reaches the client.
 */
import assert from "node:assert/strict";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { ConfigError, JobFailedError, QueueTimeoutError, QueueUrlError, UnknownJobKindError } from "../errors.js";
import { JobQueue, type JobUpdate } from "./client.js";
import { parseQueueUrl } from "./connection.js";
import { type JobContext, registerJobKind } from "./kinds.js";
import { type TestRedis, startTestRedis } from "./redis.test-util.js";
import { listStore, publishToStore } from "./store.js";
import { type QueueWorker, startQueueWorker } from "./worker.js";

/** Counts to `to`, checkpointing the count in the job's state folder; throws a ConfigError for `to` < 0 at run time. */
registerJobKind<{ to: number; failAt?: number }, { counted: number; resumedFrom: number }>({
  name: "test-count",
  description: "counts to `to` with a checkpoint per step",
  parse(data) {
    const d = data as { to?: unknown; failAt?: unknown };
    if (typeof d?.to !== "number") throw new ConfigError("test-count job", "to", "must be a number");
    return { to: d.to, ...(typeof d.failAt === "number" ? { failAt: d.failAt } : {}) };
  },
  async run(input, ctx: JobContext) {
    const ck = join(ctx.stateDir, "count.json");
    const resumedFrom = existsSync(ck) ? (JSON.parse(readFileSync(ck, "utf8")) as number) : 0;
    for (let i = resumedFrom + 1; i <= input.to; i++) {
      if (i === input.failAt) throw new ConfigError("test-count job", "failAt", `failed at ${i} as asked`);
      await new Promise((r) => setTimeout(r, 5));
      writeFileSync(ck, JSON.stringify(i));
      ctx.progress(i, input.to);
      if (i % 5 === 0) ctx.event("info", `reached ${i}`, { i });
    }
    return { counted: input.to, resumedFrom };
  },
});

describe("queue: Redis URLs", () => {
  test("redis://host:port/db with credentials; defaults; bad URLs are QueueUrlErrors", () => {
    const c = parseQueueUrl("redis://u:p%40ss@10.0.0.2:6380/3");
    assert.deepEqual([c.host, c.port, c.db, c.username, c.password, c.maxRetriesPerRequest], ["10.0.0.2", 6380, 3, "u", "p@ss", null]);
    const d = parseQueueUrl("redis://localhost");
    assert.deepEqual([d.host, d.port, d.db], ["localhost", 6379, 0]);
    assert.deepEqual(parseQueueUrl("rediss://h:1").tls, {});
    for (const bad of ["localhost:6379", "http://h:1", "redis://h:1/x", "redis://h:1/0?x=1"]) assert.throws(() => parseQueueUrl(bad), QueueUrlError, bad);
  });
});

describe("queue: store", () => {
  test("a second publish of the same name keeps the first adapter", () => {
    const dir = mkdtempSync(join(tmpdir(), "peft-store-"));
    try {
      writeFileSync(join(dir, "cfg-a"), "first");
      writeFileSync(join(dir, "cfg-b"), "second");
      const store = join(dir, "store");
      assert.equal(publishToStore(store, "job-1", dir, ["cfg-a"]), true);
      assert.equal(publishToStore(store, "job-1", dir, ["cfg-b"]), false);
      assert.equal(readFileSync(join(store, "job-1", "cfg-a"), "utf8"), "first");
      assert.ok(!existsSync(join(store, "job-1", "cfg-b")));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("queue: jobs over a real Redis", () => {
  let redis: TestRedis;
  let queue: JobQueue;
  let worker: QueueWorker;
  let state: string;
  const logs: string[] = [];

  before(async () => {
    redis = await startTestRedis();
    state = mkdtempSync(join(tmpdir(), "peft-queue-state-"));
    queue = new JobQueue(redis.url, { queueName: "unit" });
    await queue.ready();
    worker = startQueueWorker({ url: redis.url, stateDir: state, queueName: "unit", sandbox: false, lockDurationMs: 5000, progressIntervalMs: 20, onLog: (l) => logs.push(l) });
    await worker.ready();
  });

  after(async () => {
    // clients first, then Redis: a client whose Redis is gone would reconnect for ever
    await worker?.close(true);
    await queue?.close();
    await redis?.stop();
    if (state) rmSync(state, { recursive: true, force: true });
  });

  test("enqueue → progress and events stream back → result; the job's state and log are kept", async () => {
    const id = await queue.add("test-count", { to: 20 }, { id: "count-1" });
    assert.equal(id, "count-1");
    const updates: JobUpdate[] = [];
    const stop = await queue.watch(id, (u) => updates.push(u));
    const result = await queue.wait<{ counted: number; resumedFrom: number }>(id, 20_000);
    stop();
    assert.deepEqual(result, { counted: 20, resumedFrom: 0 });
    const steps = updates.map((u) => u.step);
    assert.ok(steps.length >= 2, `streamed ${steps.length} updates`);
    assert.deepEqual(steps, [...steps].sort((a, b) => a - b), "progress arrives in order");
    assert.equal(updates.at(-1)?.totalSteps, 20);
    assert.equal(updates[0]?.worker, worker.name);
    const st = await queue.status(id);
    assert.equal(st?.state, "completed");
    assert.equal(st?.progress?.step, 20);
    assert.equal(st?.attemptsStarted, 1);
    assert.equal(st?.worker, worker.name);
    const events = await queue.jobEvents(id);
    assert.deepEqual(events.map((e) => e.message), ["reached 5", "reached 10", "reached 15", "reached 20"]);
    assert.deepEqual(events[1]?.data, { i: 10 });
    assert.ok(updates.some((u) => u.event?.message === "reached 10"), "events stream with the progress");
    assert.ok(logs.some((l) => l.startsWith("job count-1 (test-count) done")), logs.join("\n"));
  });

  test("a job that fails carries its PEFT_ERR_* code to the client and is not run again", async () => {
    const id = await queue.add("test-count", { to: 10, failAt: 4 });
    await assert.rejects(queue.wait(id, 20_000), (e: unknown) => e instanceof JobFailedError && e.remoteCode === "PEFT_ERR_CONFIG" && /failed at 4 as asked/.test(e.reason));
    const st = await queue.status(id);
    assert.equal(st?.state, "failed");
    assert.equal(st?.attemptsStarted, 1);
    assert.equal((await queue.jobEvents(id)).at(-1)?.level, "error");
  });

  test("bad input is refused when queued: unknown kind, invalid data, bad id; waiting on a stuck job times out", async () => {
    await assert.rejects(queue.add("no-such-kind", {}), UnknownJobKindError);
    await assert.rejects(queue.add("test-count", { to: "x" }), ConfigError);
    await assert.rejects(queue.add("train", { model: "m" }), ConfigError);
    await assert.rejects(queue.add("test-count", { to: 1 }, { id: "../escape" }), /invalid adapter name/);
    // a queue no worker serves: the wait ends with a timeout, not a hang
    const lonely = new JobQueue(redis.url, { queueName: "nobody-serves-this" });
    try {
      const id = await lonely.add("test-count", { to: 1 });
      await assert.rejects(lonely.wait(id, 300), QueueTimeoutError);
      assert.equal((await lonely.status(id))?.state, "waiting");
      assert.equal(await lonely.removeWaiting(id), true);
      assert.equal(await lonely.status(id), null);
    } finally {
      await lonely.close();
    }
  });

  test("a job resumes from the checkpoint an earlier attempt left in its state folder", async () => {
    mkdirSync(join(state, "jobs", "count-resume"), { recursive: true });
    writeFileSync(join(state, "jobs", "count-resume", "count.json"), "7");
    const id = await queue.add("test-count", { to: 12 }, { id: "count-resume" });
    assert.deepEqual(await queue.wait(id, 20_000), { counted: 12, resumedFrom: 7 });
    assert.deepEqual(listStore(join(state, "no-store")), []);
  });
});
