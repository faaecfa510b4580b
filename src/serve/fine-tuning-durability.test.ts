/**
 * Durability of the fine-tuning state: a real `peft serve --state DIR` child process is killed
 * with SIGKILL mid-job, a new one started on the same folder resumes the job from its last
 * checkpoint, and the adapter equals that of the same job run without interruption (max |Δ| ≤
 * 1e-6); the uploaded file and the job's events survive.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import OpenAI, { toFile } from "openai";
import { loadSafetensors } from "../io/safetensors.js";
import { readJsonObject } from "../io/json-file.js";
import { type FineTuneJobSpec, runFineTuneJob } from "../runs/finetune/index.js";
import { tinyFineTuneModel, writeChatJsonl } from "../runs/finetune/testing.js";
import { packageRoot } from "../util/paths.js";

const dir = mkdtempSync(join(tmpdir(), "peft-ft-kill-"));
after(() => rmSync(dir, { recursive: true, force: true }));

interface Served {
  readonly child: ChildProcess;
  readonly url: string;
  readonly exited: Promise<unknown>;
}

async function serve(model: string, state: string): Promise<Served> {
  const child = spawn(process.execPath, [join(packageRoot(), "bin", "peft.js"), "serve", "--model", model, "--state", state, "--port", "0", "--threads", "1", "--quiet"], { stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  let err = "";
  child.stderr!.on("data", (d: Buffer) => (err += d.toString()));
  const exited = new Promise((r) => child.on("exit", r));
  const url = await new Promise<string>((resolve, reject) => {
    child.stdout!.on("data", (d: Buffer) => {
      out += d.toString();
      const m = /on (http:\/\/127\.0\.0\.1:\d+)/u.exec(out);
      if (m) resolve(m[1]!);
    });
    child.on("exit", () => reject(new Error(`peft serve exited early:\n${out}\n${err}`)));
  });
  return { child, url, exited };
}

function maxAbsDiff(a: string, b: string): number {
  const ta = loadSafetensors(a).tensors;
  const tb = loadSafetensors(b).tensors;
  assert.deepEqual([...ta.keys()].sort(), [...tb.keys()].sort());
  let m = 0;
  for (const [k, t] of ta) {
    const x = t.data as Float32Array;
    const y = tb.get(k)!.data as Float32Array;
    for (let i = 0; i < x.length; i++) m = Math.max(m, Math.abs(x[i]! - y[i]!));
  }
  return m;
}

test("SIGKILL mid-job, restart on the same --state: the job resumes and its adapter equals an uninterrupted run's", async () => {
  const model = tinyFineTuneModel(dir);
  const state = join(dir, "state");
  const data = writeChatJsonl(join(dir, "train.jsonl"), 16, 5);
  let s = await serve(model, state);
  let client = new OpenAI({ baseURL: `${s.url}/v1`, apiKey: "unused", maxRetries: 0 });
  let jobId!: string;
  let fileId!: string;
  try {
    fileId = (await client.files.create({ file: await toFile(readFileSync(data), "train.jsonl"), purpose: "fine-tune" })).id;
    const job = await client.fineTuning.jobs.create({
      model: "gpt2",
      training_file: fileId,
      hyperparameters: { n_epochs: 2, batch_size: 2, learning_rate_multiplier: 5 },
      seed: 11,
      peft: { r: 4, checkpoint_every: 1 },
    } as OpenAI.FineTuning.JobCreateParams);
    jobId = job.id;
    // kill once a few checkpoints are on disk, well before the 16 steps end
    for (;;) {
      const c = await client.fineTuning.jobs.checkpoints.list(jobId);
      if (c.data.length >= 3) break;
      await new Promise((r) => setTimeout(r, 10));
    }
  } finally {
    s.child.kill("SIGKILL");
    await s.exited;
  }
  const killedAt = readJsonObject(join(state, "jobs", jobId, "checkpoint", "checkpoint.json")).step as number;
  assert.ok(killedAt >= 3 && killedAt < 16, `killed at step ${killedAt}`);

  s = await serve(model, state);
  client = new OpenAI({ baseURL: `${s.url}/v1`, apiKey: "unused", maxRetries: 0 });
  let done: OpenAI.FineTuning.FineTuningJob;
  try {
    assert.equal((await client.files.retrieve(fileId)).id, fileId, "the uploaded file survives");
    const end = Date.now() + 30_000;
    for (;;) {
      done = await client.fineTuning.jobs.retrieve(jobId);
      if (done.status !== "running" && done.status !== "queued") break;
      assert.ok(Date.now() < end, "the resumed job did not finish in 30 s");
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.equal(done.status, "succeeded", JSON.stringify(done.error));
    const events = (await client.fineTuning.jobs.listEvents(jobId, { limit: 100 })).data.map((e) => e.message);
    assert.ok(events.includes("The server restarted; the job resumes from its last checkpoint"));
    const resumed = events.find((m) => m.startsWith("Fine-tuning job resumed at step "));
    assert.ok(resumed !== undefined, events.join("\n"));
    assert.ok(Number(/step (\d+)\//u.exec(resumed)![1]) >= killedAt);
    const models = (await client.models.list()).data.map((m) => m.id);
    assert.ok(models.includes(done.fine_tuned_model!));
  } finally {
    s.child.kill("SIGKILL");
    await s.exited;
  }

  // the same job, uninterrupted, in this process
  const spec = (readJsonObject(join(state, "jobs", jobId, "job.json")) as unknown as { spec: FineTuneJobSpec }).spec;
  const straight = join(dir, "straight");
  await runFineTuneJob(spec, { stateDir: join(straight, "state"), adapterOut: join(straight, "adapter"), session: { threads: 1 }, onEvent: () => undefined });
  const diff = maxAbsDiff(join(state, "adapters", jobId, "adapter_model.safetensors"), join(straight, "adapter", "adapter_model.safetensors"));
  assert.ok(diff <= 1e-6, `max |Δ| = ${diff}`);
});
