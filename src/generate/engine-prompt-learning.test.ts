/**
 * The engine serves P-tuning adapters (their saved `prompt_embeddings` are virtual tokens in front
 * of the prompt, as prompt tuning's) and prefix-tuning adapters (their keys and values start the
 * row's KV cache, the prompt's positions after them). Reference: greedy decoding by full forward
 * passes of the PeftModel with that adapter (no cache), on the tiny GPT-2 fixture.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { ContextLengthError, UnsupportedOptionError } from "../errors.js";
import { loadModel } from "../models/load.js";
import { MISTRAL, decoderConfigJson, randomDecoderWeights, writeHfModel } from "../models/tiny-decoder.test-util.js";
import { PeftModel } from "../peft/peft-model.js";
import { toFloat32 } from "../tensor.js";
import { fixturePath } from "../util/paths.js";
import { GenerationEngine } from "./engine.js";

async function greedyReference(pm: PeftModel, adapter: string | null, prompt: number[], n: number): Promise<number[]> {
  const seq = [...prompt];
  const out: number[] = [];
  const run = async () => {
    for (let i = 0; i < n; i++) {
      const l = toFloat32(await pm.forward({ inputIds: { dtype: "int64", shape: [1, seq.length], data: BigInt64Array.from(seq, BigInt) } }));
      const V = pm.base.config.vocabSize;
      const last = l.subarray(l.length - V);
      let best = 0;
      for (let j = 1; j < V; j++) if (last[j]! > last[best]!) best = j;
      out.push(best);
      seq.push(best);
    }
  };
  if (adapter === null) await pm.disableAdapter(run);
  else {
    pm.setAdapter(adapter);
    await run();
  }
  return out;
}

function gpt2(): PeftModel {
  const pm = new PeftModel(loadModel(fixturePath("peft-parity", "gpt2", "base")));
  pm.loadAdapter(fixturePath("peft-parity", "gpt2", "lora"), "lora");
  // a new P-tuning adapter holds its MLP prompt encoder; the engine serves the encoder's output
  pm.addAdapter("ptuning", { peft_type: "P_TUNING", task_type: "CAUSAL_LM", num_virtual_tokens: 3, encoder_hidden_size: 8 }, { seed: 5 });
  pm.addAdapter("prefix", { peft_type: "PREFIX_TUNING", task_type: "CAUSAL_LM", num_virtual_tokens: 4 }, { seed: 7 });
  pm.addAdapter("prefix_proj", { peft_type: "PREFIX_TUNING", task_type: "CAUSAL_LM", num_virtual_tokens: 2, prefix_projection: true, encoder_hidden_size: 6 }, { seed: 9 });
  return pm;
}

describe("GenerationEngine: P-tuning and prefix-tuning adapters", () => {
  const pm = gpt2();
  after(() => pm.dispose());

  for (const name of ["ptuning", "prefix", "prefix_proj"]) {
    test(`${name}: greedy generation equals greedy decoding by full forward passes of the PeftModel`, async () => {
      const engine = new GenerationEngine(pm, { maxSlots: 2 });
      try {
        const prompt = [5, 17, 42, 9];
        const want = await greedyReference(pm, name, prompt, 6);
        assert.notDeepEqual(want, await greedyReference(pm, null, prompt, 6), "the adapter changes the tokens");
        const got = await engine.generate({ promptIds: prompt, adapter: name, params: { maxNewTokens: 6 } });
        assert.deepEqual(got.tokenIds, want);
        assert.deepEqual(got.promptTokenIds, prompt);
      } finally {
        await engine.close();
      }
    });
  }

  test("a batch mixing prefix tuning, P-tuning, LoRA and the base: every row has the tokens of its request alone (chunked prefill, rows joining mid-decode)", async () => {
    const reqs = [
      { promptIds: [5, 17, 42], adapter: "prefix", n: 7 },
      { promptIds: [1, 2, 3, 4, 5, 6, 7, 8, 9], adapter: "lora", n: 5 },
      { promptIds: [99, 3], adapter: null, n: 6 },
      { promptIds: [7, 7, 3, 100, 12], adapter: "ptuning", n: 6 },
      { promptIds: [60, 61], adapter: "prefix_proj", n: 5 },
      { promptIds: [8, 30, 31], adapter: "prefix", n: 4 },
    ];
    const alone = new GenerationEngine(pm, { maxSlots: 1 });
    const wants: number[][] = [];
    try {
      for (const r of reqs) wants.push((await alone.generate({ promptIds: r.promptIds, adapter: r.adapter, params: { maxNewTokens: r.n } })).tokenIds);
    } finally {
      await alone.close();
    }
    const engine = new GenerationEngine(pm, { maxSlots: 4, prefillTokenBudget: 6 });
    try {
      const first = engine.stream({ promptIds: reqs[0]!.promptIds, adapter: reqs[0]!.adapter, params: { maxNewTokens: reqs[0]!.n } });
      const results: Promise<number[]>[] = [first.result.then((r) => r.tokenIds)];
      let k = 1;
      for await (const _ of first) {
        if (k < reqs.length) {
          const r = reqs[k++]!;
          results.push(engine.generate({ promptIds: r.promptIds, adapter: r.adapter, params: { maxNewTokens: r.n } }).then((x) => x.tokenIds));
        }
      }
      while (k < reqs.length) {
        const r = reqs[k++]!;
        results.push(engine.generate({ promptIds: r.promptIds, adapter: r.adapter, params: { maxNewTokens: r.n } }).then((x) => x.tokenIds));
      }
      const got = await Promise.all(results);
      reqs.forEach((r, i) => assert.deepEqual(got[i], wants[i], `row ${i} (${r.adapter})`));
      assert.deepEqual(wants[0], await greedyReference(pm, "prefix", reqs[0]!.promptIds, reqs[0]!.n));
      assert.deepEqual(wants[3], await greedyReference(pm, "ptuning", reqs[3]!.promptIds, reqs[3]!.n));
    } finally {
      await engine.close();
    }
  });

  test("the context length counts the prefix: a prompt that fits only without it is refused; new tokens stop at the context length", async () => {
    const engine = new GenerationEngine(pm, { maxSlots: 2, maxContext: 12 });
    try {
      // 4 prefix tokens + 9 prompt tokens > 12
      await assert.rejects(
        engine.generate({ promptIds: [1, 2, 3, 4, 5, 6, 7, 8, 9], adapter: "prefix" }),
        (e: unknown) => e instanceof ContextLengthError && /9 \+ 4 prefix tokens/.test(e.message),
      );
      const base = await engine.generate({ promptIds: [1, 2, 3, 4, 5, 6, 7, 8, 9], params: { maxNewTokens: 10, ignoreEos: true } });
      assert.equal(base.tokenIds.length, 4, "the base model has 12 − 9 + 1 tokens of room");
      // 4 + 5 prompt tokens: room for 12 − 9 + 1 = 4 new tokens
      const r = await engine.generate({ promptIds: [1, 2, 3, 4, 5], adapter: "prefix", params: { maxNewTokens: 10, ignoreEos: true } });
      assert.equal(r.tokenIds.length, 4);
      assert.equal(r.finishReason, "length");
      assert.deepEqual(r.tokenIds, await greedyReference(pm, "prefix", [1, 2, 3, 4, 5], 4));
    } finally {
      await engine.close();
    }
  });

  test("rotary positions after the prefix (tiny Mistral with head_dim ≠ hidden/heads, full attention); a sliding window refuses prefix tuning, as the full forward does", async () => {
    // MISTRAL's head_dim (8) ≠ hidden / heads (6): PEFT sizes the prefix as head_dim · kv heads
    const SPEC = MISTRAL;
    const tmp = mkdtempSync(join(tmpdir(), "peft-prefix-engine-"));
    try {
      for (const window of [null, 4]) {
        const dir = writeHfModel(join(tmp, `mistral-${window}`), decoderConfigJson(SPEC, { sliding_window: window }), randomDecoderWeights(SPEC, 5));
        const m = new PeftModel(loadModel(dir));
        m.addAdapter("prefix", { peft_type: "PREFIX_TUNING", task_type: "CAUSAL_LM", num_virtual_tokens: 3 }, { seed: 4 });
        const engine = new GenerationEngine(m, { maxSlots: 2 });
        try {
          const prompt = [3, 17, 5, 29];
          if (window === null) {
            const got = await engine.generate({ promptIds: prompt, adapter: "prefix", params: { maxNewTokens: 5, ignoreEos: true } });
            assert.deepEqual(got.tokenIds, await greedyReference(m, "prefix", prompt, 5));
          } else {
            await assert.rejects(engine.generate({ promptIds: prompt, adapter: "prefix" }), (e: unknown) => e instanceof UnsupportedOptionError && /sliding-window/.test(e.message));
            await assert.rejects(m.forward({ inputIds: { dtype: "int64", shape: [1, 4], data: BigInt64Array.from(prompt, BigInt) } }), UnsupportedOptionError);
          }
        } finally {
          await engine.close();
          await m.dispose();
        }
      }
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  });
});
