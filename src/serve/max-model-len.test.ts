/**
 * `peft serve --max-model-len N` (`ServeOptions.maxModelLen`): prompt + max_tokens is capped at N
 * (the tiny GPT-2 has 64 positions; here N = 16). A request that fits is served to its last token;
 * one that does not gets an OpenAI-style 400 with `PEFT_ERR_CONTEXT_LENGTH`, through raw HTTP and
 * the official openai client; `/v1/models` reports N; N above the model's positions is refused.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import OpenAI from "openai";
import { runCli } from "../cli/main.js";
import { type PeftServer, createServer } from "./server.js";
import { postJson, tinyChatModel } from "./test-util.js";

const N = 16;
const ids = (n: number) => Array.from({ length: n }, (_, i) => 1 + (i % 50));

interface ErrorBody {
  error: { message: string; type: string; param: string | null; code: string | null };
}

describe("peft serve --max-model-len", () => {
  const dir = mkdtempSync(join(tmpdir(), "peft-serve-maxlen-"));
  const model = tinyChatModel(dir);
  let server: PeftServer;
  let url: string;
  let client: OpenAI;
  before(async () => {
    server = await createServer({ model, port: 0, maxModelLen: N });
    url = await server.listen();
    client = new OpenAI({ baseURL: `${url}/v1`, apiKey: "unused", maxRetries: 0 });
  });
  after(async () => {
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test("raw HTTP: prompt + max_tokens = N is served in full; N + 1 is a 400 naming max_tokens; a prompt of N tokens is a 400 naming the prompt", async () => {
    const ok = await postJson(`${url}/v1/completions`, { prompt: ids(10), max_tokens: N - 10, temperature: 0, ignore_eos: true, return_token_ids: true });
    assert.equal(ok.status, 200);
    const body = (await ok.json()) as { choices: { token_ids: number[]; finish_reason: string }[]; usage: { total_tokens: number } };
    assert.equal(body.choices[0]!.token_ids.length, N - 10);
    assert.equal(body.usage.total_tokens, N);

    const over = await postJson(`${url}/v1/completions`, { prompt: ids(10), max_tokens: N - 9 });
    assert.equal(over.status, 400);
    const e = ((await over.json()) as ErrorBody).error;
    assert.equal(e.code, "PEFT_ERR_CONTEXT_LENGTH");
    assert.equal(e.type, "invalid_request_error");
    assert.equal(e.param, "max_tokens");
    assert.match(e.message, /maximum context length is 16 tokens; the prompt has 10 and max_tokens asks 7 more \(17\); lower max_tokens to 6/);

    const long = await postJson(`${url}/v1/completions`, { prompt: ids(N), max_tokens: 1 });
    assert.equal(long.status, 400);
    const l = ((await long.json()) as ErrorBody).error;
    assert.deepEqual([l.code, l.param], ["PEFT_ERR_CONTEXT_LENGTH", "prompt"]);
    assert.match(l.message, /maximum context length is 16 tokens, and the prompt has 16/);

    // no max_tokens: the default (16) is cut to the room left, not refused
    const rest = await postJson(`${url}/v1/completions`, { prompt: ids(12), temperature: 0, ignore_eos: true, return_token_ids: true });
    assert.equal(rest.status, 200);
    assert.equal(((await rest.json()) as { choices: { token_ids: number[] }[] }).choices[0]!.token_ids.length, N - 12);

    const models = (await (await fetch(`${url}/v1/models`)).json()) as { data: { id: string; max_model_len: number }[] };
    assert.deepEqual(models.data.map((m) => m.max_model_len), [N]);
    // the server keeps serving after the refusals
    assert.equal((await postJson(`${url}/v1/completions`, { prompt: ids(3), max_tokens: 2 })).status, 200);
  });

  test("openai client: BadRequestError with the code for completions and chat; within the cap it answers", async () => {
    await assert.rejects(client.completions.create({ model: "gpt2", prompt: ids(12), max_tokens: 5 }), (e: unknown) => e instanceof OpenAI.BadRequestError && e.code === "PEFT_ERR_CONTEXT_LENGTH" && e.param === "max_tokens");
    const long = "good food ".repeat(12);
    await assert.rejects(client.chat.completions.create({ model: "gpt2", messages: [{ role: "user", content: long }], max_tokens: 1 }), (e: unknown) => e instanceof OpenAI.BadRequestError && e.code === "PEFT_ERR_CONTEXT_LENGTH" && e.param === "messages");
    const r = await client.chat.completions.create({ model: "gpt2", messages: [{ role: "user", content: "good" }], temperature: 0 });
    assert.ok(r.usage!.total_tokens <= N, `prompt + completion ${r.usage!.total_tokens} > ${N}`);
    const c = await client.completions.create({ model: "gpt2", prompt: ids(4), max_tokens: N - 4, temperature: 0 });
    assert.equal(c.usage!.total_tokens <= N, true);
  });
});

test("--max-model-len above the model's positions, or 0, is refused before the server starts", async () => {
  const dir = mkdtempSync(join(tmpdir(), "peft-serve-maxlen-"));
  try {
    const model = tinyChatModel(dir);
    await assert.rejects(createServer({ model, port: 0, maxModelLen: 65 }), (e: unknown) => (e as { code?: string }).code === "PEFT_ERR_CONFIG" && /--max-model-len 65: must be a whole number from 1 to the model's 64 positions/.test((e as Error).message));
    const cli = await runCli(["serve", "--model", model, "--port", "0", "--max-model-len", "100"]);
    assert.equal(cli.code, 1);
    assert.match(cli.stderr, /PEFT_ERR_CONFIG[\s\S]*--max-model-len 100/);
    const zero = await runCli(["serve", "--model", model, "--max-model-len", "0"]);
    assert.equal(zero.code, 1);
    assert.match(zero.stderr, /--max-model-len/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
