import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { Trainer } from "../train/trainer.js";
import { DEFAULT_ITL_SLO_MS, createServer } from "./server.js";
import { BERT, GPT2 } from "./test-util.js";

async function complete(url: string, prompt: number[]): Promise<number[]> {
  const r = await fetch(`${url}/v1/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ model: "base", prompt, max_tokens: 8, temperature: 0, ignore_eos: true, return_token_ids: true }),
  });
  assert.equal(r.status, 200);
  const body = (await r.json()) as { choices: { token_ids: number[] }[] };
  return body.choices[0]!.token_ids;
}

describe("peft serve: co-served fine-tuning (--itl-slo-ms, ServeContext.trainingGate)", () => {
  test("a job trained through the server's gate runs beside HTTP traffic, which gets the tokens it gets alone", async () => {
    const server = await createServer({ model: GPT2, servedModelName: "base", port: 0, itlSloMs: 40 });
    try {
      const url = await server.listen();
      const ctx = server.context;
      assert.equal(ctx.itlSloMs, 40);
      const prompts = [[5, 17, 42], [1, 2, 3, 4], [60, 61]];
      const alone = await Promise.all(prompts.map((p) => complete(url, p)));
      const gate = ctx.trainingGate();
      assert.ok(gate);
      const pm = ctx.model.peft;
      pm.addAdapter("job", { peft_type: "LORA", r: 2, lora_alpha: 4, target_modules: ["c_attn"], fan_in_fan_out: true }, { seed: 1 });
      pm.setAdapter("job");
      const data = Array.from({ length: 12 }, (_, i) => ({ ids: [3 + i, 4 + i, 5 + i, 6 + i, 7 + i] }));
      const fit = new Trainer(pm, { task: "causal-lm", epochs: 2, batchSize: 4, lr: 1e-2, seed: 0, gate }, data).fit();
      const during = await Promise.all([...prompts, ...prompts].map((p) => complete(url, p)));
      const r = await fit;
      assert.equal(r.steps, 6);
      during.forEach((ids, i) => assert.deepEqual(ids, alone[i % prompts.length]));
    } finally {
      await server.close();
    }
  });

  test("an encoder has no generation engine to co-serve with (null gate); a target must be a positive number", async () => {
    const server = await createServer({ model: BERT, port: 0 });
    try {
      assert.equal(server.context.trainingGate(), null);
      assert.equal(server.context.itlSloMs, DEFAULT_ITL_SLO_MS);
    } finally {
      await server.close();
    }
    await assert.rejects(createServer({ model: GPT2, port: 0, itlSloMs: 0 }), (e: Error & { code?: string }) => e.code === "PEFT_ERR_CONFIG" && /itlSloMs/.test(e.message));
  });
});
