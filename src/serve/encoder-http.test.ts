/**
 * Encoder endpoints through the official openai client and raw HTTP: USE-lite embeddings (the
 * default model) against the library's own embedder, BERT embeddings and /classify with adapters
 * from the fixtures, eviction under --max-loras 2 with 8 adapters, the bounded queue (429), a
 * client abort freeing its slot, and the SIGTERM-style drain.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import OpenAI from "openai";
import { UseLiteEmbedder } from "../models/use-lite/embed.js";
import { PeftModel } from "../peft/peft-model.js";
import { loadModel } from "../models/load.js";
import { CompiledGraph } from "../runtime/session.js";
import { fixturePath } from "../util/paths.js";
import { type PeftServer, createServer } from "./server.js";
import { BERT, adapterRoot, getMetrics, metricValue, postJson, waitForMetrics } from "./test-util.js";

const norm = (v: readonly number[]) => Math.sqrt(v.reduce((s, x) => s + x * x, 0));
const maxDiff = (a: readonly number[], b: readonly number[]) => a.reduce((m, x, i) => Math.max(m, Math.abs(x - b[i]!)), 0);

/** An embeddings request long enough to be seen running (many batches of long texts). */
function longInput(n = 256): string[] {
  return Array.from({ length: n }, (_, i) => `sentence ${i} ${"the quick brown fox jumps over the lazy dog ".repeat(12)}`);
}

describe("peft serve: USE-lite (the default model)", () => {
  let server: PeftServer;
  let url: string;
  before(async () => {
    server = await createServer({ port: 0, maxConcurrent: 1, maxQueue: 1 });
    url = await server.listen();
  });
  after(async () => {
    await server.close();
  });

  test("embeddings through the openai client equal the library's embedder (base64 and float)", async () => {
    const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: "unused", maxRetries: 0 });
    const texts = ["Hello world.", "A cat sat on the mat."];
    const r = await client.embeddings.create({ model: "use-lite", input: texts });
    assert.equal(r.data.length, 2);
    assert.equal(r.model, "use-lite");
    assert.ok(r.usage.prompt_tokens > 4);
    const ref = await UseLiteEmbedder.create();
    try {
      const want = await ref.embed(texts);
      for (let i = 0; i < 2; i++) {
        assert.equal(r.data[i]!.embedding.length, 512);
        assert.ok(Math.abs(norm(r.data[i]!.embedding) - 1) < 1e-4);
        assert.ok(maxDiff(r.data[i]!.embedding, want[i]!) < 1e-5);
      }
    } finally {
      await ref.release();
    }
    const f = await client.embeddings.create({ model: "use-lite", input: "Hello world.", encoding_format: "float" });
    assert.ok(maxDiff(f.data[0]!.embedding, r.data[0]!.embedding) < 1e-7);
    await assert.rejects(client.embeddings.create({ model: "nope", input: "x" }), (e: unknown) => e instanceof OpenAI.NotFoundError && e.code === "PEFT_ERR_UNKNOWN_MODEL" && e.param === "model");
    const cls = await postJson(`${url}/v1/classify`, { model: "use-lite", input: ["x"] });
    assert.equal(cls.status, 400);
    assert.equal(((await cls.json()) as { error: { code: string } }).error.code, "PEFT_ERR_UNSUPPORTED_TASK");
  });

  test("a full queue answers 429 with Retry-After; an aborted client frees its slot (seen in /metrics)", async () => {
    const a = new AbortController();
    const b = new AbortController();
    const pa = postJson(`${url}/v1/embeddings`, { model: "use-lite", input: longInput(), encoding_format: "float" }, {}, a.signal).catch((e: unknown) => e);
    await waitForMetrics(url, (m) => metricValue(m, "peft_queue_running_requests") === 1);
    const pb = postJson(`${url}/v1/embeddings`, { model: "use-lite", input: longInput(), encoding_format: "float" }, {}, b.signal).catch((e: unknown) => e);
    await waitForMetrics(url, (m) => metricValue(m, "peft_queue_waiting_requests") === 1);
    const full = await postJson(`${url}/v1/embeddings`, { model: "use-lite", input: "one more" });
    assert.equal(full.status, 429);
    assert.equal(full.headers.get("retry-after"), "1");
    assert.equal(((await full.json()) as { error: { type: string; code: string } }).error.code, "PEFT_ERR_QUEUE_FULL");
    a.abort();
    // the aborted request leaves; the queued one runs
    await waitForMetrics(url, (m) => metricValue(m, "peft_queue_waiting_requests") === 0 && metricValue(m, "peft_queue_running_requests") === 1 && metricValue(m, "peft_requests_aborted_total") >= 1);
    b.abort();
    const m = await waitForMetrics(url, (t) => metricValue(t, "peft_queue_running_requests") === 0);
    assert.equal(metricValue(m, "peft_requests_aborted_total"), 2);
    assert.equal(metricValue(m, "peft_queue_rejected_total"), 1);
    await Promise.all([pa, pb]);
    // and the server still answers
    assert.equal((await postJson(`${url}/v1/embeddings`, { model: "use-lite", input: "still here" })).status, 200);
  });

  test("close() drains: the running request finishes, a new one gets 503", async () => {
    const running = postJson(`${url}/v1/embeddings`, { model: "use-lite", input: longInput(128), encoding_format: "float" });
    await waitForMetrics(url, (m) => metricValue(m, "peft_queue_running_requests") === 1);
    const closing = server.close();
    const refused = await postJson(`${url}/v1/embeddings`, { model: "use-lite", input: "late" });
    assert.equal(refused.status, 503);
    assert.equal(((await refused.json()) as { error: { code: string } }).error.code, "PEFT_ERR_SERVER_DRAINING");
    const done = await running;
    assert.equal(done.status, 200);
    assert.equal(((await done.json()) as { data: unknown[] }).data.length, 128);
    await closing;
  });
});

