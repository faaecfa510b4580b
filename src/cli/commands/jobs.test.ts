/** `peft jobs list|show|cancel --url` against a running server with an API key. */
import assert from "node:assert/strict";
import { createReadStream, mkdtempSync, rmSync } from "node:fs";
import { type AddressInfo, createServer as createNetServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { tinyFineTuneModel, writeChatJsonl } from "../../runs/finetune/testing.js";
import { type PeftServer, createServer } from "../../serve/server.js";
import { runCli } from "../main.js";

describe("peft jobs", () => {
  const dir = mkdtempSync(join(tmpdir(), "peft-jobs-cli-"));
  let server: PeftServer;
  let url = "";
  let done = "";
  let queued = "";
  before(async () => {
    server = await createServer({ model: tinyFineTuneModel(dir), port: 0, apiKey: "k", threads: 1 });
    url = await server.listen();
    const ft = server.fineTuning;
    const f = await ft.files.add(createReadStream(writeChatJsonl(join(dir, "t.jsonl"), 4, 1)), "t.jsonl", "fine-tune");
    done = ft.create({ model: "gpt2", training_file: f.id, hyperparameters: { n_epochs: 1, batch_size: 4 }, suffix: "cli", seed: 1 }).id;
    queued = ft.create({ model: "gpt2", training_file: f.id, hyperparameters: { n_epochs: 50, batch_size: 1 }, seed: 2 }).id;
    const end = Date.now() + 30_000;
    while (ft.get(done).status !== "succeeded") {
      assert.ok(Date.now() < end && ft.get(done).status !== "failed", JSON.stringify(ft.get(done)));
      await new Promise((r) => setTimeout(r, 50));
    }
  });
  after(async () => {
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test("list: a table of the jobs, newest first; --json gives the server's page", async () => {
    const r = await runCli(["jobs", "list", "--url", url, "--api-key", "k"]);
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stdout.trim().split("\n");
    assert.match(lines[0]!, /^ID\s+STATUS\s+MODEL\s+FINE_TUNED_MODEL\s+CREATED$/u);
    assert.equal(lines.length, 3);
    assert.match(r.stdout, new RegExp(`${done}\\s+succeeded\\s+gpt2\\s+ft:gpt2:cli:${done.slice(6)}`, "u"));
    const j = await runCli(["jobs", "list", "--url", url, "--api-key", "k", "--json", "--limit", "1"]);
    const page = JSON.parse(j.stdout) as { object: string; data: unknown[]; has_more: boolean };
    assert.equal(page.object, "list");
    assert.equal(page.data.length, 1);
    assert.equal(page.has_more, true);
  });

  test("show: the job card and its events; cancel: a running job, then a 400 for a finished one", async () => {
    const r = await runCli(["jobs", "show", done, "--url", `${url}/v1`, "--api-key", "k", "--events", "50"]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /status\s+succeeded/u);
    assert.match(r.stdout, /hyperparameters\s+n_epochs 1, batch_size 4, learning_rate_multiplier 1/u);
    assert.match(r.stdout, /info\s+Step 1\/1: training loss=/u);
    assert.match(r.stdout, /The job has successfully completed/u);
    const c = await runCli(["jobs", "cancel", queued, "--url", url, "--api-key", "k"]);
    assert.equal(c.code, 0, c.stderr);
    assert.match(c.stdout, new RegExp(`^${queued}: (cancelled|cancelling)`, "u"));
    const again = await runCli(["jobs", "cancel", done, "--url", url, "--api-key", "k"]);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /error \[PEFT_ERR_REMOTE_SERVER\]: .*HTTP 400 \[PEFT_ERR_JOB_STATE\]: fine-tuning job .* is succeeded/u);
  });

  test("errors: unknown job (404), wrong key (401), nothing listening", async () => {
    const unknown = await runCli(["jobs", "show", "ftjob-nope", "--url", url, "--api-key", "k"]);
    assert.match(unknown.stderr, /HTTP 404 \[PEFT_ERR_UNKNOWN_JOB\]/u);
    const key = await runCli(["jobs", "list", "--url", url, "--api-key", "wrong"]);
    assert.match(key.stderr, /HTTP 401 \[PEFT_ERR_AUTHENTICATION\]/u);
    const port = await new Promise<number>((resolve) => {
      const s = createNetServer().listen(0, "127.0.0.1", () => {
        const p = (s.address() as AddressInfo).port;
        s.close(() => resolve(p));
      });
    });
    const down = await runCli(["jobs", "list", "--url", `http://127.0.0.1:${port}`]);
    assert.equal(down.code, 1);
    assert.match(down.stderr, /\/v1\/fine_tuning\/jobs\?limit=20: cannot connect: ECONNREFUSED/u);
    const missing = await runCli(["jobs", "list"]);
    assert.match(missing.stderr, /required option '--url <url>'/u);
  });
});
