/**
 * The fine-tuning API through the official `openai` client, as a user meets it: upload a JSONL
 * file, create a job, poll it and its events and checkpoints, then chat with the fine-tuned model
 * (tiny GPT-2) or classify with it (tiny BERT). Bad inputs get 400s with OpenAI error objects and
 * the server keeps serving.
 */
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import OpenAI, { toFile } from "openai";
import { openGenerator } from "../generate/open.js";
import type { FineTuningJob } from "../runs/finetune/index.js";
import { tinyFineTuneModel, writeChatJsonl } from "../runs/finetune/testing.js";
import { makeTinyModelDir, writeTinyDataset } from "../runs/testing.js";
import { type PeftServer, createServer } from "./server.js";
import { postJson } from "./test-util.js";

async function waitForJob(client: OpenAI, id: string, ms = 30_000): Promise<OpenAI.FineTuning.FineTuningJob> {
  const end = Date.now() + ms;
  for (;;) {
    const j = await client.fineTuning.jobs.retrieve(id);
    if (j.status === "succeeded" || j.status === "failed" || j.status === "cancelled") return j;
    if (Date.now() > end) throw new Error(`job ${id} still ${j.status} after ${ms} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function upload(client: OpenAI, file: string): Promise<OpenAI.FileObject> {
  return await client.files.create({ file: await toFile(readFileSync(file), file.split("/").at(-1)!), purpose: "fine-tune" });
}

describe("fine-tuning API: chat on the tiny GPT-2 (openai client)", () => {
  const dir = mkdtempSync(join(tmpdir(), "peft-ft-http-"));
  const model = tinyFineTuneModel(dir);
  let server: PeftServer;
  let client: OpenAI;
  let url: string;
  before(async () => {
    server = await createServer({ model, port: 0, stateDir: join(dir, "state"), threads: 1 });
    url = await server.listen();
    client = new OpenAI({ baseURL: `${url}/v1`, apiKey: "unused", maxRetries: 0 });
  });
  after(async () => {
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test("upload → job → events and checkpoints → chat with ft:gpt2:tiny:<id>", async () => {
    const f = await upload(client, writeChatJsonl(join(dir, "train.jsonl"), 16, 1));
    assert.equal(f.object, "file");
    assert.equal(f.purpose, "fine-tune");
    assert.equal(f.bytes, readFileSync(join(dir, "train.jsonl")).length);
    assert.deepEqual((await client.files.retrieve(f.id)).id, f.id);
    assert.ok((await client.files.list()).data.some((x) => x.id === f.id));
    assert.equal(await (await client.files.content(f.id)).text(), readFileSync(join(dir, "train.jsonl"), "utf8"));

    const created = await client.fineTuning.jobs.create({
      model: "gpt2",
      training_file: f.id,
      hyperparameters: { n_epochs: 2, batch_size: 4, learning_rate_multiplier: 10 },
      suffix: "tiny",
      seed: 3,
      peft: { method: "lora", r: 4, checkpoint_every: 2 },
    } as OpenAI.FineTuning.JobCreateParams);
    assert.equal(created.object, "fine_tuning.job");
    assert.ok(["queued", "running"].includes(created.status), created.status);
    assert.deepEqual(created.hyperparameters, { n_epochs: 2, batch_size: 4, learning_rate_multiplier: 10 });
    const job = await waitForJob(client, created.id);
    assert.equal(job.status, "succeeded", JSON.stringify(job.error));
    assert.equal(job.fine_tuned_model, `ft:gpt2:tiny:${created.id.slice("ftjob-".length)}`);
    assert.ok(job.trained_tokens! > 0);
    assert.equal(job.result_files.length, 1);
    const csv = await (await client.files.content(job.result_files[0]!)).text();
    assert.match(csv, /^step,train_loss,learning_rate\n1,/u);

    const events = [];
    for await (const e of client.fineTuning.jobs.listEvents(created.id, { limit: 5 })) events.push(e);
    const steps = events.filter((e) => e.type === "metrics" && e.message.startsWith("Step")).map((e) => e.data as { step: number; train_loss: number }).sort((a, b) => a.step - b.step);
    assert.equal(steps.length, 8); // 16 examples / batch 4 × 2 epochs
    assert.ok(steps.at(-1)!.train_loss < steps[0]!.train_loss, `loss ${steps[0]!.train_loss} → ${steps.at(-1)!.train_loss}`);
    assert.ok(events.some((e) => e.message === "The job has successfully completed"));
    const ckpts = (await client.fineTuning.jobs.checkpoints.list(created.id)).data;
    assert.deepEqual(ckpts.map((c) => c.step_number), [8, 6, 4, 2]);
    assert.equal(ckpts[0]!.fine_tuned_model_checkpoint, `${job.fine_tuned_model}:ckpt-step-8`);
    assert.ok((await client.fineTuning.jobs.list()).data.some((j) => j.id === created.id));

    // servable at once: listed, and chat on it answers as the adapter folder does in a local generator
    assert.ok((await client.models.list()).data.some((m) => m.id === job.fine_tuned_model));
    const messages = [{ role: "system" as const, content: "film" }, { role: "user" as const, content: "the food was good" }];
    const r = await client.chat.completions.create({ model: job.fine_tuned_model!, messages, max_tokens: 2, temperature: 0 });
    const g = openGenerator({ model, adapters: [join(dir, "state", "adapters", created.id)] });
    try {
      const ids = g.tokenizer!.encodeChat(messages, { addGenerationPrompt: true });
      const want = await g.engine.generate({ promptIds: ids, adapter: g.adapterNames[0]!, params: { maxNewTokens: 2, temperature: 0, doSample: false } });
      assert.equal(r.choices[0]!.message.content, want.text);
      const base = await g.engine.generate({ promptIds: ids, params: { maxNewTokens: 2, temperature: 0, doSample: false } });
      assert.notDeepEqual(want.tokenIds, base.tokenIds, "the fine-tuned adapter answers as the base model does");
    } finally {
      await g.close();
    }
    const adapterCfg = JSON.parse(readFileSync(join(dir, "state", "adapters", created.id, "adapter_config.json"), "utf8")) as { peft_type: string; r: number };
    assert.equal(adapterCfg.peft_type, "LORA");
    assert.equal(adapterCfg.r, 4);
  });

  test("bad inputs: 400s with OpenAI error objects, nothing else affected", async () => {
    writeFileSync(join(dir, "bad.jsonl"), '{"prompt": "a", "completion": "b"}\n{"prompt": "a", "completion": \n');
    await assert.rejects(upload(client, join(dir, "bad.jsonl")), (e: unknown) => {
      assert.ok(e instanceof OpenAI.BadRequestError);
      const err = e.error as { code: string; message: string };
      assert.equal(err.code, "PEFT_ERR_TRAINING_FILE");
      assert.match(err.message, /line 2: not valid JSON/u);
      return true;
    });
    writeFileSync(join(dir, "mixed.jsonl"), '{"prompt": "a", "completion": "b"}\n\n{"text": "good", "label": "pos"}\n');
    await assert.rejects(upload(client, join(dir, "mixed.jsonl")), /line 3: a classification example in a prompt-completion file/u);
    const good = await upload(client, writeChatJsonl(join(dir, "ok.jsonl"), 4, 2));
    const cases: [Record<string, unknown>, string, string][] = [
      [{ model: "llama-7b", training_file: good.id }, "model", "PEFT_ERR_FINETUNE_MODEL"],
      [{ model: "gpt2", training_file: "file-000000000000000000000000" }, "training_file", "PEFT_ERR_INVALID_REQUEST"],
      [{ model: "gpt2", training_file: good.id, hyperparameters: { n_epochs: 0 } }, "hyperparameters.n_epochs", "PEFT_ERR_INVALID_REQUEST"],
      [{ model: "gpt2", training_file: good.id, hyperparameters: { batch_size: "large" } }, "hyperparameters.batch_size", "PEFT_ERR_INVALID_REQUEST"],
      [{ model: "gpt2", training_file: good.id, hyperparameters: { learning_rate_multiplier: -1 } }, "hyperparameters.learning_rate_multiplier", "PEFT_ERR_INVALID_REQUEST"],
      [{ model: "gpt2", training_file: good.id, hyperparameters: { batch_size: 5 } }, "hyperparameters.batch_size", "PEFT_ERR_INVALID_REQUEST"],
      [{ model: "gpt2", training_file: good.id, peft: { method: "nope" } }, "peft.method", "PEFT_ERR_INVALID_REQUEST"],
      [{ model: "gpt2", training_file: good.id, suffix: "a b" }, "suffix", "PEFT_ERR_INVALID_REQUEST"],
    ];
    const before = (await client.fineTuning.jobs.list()).data.length;
    for (const [body, param, code] of cases) {
      const res = await postJson(`${url}/v1/fine_tuning/jobs`, body);
      assert.equal(res.status, 400, JSON.stringify(body));
      const e = ((await res.json()) as { error: { type: string; param: string; code: string; message: string } }).error;
      assert.equal(e.type, "invalid_request_error");
      assert.equal(e.param, param, e.message);
      assert.equal(e.code, code);
    }
    assert.equal((await client.fineTuning.jobs.list()).data.length, before, "a refused job is not kept");
    await assert.rejects(client.fineTuning.jobs.retrieve("ftjob-nope"), OpenAI.NotFoundError);
    await assert.rejects(client.files.retrieve("file-nope"), OpenAI.NotFoundError);
    // the server still serves
    const r = await client.chat.completions.create({ model: "gpt2", messages: [{ role: "user", content: "good" }], max_tokens: 1 });
    assert.equal(r.choices.length, 1);
    assert.equal((await client.files.delete(good.id)).deleted, true);
    await assert.rejects(client.files.retrieve(good.id), OpenAI.NotFoundError);
  });

  test("a job runs while the server answers chat requests: both finish", async () => {
    const f = await upload(client, writeChatJsonl(join(dir, "co.jsonl"), 8, 6));
    const job = await client.fineTuning.jobs.create({ model: "gpt2", training_file: f.id, hyperparameters: { n_epochs: 2, batch_size: 2 }, seed: 5 });
    let answered = 0;
    let finished: OpenAI.FineTuning.FineTuningJob | null = null;
    const chats = (async () => {
      while (finished === null) {
        const r = await client.chat.completions.create({ model: "gpt2", messages: [{ role: "user", content: "the food was good" }], max_tokens: 4, temperature: 0 });
        assert.equal(r.choices[0]!.finish_reason, "length");
        answered++;
      }
    })();
    finished = await waitForJob(client, job.id);
    const duringJob = answered;
    await chats;
    assert.equal(finished.status, "succeeded", JSON.stringify(finished.error));
    assert.ok(duringJob >= 1, "no chat answer while the job ran");
    const steps = (await client.fineTuning.jobs.listEvents(job.id, { limit: 100 })).data.filter((e) => e.type === "metrics");
    assert.equal(steps.length, 8);
  });

  test("cancel a queued job; cancelling it again is a 400", async () => {
    const f = await upload(client, writeChatJsonl(join(dir, "c.jsonl"), 8, 4));
    const body = { model: "gpt2", training_file: f.id, hyperparameters: { n_epochs: 20, batch_size: 1 }, seed: 1 };
    const a = await client.fineTuning.jobs.create(body);
    const b = await client.fineTuning.jobs.create(body);
    const cb = await client.fineTuning.jobs.cancel(b.id);
    assert.equal(cb.status, "cancelled");
    const ca = await client.fineTuning.jobs.cancel(a.id);
    assert.ok(["running", "queued", "cancelled"].includes(ca.status));
    assert.equal((await waitForJob(client, a.id)).status, "cancelled");
    await assert.rejects(client.fineTuning.jobs.cancel(b.id), OpenAI.BadRequestError);
  });
});

describe("fine-tuning API: classification on the tiny BERT (openai client)", () => {
  const dir = mkdtempSync(join(tmpdir(), "peft-ft-cls-"));
  const model = makeTinyModelDir("bert", join(dir, "bert"));
  let server: PeftServer;
  let client: OpenAI;
  let url: string;
  before(async () => {
    server = await createServer({ model, port: 0, threads: 1 });
    url = await server.listen();
    client = new OpenAI({ baseURL: `${url}/v1`, apiKey: "unused", maxRetries: 0 });
  });
  after(async () => {
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test("{text, label} → a classifier adapter; /classify by the fine-tuned model names the labels", async () => {
    const train = await upload(client, writeTinyDataset(join(dir, "t.jsonl"), 40, 1, 2));
    assert.deepEqual((train as unknown as { labels: string[] }).labels, ["neg", "pos"]);
    const valid = await upload(client, writeTinyDataset(join(dir, "v.jsonl"), 8, 2, 2));
    const created = await client.fineTuning.jobs.create({
      model: "bert",
      training_file: train.id,
      validation_file: valid.id,
      hyperparameters: { n_epochs: 4, batch_size: 8, learning_rate_multiplier: 20 },
      seed: 0,
    });
    const job = (await waitForJob(client, created.id)) as unknown as FineTuningJob;
    assert.equal(job.status, "succeeded", JSON.stringify(job.error));
    const events = (await client.fineTuning.jobs.listEvents(created.id, { limit: 100 })).data;
    assert.ok(events.some((e) => e.message.startsWith("Step 20: validation loss=")), events.map((e) => e.message).join("\n"));
    const res = await postJson(`${url}/classify`, { model: job.fine_tuned_model, input: ["great superb good", "awful bad poor"] });
    assert.equal(res.status, 200);
    const out = (await res.json()) as { data: { label: string; probs: number[] }[] };
    assert.deepEqual(out.data.map((d) => d.label), ["pos", "neg"]);
    // a chat file cannot train an encoder
    const chat = await upload(client, writeChatJsonl(join(dir, "chat.jsonl"), 4, 1));
    const bad = await postJson(`${url}/v1/fine_tuning/jobs`, { model: "bert", training_file: chat.id });
    assert.equal(bad.status, 400);
    assert.equal(((await bad.json()) as { error: { code: string } }).error.code, "PEFT_ERR_FINETUNE_MODEL");
  });
});
