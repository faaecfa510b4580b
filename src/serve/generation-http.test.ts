/**
 * Generation through the official openai client and raw HTTP on the tiny GPT-2 fixture (token-id
 * prompts, vLLM's return_token_ids): mixed traffic on several adapters gives each request the
 * tokens `peft generate` gives with that adapter alone (greedy); streaming ends with [DONE] and
 * carries usage; n, seed, logprobs, limits; a client abort frees its slot (seen in /metrics);
 * reload and unload while a request runs; LoRAX adapter_parameters.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import OpenAI from "openai";
import { addWeightedLoraAdapter } from "../compose/combine-adapters.js";
import { GenerationEngine } from "../generate/index.js";
import { openGenerator } from "../generate/open.js";
import { loadModel } from "../models/load.js";
import { PeftModel } from "../peft/peft-model.js";
import { fixturePath } from "../util/paths.js";
import { type PeftServer, createServer } from "./server.js";
import { GPT2, LLAMA, adapterRoot, getMetrics, metricValue, postJson, waitForMetrics } from "./test-util.js";

const ADAPTERS = ["lora", "multi_a", "multi_b", "ia3", "rslora_all_linear"];

/** `peft generate`'s greedy tokens for one adapter alone (null: the base model). */
async function generateAlone(adapter: string | null, prompt: number[], maxNewTokens: number): Promise<number[]> {
  const g = openGenerator({ model: GPT2, adapters: adapter ? [fixturePath("peft-parity", "gpt2", adapter)] : [] });
  try {
    const r = await g.engine.generate({ promptIds: prompt, adapter: adapter ? g.adapterNames[0]! : null, params: { maxNewTokens, temperature: 0, doSample: false } });
    return r.tokenIds;
  } finally {
    await g.close();
  }
}

/** Every `data:` payload of an SSE body, in order. */
function sseData(text: string): string[] {
  return text
    .split("\n\n")
    .filter((e) => e.startsWith("data: "))
    .map((e) => e.slice(6));
}