describe("peft serve: BERT with adapters (embeddings, classify, eviction)", () => {
  let server: PeftServer;
  let url: string;
  const names = ["a1", "a2", "a3", "a4", "a5", "a6", "a7", "a8"];
  const root = adapterRoot("bert", Object.fromEntries(names.map((n, i) => [n, i % 2 ? "lora" : "multi_a"])));
  before(async () => {
    server = await createServer({ model: BERT, port: 0, adapterRoot: root.dir, maxLoras: 2, maxCpuLoras: 2, adapters: [{ name: "lora", path: fixturePath("peft-parity", "bert", "lora") }] });
    url = await server.listen();
  });
  after(async () => {
    await server.close();
    root.dispose();
  });

  test("/classify with an adapter gives PEFT's logits as probabilities; token-id inputs", async () => {
    const ref = await import("../io/safetensors.js");
    const inputs = ref.SafetensorsFile.open(fixturePath("peft-parity", "bert", "base.outputs.safetensors"));
    const ids = inputs.get("input_ids");
    inputs.close();
    const outputs = ref.SafetensorsFile.open(fixturePath("peft-parity", "bert", "lora.outputs.safetensors"));
    const logits = outputs.get("logits");
    outputs.close();
    const seq = ids.shape[1]!;
    const row0 = Array.from(ids.data as BigInt64Array, Number).slice(0, seq);
    const r = await postJson(`${url}/classify`, { model: "lora", input: [row0] });
    assert.equal(r.status, 200, await r.clone().text());
    const body = (await r.json()) as { data: { index: number; label: string; probs: number[]; num_classes: number }[]; usage: { prompt_tokens: number } };
    assert.equal(body.data[0]!.num_classes, 3);
    const want = Array.from(logits.data as Float32Array).slice(0, 3);
    const mx = Math.max(...want);
    const e = want.map((x) => Math.exp(x - mx));
    const probs = e.map((x) => x / e.reduce((s, y) => s + y, 0));
    assert.ok(maxDiff(body.data[0]!.probs, probs) < 1e-4, `${body.data[0]!.probs} vs ${probs}`);
    assert.equal(body.data[0]!.label, `LABEL_${probs.indexOf(Math.max(...probs))}`);
    assert.equal(body.usage.prompt_tokens, seq);
    // the base model has its own 3-label head
    assert.equal((await postJson(`${url}/classify`, { model: "base", input: [row0] })).status, 200);
  });

  test("embeddings of BERT are the masked mean of the last hidden states (openai client, token ids)", async () => {
    const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: "unused", maxRetries: 0 });
    const r = await client.embeddings.create({ model: "lora", input: [[2, 7, 9, 4], [5, 6]] });
    assert.equal(r.data.length, 2);
    assert.equal(r.data[0]!.embedding.length, 32);
    assert.ok(Math.abs(norm(r.data[1]!.embedding) - 1) < 1e-5);
    const base = await client.embeddings.create({ model: "base", input: [[2, 7, 9, 4]] });
    assert.ok(maxDiff(base.data[0]!.embedding, r.data[0]!.embedding) > 1e-4, "the adapter changes the embedding");
    // the same row alone and padded in a batch embeds the same
    const alone = await client.embeddings.create({ model: "lora", input: [[5, 6]] });
    assert.ok(maxDiff(alone.data[0]!.embedding, r.data[1]!.embedding) < 1e-5);
    // reference: the PeftModel's last hidden states, mean over the 4 tokens, L2-normalised
    const pm = PeftModel.fromPretrained(loadModel(BERT), fixturePath("peft-parity", "bert", "lora"));
    const built = pm.buildGraph();
    built.graph.output(built.outputs.hidden, "hidden");
    const session = await CompiledGraph.create(built.graph);
    try {
      const shape = [1, 4];
      const out = await session.run({ input_ids: { dtype: "int64", shape, data: BigInt64Array.from([2n, 7n, 9n, 4n]) }, attention_mask: { dtype: "int64", shape, data: new BigInt64Array(4).fill(1n) } }, ["hidden"]);
      const h = out.hidden!.data as Float32Array;
      const mean = Array.from({ length: 32 }, (_, j) => (h[j]! + h[32 + j]! + h[64 + j]! + h[96 + j]!) / 4);
      const n = norm(mean);
      assert.ok(maxDiff(r.data[0]!.embedding, mean.map((x) => x / n)) < 1e-5);
    } finally {
      await session.release();
      await pm.dispose();
    }
  });

  test("8 adapters under --max-loras 2 / --max-cpu-loras 2: all answered, LRU evictions, at most 2 resident", async () => {
    const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: "unused", maxRetries: 0 });
    const before = metricValue(await getMetrics(url), "peft_lora_evictions_total");
    const results = await Promise.all(names.flatMap((n) => [client.embeddings.create({ model: n, input: [[1, 2, 3]] }), client.embeddings.create({ model: n, input: [[4, 5]] })]));
    assert.equal(results.length, 16);
    for (let i = 0; i < names.length; i++) {
      // a1, a3… are copies of multi_a and a2, a4… of lora: equal copies embed equally
      const same = names.findIndex((_, j) => j !== i && j % 2 === i % 2);
      assert.ok(maxDiff(results[2 * i]!.data[0]!.embedding, results[2 * same]!.data[0]!.embedding) < 1e-6);
    }
    assert.ok(maxDiff(results[0]!.data[0]!.embedding, results[2]!.data[0]!.embedding) > 1e-5, "different adapters differ");
    const m = await getMetrics(url);
    assert.ok(metricValue(m, "peft_lora_evictions_total") - before >= 6, m);
    const resident = m.split("\n").filter((l) => l.startsWith("peft_lora_resident{"));
    assert.ok(resident.length <= 2, resident.join("\n"));
    assert.equal(metricValue(m, "peft_lora_running_adapters"), 0);
    // adapters under the root are served by name and listed once used
    const list = (await (await fetch(`${url}/v1/models`)).json()) as { data: { id: string; parent: string | null }[] };
    for (const n of names) assert.equal(list.data.find((d) => d.id === n)?.parent, "base");
  });
});
