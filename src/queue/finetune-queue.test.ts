/**
 * Fine-tuning scaled out (issue 14, item 4) as a user meets it: a real redis-server, `peft serve
 * --queue` (a child process) taking jobs through the official `openai` client, two `peft worker`
 * processes running them from the server's shared state folder. Four jobs spread over both
 * workers; one worker is killed with SIGKILL mid-job and the other resumes it from its last
 * checkpoint; every job succeeds once, its adapter is in the adapter folder once, and the server
 * serves it.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import OpenAI, { toFile } from "openai";
import { tinyFineTuneModel, writeChatJsonl } from "../runs/finetune/testing.js";
import { packageRoot } from "../util/paths.js";
import { JobQueue } from "./client.js";
import { type TestRedis, startTestRedis } from "./redis.test-util.js";
import { type WorkerProcess, killAllWorkers, spawnWorker } from "./worker-process.test-util.js";

let root: string;
let redis: TestRedis;
let queue: JobQueue;
let server: ChildProcess | null = null;

before(async () => {
  root = mkdtempSync(join(tmpdir(), "peft-ft-queue-"));
  redis = await startTestRedis();
  queue = new JobQueue(redis.url);
  await queue.ready();
});

after(async () => {
  server?.kill("SIGKILL");
  await killAllWorkers();
  await queue?.close();
  await redis?.stop();
  rmSync(root, { recursive: true, force: true });
});

async function serve(model: string, state: string): Promise<string> {
  const child = spawn(process.execPath, [join(packageRoot(), "bin", "peft.js"), "serve", "--model", model, "--state", state, "--queue", redis.url, "--port", "0", "--threads", "1", "--quiet"], { stdio: ["ignore", "pipe", "pipe"] });
  server = child;
  let out = "";
  child.stderr!.on("data", (d: Buffer) => (out += d.toString()));
  return new Promise<string>((resolve, reject) => {
    child.stdout!.on("data", (d: Buffer) => {
      out += d.toString();
      const m = /on (http:\/\/127\.0\.0\.1:\d+)/u.exec(out);
      if (m) resolve(m[1]!);
    });
    child.on("exit", () => reject(new Error(`peft serve exited early:\n${out}`)));
  });
}

test("peft serve --queue: 4 jobs over 2 workers, one killed mid-job → all succeed once, adapters served", async () => {
  const model = tinyFineTuneModel(root);
  const state = join(root, "state");
  const data = writeChatJsonl(join(root, "train.jsonl"), 16, 5);
  const workers: WorkerProcess[] = [0, 1].map(() => spawnWorker(["--queue", redis.url, "--state", join(root, "worker-state"), "--lock-duration", "2500"]));
  const url = await serve(model, state);
  await Promise.all(workers.map((w) => w.ready(60_000)));
  const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: "unused", maxRetries: 0 });
  const fileId = (await client.files.create({ file: await toFile(readFileSync(data), "train.jsonl"), purpose: "fine-tune" })).id;
  const ids: string[] = [];
  let victim: { job: string; worker: string; step: number } | null = null;
  const seen = new Set<string>();
  for (let i = 0; i < 4; i++) {
    // 16 chats, batch 2, 2 epochs: 16 steps, a checkpoint after each
    const job = await client.fineTuning.jobs.create({ model: "gpt2", training_file: fileId, hyperparameters: { n_epochs: 2, batch_size: 2, learning_rate_multiplier: 5 }, seed: i, suffix: `q${i}`, peft: { r: 4, checkpoint_every: 1 } } as OpenAI.FineTuning.JobCreateParams);
    ids.push(job.id);
    await queue.watch(job.id, (u) => {
      seen.add(u.worker);
      if (victim === null && u.step >= 3 && u.step <= u.totalSteps - 4) {
        const w = workers.find((x) => u.worker.endsWith(`:${x.pid}`));
        if (!w) return;
        victim = { job: job.id, worker: u.worker, step: u.step };
        w.proc.kill("SIGKILL");
      }
    });
  }
  const end = Date.now() + 150_000;
  let jobs: OpenAI.FineTuning.FineTuningJob[];
  for (;;) {
    jobs = await Promise.all(ids.map((id) => client.fineTuning.jobs.retrieve(id)));
    if (jobs.every((j) => j.status === "succeeded" || j.status === "failed" || j.status === "cancelled")) break;
    assert.ok(Date.now() < end, `jobs still running after 150 s: ${jobs.map((j) => j.status).join(", ")}`);
    await new Promise((r) => setTimeout(r, 200));
  }
  assert.deepEqual(jobs.map((j) => j.status), ["succeeded", "succeeded", "succeeded", "succeeded"], JSON.stringify(jobs.map((j) => j.error)));
  const v = victim as { job: string; worker: string; step: number } | null;
  assert.ok(v, "a worker was killed mid-job");
  assert.equal(seen.size, 2, "jobs ran on both workers");
  const st = await queue.status(v.job);
  assert.ok((st?.attemptsStarted ?? 0) >= 2 && !st?.worker?.endsWith(v.worker.split(":").at(-1)!), JSON.stringify(st));
  const events = (await client.fineTuning.jobs.listEvents(v.job, { limit: 100 })).data.map((e) => e.message);
  assert.ok(events.some((m) => m.startsWith("Fine-tuning job resumed at step ")), events.join("\n"));
  // every adapter once, complete, nothing half-written; each fine-tuned model is served
  assert.deepEqual(readdirSync(join(state, "adapters")).sort(), [...ids].sort());
  for (const id of ids) for (const f of ["adapter_config.json", "adapter_model.safetensors"]) assert.ok(existsSync(join(state, "adapters", id, f)), `${id}/${f}`);
  const models = (await client.models.list()).data.map((m) => m.id);
  for (const j of jobs) assert.ok(models.includes(j.fine_tuned_model!), `${j.fine_tuned_model} served`);
  const chat = await client.chat.completions.create({ model: jobs[0]!.fine_tuned_model!, messages: [{ role: "user", content: "the food was good" }], max_tokens: 2 });
  assert.equal(typeof chat.choices[0]?.message.content, "string");
});