describe("peft serve: generation (gpt2 fixture, token-id prompts)", () => {
  let server: PeftServer;
  let url: string;
  let client: OpenAI;
  const root = adapterRoot("gpt2", { lora: "lora", ia3: "ia3", multi_a: "multi_a", multi_b: "multi_b" });
  before(async () => {
    server = await createServer({
      model: GPT2,
      port: 0,
      adapterRoot: root.dir,
      adapters: ADAPTERS.map((name) => ({ name, path: fixturePath("peft-parity", "gpt2", name) })),
      maxConcurrent: 4,
      maxQueue: 32,
    });
    url = await server.listen();
    client = new OpenAI({ baseURL: `${url}/v1`, apiKey: "unused", maxRetries: 0 });
  });
  after(async () => {
    await server.close();
    root.dispose();
  });

  test("mixed traffic on 5 adapters and the base: each request gets the tokens of its adapter alone (greedy)", async () => {
    const prompts = [
      [5, 17, 42],
      [1, 2, 3, 4, 5, 6],
    ];
    const models = ["base", ...ADAPTERS];
    const jobs = models.flatMap((m) => prompts.map((p) => ({ m, p })));
    const results = await Promise.all(jobs.map(({ m, p }) => client.completions.create({ model: m, prompt: p, max_tokens: 6, temperature: 0, return_token_ids: true } as OpenAI.CompletionCreateParamsNonStreaming)));
    for (let i = 0; i < jobs.length; i++) {
      const { m, p } = jobs[i]!;
      const choice = results[i]!.choices[0]! as unknown as { token_ids: number[]; prompt_token_ids: number[]; finish_reason: string };
      assert.deepEqual(choice.prompt_token_ids, p);
      assert.deepEqual(choice.token_ids, await generateAlone(m === "base" ? null : m, p, 6), `${m} ${p}`);
      assert.equal(choice.finish_reason, "length");
      assert.deepEqual(results[i]!.usage, { prompt_tokens: p.length, completion_tokens: 6, total_tokens: p.length + 6 });
    }
    const lora = (results[2]!.choices[0]! as unknown as { token_ids: number[] }).token_ids;
    const base = (results[0]!.choices[0]! as unknown as { token_ids: number[] }).token_ids;
    assert.notDeepEqual(lora, base, "the adapter changes the output");
  });

  test("streaming: token chunks, then finish_reason, then usage, then data: [DONE]", async () => {
    const body = { model: "lora", prompt: [5, 17, 42], max_tokens: 5, temperature: 0, stream: true, stream_options: { include_usage: true }, return_token_ids: true };
    const res = await postJson(`${url}/v1/completions`, body);
    assert.equal(res.status, 200);
    assert.match(res.headers.get("content-type")!, /^text\/event-stream/);
    const data = sseData(await res.text());
    assert.equal(data[data.length - 1], "[DONE]");
    const chunks = data.slice(0, -1).map((d) => JSON.parse(d) as { choices: { token_ids?: number[]; finish_reason: string | null; prompt_token_ids?: number[] }[]; usage?: { completion_tokens: number } });
    const ids = chunks.flatMap((c) => c.choices.flatMap((ch) => ch.token_ids ?? []));
    assert.deepEqual(ids, await generateAlone("lora", [5, 17, 42], 5));
    assert.deepEqual(chunks[0]!.choices[0]!.prompt_token_ids, [5, 17, 42]);
    assert.equal(chunks[chunks.length - 2]!.choices[0]!.finish_reason, "length");
    assert.equal(chunks[chunks.length - 1]!.usage!.completion_tokens, 5);
    // the openai client reads the same stream
    const stream = await client.completions.create({ model: "lora", prompt: [5, 17, 42], max_tokens: 5, temperature: 0, stream: true, stream_options: { include_usage: true } });
    let n = 0;
    let usage = 0;
    for await (const c of stream) {
      if (c.choices[0]?.finish_reason === null) n++;
      if (c.usage) usage = c.usage.completion_tokens;
    }
    assert.equal(n, 5);
    assert.equal(usage, 5);
  });

  test("n, seed, logprobs and stop_token_ids", async () => {
    const ask = (seed: number) => client.completions.create({ model: "multi_a", prompt: [3, 9], max_tokens: 8, temperature: 1, n: 3, seed, logprobs: 2, return_token_ids: true } as OpenAI.CompletionCreateParamsNonStreaming);
    const [a, b] = [await ask(7), await ask(7)];
    assert.equal(a.choices.length, 3);
    const ids = (r: OpenAI.Completion) => r.choices.map((c) => (c as unknown as { token_ids: number[] }).token_ids);
    assert.deepEqual(ids(a), ids(b), "same seed, same samples");
    assert.deepEqual(a.choices.map((c) => c.index), [0, 1, 2]);
    const lp = a.choices[0]!.logprobs!;
    assert.equal(lp.tokens!.length, 8);
    assert.equal(lp.token_logprobs!.length, 8);
    assert.ok(lp.token_logprobs!.every((x) => x! <= 0));
    assert.ok(lp.top_logprobs!.every((t) => Object.keys(t).length >= 1 && Object.keys(t).length <= 2));
    const greedy = await generateAlone("multi_a", [3, 9], 8);
    const stop = await client.completions.create({ model: "multi_a", prompt: [3, 9], max_tokens: 8, temperature: 0, stop_token_ids: [greedy[2]!], return_token_ids: true } as OpenAI.CompletionCreateParamsNonStreaming);
    const sc = stop.choices[0]! as unknown as { token_ids: number[]; finish_reason: string };
    assert.equal(sc.finish_reason, "stop");
    assert.deepEqual(sc.token_ids, greedy.slice(0, greedy.indexOf(greedy[2]!) + 1));
  });

  test("limits: max_tokens beyond the context, an empty prompt, a token outside the vocabulary → 400 error objects", async () => {
    await assert.rejects(client.completions.create({ model: "base", prompt: [1, 2, 3], max_tokens: 62 }), (e: unknown) => e instanceof OpenAI.BadRequestError && e.param === "max_tokens" && /maximum context length is 64/.test(e.message));
    await assert.rejects(client.completions.create({ model: "base", prompt: [1, 999] as number[], max_tokens: 2 }), (e: unknown) => e instanceof OpenAI.BadRequestError && e.code === "PEFT_ERR_PROMPT_TOKEN");
    await assert.rejects(client.completions.create({ model: "base", prompt: "text", max_tokens: 2 }), (e: unknown) => e instanceof OpenAI.BadRequestError && e.code === "PEFT_ERR_UNSUPPORTED_TASK");
    await assert.rejects(client.completions.create({ model: "base", prompt: [1], max_tokens: 2, temperature: -1 }), (e: unknown) => e instanceof OpenAI.BadRequestError && e.param === "temperature");
  });

  test("a client that disconnects mid-stream frees its slot at once (seen in /metrics)", async () => {
    const before = await getMetrics(url);
    const tokensBefore = metricValue(before, "peft_generation_tokens_total");
    const abortedBefore = metricValue(before, "peft_requests_aborted_total");
    const ac = new AbortController();
    const res = await postJson(`${url}/v1/completions`, { model: "lora", prompt: [5], max_tokens: 63, temperature: 0, ignore_eos: true, stream: true }, {}, ac.signal);
    const reader = res.body!.getReader();
    await reader.read(); // the first chunk arrived: the request runs
    ac.abort();
    const m = await waitForMetrics(url, (t) => metricValue(t, "peft_num_requests_running") === 0 && metricValue(t, "peft_queue_running_requests") === 0 && metricValue(t, "peft_requests_aborted_total") > abortedBefore);
    assert.ok(metricValue(m, "peft_generation_tokens_total") - tokensBefore < 63, "the request stopped before its 63 tokens");
    const ok = await client.completions.create({ model: "lora", prompt: [5], max_tokens: 2, temperature: 0 });
    assert.equal(ok.choices[0]!.finish_reason, "length");
  });

  test("reload in place and unload while a request runs: it finishes on the weights it started with", async () => {
    assert.equal((await postJson(`${url}/v1/load_lora_adapter`, { lora_name: "swap", lora_path: "lora" })).status, 200);
    const want = await generateAlone("lora", [5, 17, 42], 40);
    const running = postJson(`${url}/v1/completions`, { model: "swap", prompt: [5, 17, 42], max_tokens: 40, temperature: 0, ignore_eos: true, stream: true, return_token_ids: true });
    const res = await running;
    const reader = res.body!.getReader();
    let text = new TextDecoder().decode((await reader.read()).value);
    assert.equal((await postJson(`${url}/v1/load_lora_adapter`, { lora_name: "swap", lora_path: "ia3", load_inplace: true })).status, 200);
    const during = await client.completions.create({ model: "swap", prompt: [5, 17, 42], max_tokens: 4, temperature: 0, return_token_ids: true } as OpenAI.CompletionCreateParamsNonStreaming);
    assert.deepEqual((during.choices[0] as unknown as { token_ids: number[] }).token_ids, await generateAlone("ia3", [5, 17, 42], 4), "new requests use the new weights");
    assert.equal((await postJson(`${url}/v1/unload_lora_adapter`, { lora_name: "swap" })).status, 200);
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      text += new TextDecoder().decode(value);
    }
    const ids = sseData(text)
      .filter((d) => d !== "[DONE]")
      .flatMap((d) => (JSON.parse(d) as { choices: { token_ids?: number[] }[] }).choices.flatMap((c) => c.token_ids ?? []));
    assert.deepEqual(ids, want);
    await assert.rejects(client.completions.create({ model: "swap", prompt: [1], max_tokens: 1 }), OpenAI.NotFoundError);
  });

  test("LoRAX adapter_parameters: a linear mix equals PEFT's add_weighted_adapter, computed once", async () => {
    const params = { ids: ["multi_a", "multi_b"], weights: [0.7, 0.5], merge_strategy: "linear" };
    const ask = () => client.completions.create({ model: "base", prompt: [5, 17, 42], max_tokens: 6, temperature: 0, return_token_ids: true, adapter_parameters: params } as OpenAI.CompletionCreateParamsNonStreaming);
    const loadsBefore = metricValue(await getMetrics(url), "peft_lora_loads_total");
    const [r1, r2] = [await ask(), await ask()];
    const pm = new PeftModel(loadModel(GPT2));
    for (const n of ["multi_a", "multi_b"]) pm.loadAdapter(fixturePath("peft-parity", "gpt2", n), n);
    addWeightedLoraAdapter(pm, ["multi_a", "multi_b"], [0.7, 0.5], "mix", { combinationType: "linear" });
    const engine = new GenerationEngine(pm);
    try {
      const want = (await engine.generate({ promptIds: [5, 17, 42], adapter: "mix", params: { maxNewTokens: 6, temperature: 0, doSample: false } })).tokenIds;
      assert.deepEqual((r1.choices[0] as unknown as { token_ids: number[] }).token_ids, want);
      assert.deepEqual((r2.choices[0] as unknown as { token_ids: number[] }).token_ids, want);
    } finally {
      await engine.close();
      await pm.dispose();
    }
    const loads = metricValue(await getMetrics(url), "peft_lora_loads_total") - loadsBefore;
    assert.ok(loads <= 3, `the mix is built once (${loads} loads: the mix and at most its two sources)`);
    await assert.rejects(client.completions.create({ model: "base", prompt: [1], max_tokens: 1, adapter_parameters: { ids: ["nope"], weights: [1] } } as OpenAI.CompletionCreateParamsNonStreaming), OpenAI.NotFoundError);
  });
});

