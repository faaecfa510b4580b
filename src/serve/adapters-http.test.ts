/**
 * The server core through raw HTTP and the official openai client on the tiny GPT-2 fixture:
 * API key, error objects, /v1/models, vLLM's load/unload endpoints confined to --adapter-root
 * (traversal, absolute paths, symbolic links), corrupt and mismatched adapters, body limit.
 */
import assert from "node:assert/strict";
import { mkdirSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import OpenAI from "openai";
import { fixturePath } from "../util/paths.js";
import { type PeftServer, createServer } from "./server.js";
import { GPT2, adapterRoot, getMetrics, metricValue, postJson } from "./test-util.js";

const KEY = "sk-test-0123456789";

describe("peft serve: core and adapter management (gpt2 fixture)", () => {
  let server: PeftServer;
  let url: string;
  const root = adapterRoot("gpt2", { lora: "lora", ia3: "ia3", other: "multi_a" });
  const auth = { authorization: `Bearer ${KEY}` };

  before(async () => {
    // a corrupt adapter, a mismatched one (BERT's adapter on GPT-2), a link out of the root
    mkdirSync(join(root.dir, "corrupt"));
    writeFileSync(join(root.dir, "corrupt", "adapter_config.json"), "{ not json");
    mkdirSync(join(root.dir, "truncated"));
    writeFileSync(join(root.dir, "truncated", "adapter_config.json"), JSON.stringify({ peft_type: "LORA", r: 4, lora_alpha: 8, target_modules: ["c_attn"] }));
    writeFileSync(join(root.dir, "truncated", "adapter_model.safetensors"), Buffer.from([200, 0, 0, 0, 0, 0, 0, 0, 123]));
    symlinkSync(fixturePath("peft-parity", "bert", "lora"), join(root.dir, "bert-lora-link"));
    symlinkSync(fixturePath("peft-parity", "gpt2", "lora"), join(root.dir, "escape"));
    server = await createServer({ model: GPT2, port: 0, apiKey: KEY, adapterRoot: root.dir, adapters: [{ name: "cli_lora", path: fixturePath("peft-parity", "gpt2", "lora") }], bodyLimit: 4096 });
    url = await server.listen();
  });
  after(async () => {
    await server.close();
    root.dispose();
  });

  test("health and metrics need no key; the API does (401 with an OpenAI error object)", async () => {
    assert.equal((await fetch(`${url}/health`)).status, 200);
    assert.equal((await fetch(`${url}/metrics`)).status, 200);
    const none = await fetch(`${url}/v1/models`);
    assert.equal(none.status, 401);
    const body = (await none.json()) as { error: { type: string; code: string } };
    assert.equal(body.error.type, "authentication_error");
    assert.equal(body.error.code, "PEFT_ERR_AUTHENTICATION");
    const wrong = new OpenAI({ baseURL: `${url}/v1`, apiKey: "sk-wrong", maxRetries: 0 });
    await assert.rejects(wrong.models.list(), (e: unknown) => e instanceof OpenAI.AuthenticationError && e.status === 401 && e.code === "PEFT_ERR_AUTHENTICATION");
    const prefix = new OpenAI({ baseURL: `${url}/v1`, apiKey: KEY.slice(0, -1), maxRetries: 0 });
    await assert.rejects(prefix.models.list(), OpenAI.AuthenticationError);
  });

  test("GET /v1/models lists the base and the adapters with parent and root (openai client)", async () => {
    const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: KEY, maxRetries: 0 });
    const models = [];
    for await (const m of client.models.list()) models.push(m as unknown as { id: string; parent: string | null; root: string; owned_by: string });
    const base = models.find((m) => m.id === "base")!;
    assert.equal(base.parent, null);
    assert.equal(base.root, GPT2);
    const lora = models.find((m) => m.id === "cli_lora")!;
    assert.equal(lora.parent, "base");
    assert.equal(lora.root, fixturePath("peft-parity", "gpt2", "lora"));
  });

  test("load_lora_adapter refuses paths out of the root with 403: '..', absolute paths, symbolic links", async () => {
    for (const lora_path of ["../lora", "lora/../../lora", "/etc", fixturePath("peft-parity", "gpt2", "lora"), "escape", "bert-lora-link"]) {
      const r = await postJson(`${url}/v1/load_lora_adapter`, { lora_name: "evil", lora_path }, auth);
      assert.equal(r.status, 403, lora_path);
      const b = (await r.json()) as { error: { type: string; code: string; message: string } };
      assert.equal(b.error.type, "permission_error");
      assert.equal(b.error.code, "PEFT_ERR_ADAPTER_PATH");
    }
    // an invalid adapter name is a 400 naming the rule
    const bad = await postJson(`${url}/v1/load_lora_adapter`, { lora_name: "a/b", lora_path: "lora" }, auth);
    assert.equal(bad.status, 400);
    assert.equal(((await bad.json()) as { error: { code: string } }).error.code, "PEFT_ERR_ADAPTER_NAME");
  });

  test("load, list, refuse a duplicate, reload in place, unload, 404 on a second unload", async () => {
    const load = await postJson(`${url}/v1/load_lora_adapter`, { lora_name: "mine", lora_path: "lora" }, auth);
    assert.equal(load.status, 200, await load.clone().text());
    assert.match(await load.text(), /Success: LoRA adapter 'mine' added/);
    const list = (await (await fetch(`${url}/v1/models`, { headers: auth })).json()) as { data: { id: string; root: string }[] };
    assert.equal(list.data.find((m) => m.id === "mine")?.root, join(root.dir, "lora"));
    const dup = await postJson(`${url}/v1/load_lora_adapter`, { lora_name: "mine", lora_path: "ia3" }, auth);
    assert.equal(dup.status, 400);
    assert.equal(((await dup.json()) as { error: { code: string } }).error.code, "PEFT_ERR_ADAPTER_STATE");
    const inplace = await postJson(`${url}/v1/load_lora_adapter`, { lora_name: "mine", lora_path: "ia3", load_inplace: true }, auth);
    assert.equal(inplace.status, 200);
    const list2 = (await (await fetch(`${url}/v1/models`, { headers: auth })).json()) as { data: { id: string; root: string }[] };
    assert.equal(list2.data.find((m) => m.id === "mine")?.root, join(root.dir, "ia3"));
    assert.equal((await postJson(`${url}/v1/unload_lora_adapter`, { lora_name: "mine" }, auth)).status, 200);
    const again = await postJson(`${url}/v1/unload_lora_adapter`, { lora_name: "mine" }, auth);
    assert.equal(again.status, 404);
    assert.equal(((await again.json()) as { error: { code: string; param: string } }).error.code, "PEFT_ERR_UNKNOWN_MODEL");
  });

  test("a corrupt or mismatched adapter gives 400 naming the problem, and the server keeps serving", async () => {
    const cases: [string, string, RegExp][] = [
      ["corrupt", "PEFT_ERR_CONFIG", /adapter_config\.json/],
      ["truncated", "PEFT_ERR_SAFETENSORS_FORMAT", /adapter_model\.safetensors/],
      ["nothing-here", "PEFT_ERR_MISSING_FILE", /nothing-here/],
    ];
    for (const [dir, code, msg] of cases) {
      const r = await postJson(`${url}/v1/load_lora_adapter`, { lora_name: dir.replaceAll("-", "_"), lora_path: dir }, auth);
      assert.equal(r.status, 400, dir);
      const b = (await r.json()) as { error: { code: string; message: string } };
      assert.equal(b.error.code, code, `${dir}: ${b.error.message}`);
      assert.match(b.error.message, msg);
    }
    // BERT's adapter on GPT-2: copy it inside the root (the link is refused) and load it
    const { cpSync } = await import("node:fs");
    cpSync(fixturePath("peft-parity", "bert", "lora"), join(root.dir, "bert_lora"), { recursive: true });
    const mm = await postJson(`${url}/v1/load_lora_adapter`, { lora_name: "bert_lora", lora_path: "bert_lora" }, auth);
    assert.equal(mm.status, 400);
    assert.match(((await mm.json()) as { error: { message: string } }).error.message, /query|value|target_modules|classifier/);
    assert.equal((await fetch(`${url}/health`)).status, 200);
    const list = (await (await fetch(`${url}/v1/models`, { headers: auth })).json()) as { data: { id: string }[] };
    assert.ok(!list.data.some((m) => ["corrupt", "truncated", "bert_lora"].includes(m.id)), "failed loads leave no entry");
    assert.equal((await postJson(`${url}/v1/load_lora_adapter`, { lora_name: "ok_after", lora_path: "other" }, auth)).status, 200);
  });

  test("an oversized body is refused with 413 and an error object; bad JSON with 400", async () => {
    const big = await postJson(`${url}/v1/load_lora_adapter`, { lora_name: "x", lora_path: "y".repeat(5000) }, auth);
    assert.equal(big.status, 413);
    assert.equal(((await big.json()) as { error: { code: string } }).error.code, "body_too_large");
    const bad = await fetch(`${url}/v1/load_lora_adapter`, { method: "POST", headers: { ...auth, "content-type": "application/json" }, body: "{oops" });
    assert.equal(bad.status, 400);
    assert.equal(((await bad.json()) as { error: { type: string } }).error.type, "invalid_request_error");
    const missing = await postJson(`${url}/v1/load_lora_adapter`, { lora_name: "x" }, auth);
    assert.equal(missing.status, 400);
    assert.equal(((await missing.json()) as { error: { param: string } }).error.param, "lora_path");
  });

  test("an encoder endpoint on a causal LM is a 400; an unknown route a 404 error object", async () => {
    const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: KEY, maxRetries: 0 });
    await assert.rejects(client.embeddings.create({ model: "base", input: [[1, 2, 3]] }), (e: unknown) => e instanceof OpenAI.BadRequestError && e.code === "PEFT_ERR_UNSUPPORTED_TASK");
    const r = await fetch(`${url}/v1/nothing`, { headers: auth });
    assert.equal(r.status, 404);
    assert.equal(((await r.json()) as { error: { type: string } }).error.type, "not_found_error");
  });

  test("/metrics counts requests by route and status", async () => {
    const m = await getMetrics(url);
    assert.ok(metricValue(m, 'peft_http_requests_total{route="/v1/load_lora_adapter",method="POST",status="403"}') >= 6);
    assert.ok(metricValue(m, 'peft_lora_loads_total') >= 2);
    assert.match(m, /peft_http_request_duration_seconds_bucket\{le="[^"]+",route="\/v1\/models"\}/);
  });
});
