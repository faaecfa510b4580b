/**
 * A `peft train` run folder served as an adapter: the tiny BERT with a word-level tokenizer,
 * trained for a few steps on a three-class dataset; `/classify` with text inputs answers with the
 * run's label names and the probabilities of the trained head, equal to the head's own forward.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import OpenAI from "openai";
import { runCli } from "../cli/main.js";
import { loadTokenizer } from "../io/tokenizer.js";
import { loadModel } from "../models/load.js";
import { PeftModel } from "../peft/peft-model.js";
import { makeTinyModelDir, writeTinyDataset } from "../runs/testing.js";
import { type PeftServer, createServer } from "./server.js";
import { postJson } from "./test-util.js";

describe("peft serve: a peft train run folder with a trained head", () => {
  const dir = mkdtempSync(join(tmpdir(), "peft-serve-run-"));
  const bert = makeTinyModelDir("bert", join(dir, "bert"));
  const run = join(dir, "run");
  let server: PeftServer;
  let url: string;
  before(async () => {
    const data = writeTinyDataset(join(dir, "data.jsonl"), 48, 0);
    const r = await runCli(["train", "--model", bert, "--data", data, "--out", run, "--target", "query,value", "--r", "4", "--alpha", "8", "--epochs", "2", "--batch-size", "8", "--lr", "0.05", "--seed", "0", "--threads", "1", "--no-progress", "--no-plot"]);
    assert.equal(r.code, 0, r.stderr);
    server = await createServer({ model: bert, port: 0, adapters: [{ name: "sentiment", path: run }] });
    url = await server.listen();
  });
  after(async () => {
    await server?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test("/classify (and /v1/classify through the openai client) names the run's labels", async () => {
    const texts = ["good great lovely", "bad awful poor"];
    const res = await postJson(`${url}/classify`, { model: "sentiment", input: texts });
    assert.equal(res.status, 200, await res.clone().text());
    const body = (await res.json()) as { data: { index: number; label: string; probs: number[]; num_classes: number }[] };
    assert.equal(body.data.length, 2);
    for (const d of body.data) {
      assert.equal(d.num_classes, 3);
      assert.ok(["pos", "neg", "neu"].includes(d.label), d.label);
      assert.ok(Math.abs(d.probs.reduce((a, b) => a + b, 0) - 1) < 1e-5);
    }
    // the head's own forward, through PeftModel
    const pm = PeftModel.fromPretrained(loadModel(bert), run);
    try {
      const enc = loadTokenizer(bert).encodeBatch(texts);
      const logits = await pm.forward({ inputIds: enc.inputIds, attentionMask: enc.attentionMask });
      const l = logits.data as Float32Array;
      for (let i = 0; i < 2; i++) {
        const row = Array.from(l.subarray(i * 3, i * 3 + 3));
        const m = Math.max(...row);
        const e = row.map((x) => Math.exp(x - m));
        const p = e.map((x) => x / e.reduce((a, b) => a + b, 0));
        assert.ok(p.every((x, j) => Math.abs(x - body.data[i]!.probs[j]!) < 1e-5), `${p} vs ${body.data[i]!.probs}`);
      }
    } finally {
      await pm.dispose();
    }
    const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: "unused", maxRetries: 0 });
    const viaClient = (await client.post("/classify", { body: { model: "sentiment", input: texts[0] } })) as { data: { label: string }[] };
    assert.equal(viaClient.data[0]!.label, body.data[0]!.label);
    // embeddings of the same adapter ignore the head: hidden-size vectors
    const emb = await client.embeddings.create({ model: "sentiment", input: texts });
    assert.equal(emb.data[0]!.embedding.length, 32);
  });
});