describe("peft serve: generation on the Llama fixture (grouped-query attention, RoPE)", () => {
  let server: PeftServer;
  let client: OpenAI;
  before(async () => {
    server = await createServer({ model: LLAMA, port: 0, adapters: [{ name: "lora", path: fixturePath("peft-parity", "llama", "lora") }] });
    client = new OpenAI({ baseURL: `${await server.listen()}/v1`, apiKey: "unused", maxRetries: 0 });
  });
  after(async () => {
    await server.close();
  });

  test("completions with and without the adapter equal the engine's greedy tokens (openai client)", async () => {
    const g = openGenerator({ model: LLAMA, adapters: [fixturePath("peft-parity", "llama", "lora")] });
    try {
      for (const [model, adapter] of [["base", null], ["lora", g.adapterNames[0]!]] as const) {
        const r = await client.completions.create({ model, prompt: [7, 3, 11, 2], max_tokens: 6, temperature: 0, return_token_ids: true } as OpenAI.CompletionCreateParamsNonStreaming);
        const want = await g.engine.generate({ promptIds: [7, 3, 11, 2], adapter, params: { maxNewTokens: 6, temperature: 0, doSample: false } });
        assert.deepEqual((r.choices[0] as unknown as { token_ids: number[] }).token_ids, want.tokenIds, model);
      }
    } finally {
      await g.close();
    }
  });
});
