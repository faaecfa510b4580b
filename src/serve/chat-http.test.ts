/**
 * Chat and text completions on a model with a tokenizer and a chat template (the tiny GPT-2 with
 * a word-level tokenizer.json and a chat_template in tokenizer_config.json): the prompt is the
 * template's rendering, the tokens those of the engine on the same ids; streaming deltas.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import OpenAI from "openai";
import { openGenerator } from "../generate/open.js";
import { type PeftServer, createServer } from "./server.js";
import { tinyChatModel } from "./test-util.js";

describe("peft serve: chat and text completions (tiny GPT-2 with a tokenizer and chat template)", () => {
  const dir = mkdtempSync(join(tmpdir(), "peft-serve-chat-"));
  const model = tinyChatModel(dir);
  let server: PeftServer;
  let client: OpenAI;
  before(async () => {
    server = await createServer({ model, port: 0 });
    client = new OpenAI({ baseURL: `${await server.listen()}/v1`, apiKey: "unused", maxRetries: 0 });
  });
  after(async () => {
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test("chat: the template's prompt, the engine's tokens, a message; streaming gives the same text", async () => {
    const messages = [{ role: "user" as const, content: "good food" }];
    const r = await client.chat.completions.create({ model: "gpt2", messages, max_tokens: 5, temperature: 0, return_token_ids: true } as OpenAI.ChatCompletionCreateParamsNonStreaming);
    const g = openGenerator({ model });
    try {
      const ids = g.tokenizer!.encodeChat(messages, { addGenerationPrompt: true });
      assert.deepEqual((r as unknown as { prompt_token_ids: number[] }).prompt_token_ids, ids);
      const want = await g.engine.generate({ promptIds: ids, params: { maxNewTokens: 5, temperature: 0, doSample: false } });
      const choice = r.choices[0]!;
      assert.deepEqual((choice as unknown as { token_ids: number[] }).token_ids, want.tokenIds);
      assert.equal(choice.message.role, "assistant");
      assert.equal(choice.message.content, want.text);
      assert.equal(r.usage!.prompt_tokens, ids.length);
    } finally {
      await g.close();
    }
    const stream = await client.chat.completions.create({ model: "gpt2", messages, max_tokens: 5, temperature: 0, stream: true, stream_options: { include_usage: true } });
    let text = "";
    let role = "";
    let finish = "";
    let usage = 0;
    for await (const c of stream) {
      const ch = c.choices[0];
      if (ch?.delta.role) role = ch.delta.role;
      text += ch?.delta.content ?? "";
      if (ch?.finish_reason) finish = ch.finish_reason;
      if (c.usage) usage = c.usage.completion_tokens;
    }
    assert.equal(role, "assistant");
    assert.equal(text, r.choices[0]!.message.content);
    assert.equal(finish, "length");
    assert.equal(usage, 5);
  });

  test("chat logprobs; text prompts for completions; a bad message is a 400", async () => {
    const r = await client.chat.completions.create({ model: "gpt2", messages: [{ role: "user", content: "bad" }], max_tokens: 3, temperature: 0, logprobs: true, top_logprobs: 2 });
    const content = r.choices[0]!.logprobs!.content!;
    assert.equal(content.length, 3);
    assert.ok(content.every((t) => t.logprob <= 0 && t.top_logprobs.length === 2 && Array.isArray(t.bytes)));
    const c = await client.completions.create({ model: "gpt2", prompt: "the food was", max_tokens: 3, temperature: 0 });
    assert.equal(c.usage!.prompt_tokens, 3);
    assert.equal(c.choices[0]!.finish_reason, "length");
    await assert.rejects(client.chat.completions.create({ model: "gpt2", messages: [{ content: "no role" } as unknown as OpenAI.ChatCompletionMessageParam] }), (e: unknown) => e instanceof OpenAI.BadRequestError && e.param === "messages.0.role");
  });
});
