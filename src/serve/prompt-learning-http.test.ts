/**
 * Prefix-tuning and P-tuning adapters through the server: saved with `savePretrained`, loaded at
 * run time with vLLM's `/v1/load_lora_adapter` (raw HTTP), and generated from with the official
 * openai client in one batch with a LoRA adapter and the base model; each request gets the
 * greedy tokens of full forward passes of a PeftModel holding that adapter alone.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import OpenAI from "openai";
import { loadModel } from "../models/load.js";
import { PeftModel } from "../peft/peft-model.js";
import { toFloat32 } from "../tensor.js";
import { type PeftServer, createServer } from "./server.js";
import { GPT2, adapterRoot, postJson } from "./test-util.js";

/** Greedy tokens by full forward passes (no cache) of the base with the adapter in `dir` (null: the base). */
async function greedyReference(dir: string | null, prompt: number[], n: number): Promise<number[]> {
  const pm = new PeftModel(loadModel(GPT2));
  if (dir) pm.loadAdapter(dir, "a");
  try {
    const seq = [...prompt];
    for (let i = 0; i < n; i++) {
      const l = toFloat32(await pm.forward({ inputIds: { dtype: "int64", shape: [1, seq.length], data: BigInt64Array.from(seq, BigInt) } }));
      const V = pm.base.config.vocabSize;
      const last = l.subarray(l.length - V);
      let best = 0;
      for (let j = 1; j < V; j++) if (last[j]! > last[best]!) best = j;
      seq.push(best);
    }
    return seq.slice(prompt.length);
  } finally {
    await pm.dispose();
  }
}

describe("peft serve: prefix-tuning and P-tuning adapters (gpt2 fixture)", () => {
  let server: PeftServer;
  let url: string;
  const root = adapterRoot("gpt2", { lora: "lora" });
  before(async () => {
    const base = loadModel(GPT2);
    const prefix = PeftModel.create(base, { peft_type: "PREFIX_TUNING", task_type: "CAUSAL_LM", num_virtual_tokens: 5 }, "default", { seed: 11 });
    prefix.savePretrained(join(root.dir, "prefix"));
    await prefix.dispose();
    const pt = PeftModel.create(base, { peft_type: "P_TUNING", task_type: "CAUSAL_LM", num_virtual_tokens: 3, encoder_hidden_size: 8 }, "default", { seed: 12 });
    pt.savePretrained(join(root.dir, "ptuning"));
    await pt.dispose();
    server = await createServer({ model: GPT2, port: 0, adapterRoot: root.dir, maxConcurrent: 4, maxQueue: 16, maxModelLen: 32 });
    url = await server.listen();
  });
  after(async () => {
    await server.close();
    root.dispose();
  });

  test("load_lora_adapter loads them; a mixed batch (prefix, P-tuning, LoRA, base) gives each request its adapter's tokens alone", async () => {
    for (const [name, path] of [["my_prefix", "prefix"], ["my_ptuning", "ptuning"], ["my_lora", "lora"]]) {
      const r = await postJson(`${url}/v1/load_lora_adapter`, { lora_name: name, lora_path: path });
      assert.equal(r.status, 200, await r.clone().text());
    }
    const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: "unused", maxRetries: 0 });
    const jobs = [
      { model: "my_prefix", dir: "prefix", prompt: [5, 17, 42] },
      { model: "my_ptuning", dir: "ptuning", prompt: [1, 2, 3, 4] },
      { model: "my_lora", dir: "lora", prompt: [5, 17, 42] },
      { model: "base", dir: null, prompt: [5, 17, 42] },
      { model: "my_prefix", dir: "prefix", prompt: [9, 8, 7, 6, 5, 4] },
    ];
    const results = await Promise.all(jobs.map((j) => client.completions.create({ model: j.model, prompt: j.prompt, max_tokens: 5, temperature: 0, return_token_ids: true } as OpenAI.CompletionCreateParamsNonStreaming)));
    const prefixBase = await greedyReference(null, [5, 17, 42], 5);
    for (const [i, j] of jobs.entries()) {
      const choice = results[i]!.choices[0]! as unknown as { token_ids: number[]; prompt_token_ids: number[] };
      assert.deepEqual(choice.prompt_token_ids, j.prompt);
      assert.deepEqual(choice.token_ids, await greedyReference(j.dir ? join(root.dir, j.dir) : null, j.prompt, 5), `${j.model} ${j.prompt}`);
      // usage counts the prompt's own tokens, not the prefix
      assert.equal(results[i]!.usage!.prompt_tokens, j.prompt.length);
    }
    assert.notDeepEqual((results[0]!.choices[0]! as unknown as { token_ids: number[] }).token_ids, prefixBase, "the prefix changes the tokens");
  });

  test("--max-model-len counts the prefix: a prompt that fits only without it is a 400; max_tokens is cut to the room after it", async () => {
    const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: "unused", maxRetries: 0 });
    const long = Array.from({ length: 30 }, (_, i) => i + 1);
    // 30 + 5 prefix tokens > 32
    await assert.rejects(client.completions.create({ model: "my_prefix", prompt: long, max_tokens: 1 }), (e: unknown) => e instanceof OpenAI.BadRequestError && e.code === "PEFT_ERR_CONTEXT_LENGTH" && /30 \+ 5 prefix tokens/.test(e.message));
    // 20 + 5 prefix tokens: room for 32 − 25 + 1 = 8 new tokens
    const r = await client.completions.create({ model: "my_prefix", prompt: long.slice(0, 20), max_tokens: 12, temperature: 0, ignore_eos: true } as OpenAI.CompletionCreateParamsNonStreaming);
    assert.equal(r.usage!.completion_tokens, 8);
    assert.equal(r.choices[0]!.finish_reason, "length");
  });
});
