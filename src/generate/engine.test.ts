import assert from "node:assert/strict";
import { after, describe, test } from "node:test";
import { ContextLengthError, EmptyPromptError, EngineClosedError, PromptTokenError, SamplingParamsError, UnknownAdapterError } from "../errors.js";
import { parseGenerationConfig } from "../io/generation-config.js";
import { loadModel } from "../models/load.js";
import { PeftModel } from "../peft/peft-model.js";
import { toFloat32 } from "../tensor.js";
import { fixturePath } from "../util/paths.js";
import { GenerationEngine, type GenerationRequest, type TokenEvent } from "./engine.js";

/** Greedy tokens from full forward passes (no cache): the reference every engine row must reproduce. */
async function greedyReference(pm: PeftModel, adapter: string | null, prompt: number[], n: number): Promise<number[]> {
  const seq = [...prompt];
  const out: number[] = [];
  const run = async () => {
    for (let i = 0; i < n; i++) {
      const l = toFloat32(await pm.forward({ inputIds: { dtype: "int64", shape: [1, seq.length], data: BigInt64Array.from(seq, BigInt) } }));
      const V = pm.base.config.vocabSize; // prompt tuning returns logits for the virtual tokens too
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

function gpt2WithAdapters(): PeftModel {
  const base = loadModel(fixturePath("peft-parity", "gpt2", "base"));
  const pm = new PeftModel(base);
  for (const name of ["lora", "multi_a", "multi_b", "dora", "ia3", "prompt_tuning", "rslora_all_linear"]) pm.loadAdapter(fixturePath("peft-parity", "gpt2", name), name);
  return pm;
}

async function collect(stream: AsyncIterable<TokenEvent>): Promise<number[]> {
  const ids: number[] = [];
  for await (const e of stream) ids.push(e.tokenId);
  return ids;
}

describe("GenerationEngine (continuous batching)", () => {
  const cleanup: (() => Promise<void>)[] = [];
  after(async () => {
    for (const c of cleanup) await c();
  });

  test("rows joining at different steps, with different lengths and adapters, are token-identical to each request alone; aborts change no other row", async () => {
    const pm = gpt2WithAdapters();
    const engine = new GenerationEngine(pm, { maxSlots: 4, prefillTokenBudget: 6 });
    cleanup.push(() => engine.close(), () => pm.dispose());
    const reqs: (GenerationRequest & { n: number })[] = [
      { promptIds: [5, 17, 42], adapter: "lora", n: 9 },
      { promptIds: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], adapter: null, n: 6 },
      { promptIds: [99], adapter: "prompt_tuning", n: 7 },
      { promptIds: [7, 7, 3, 100, 12], adapter: "dora", n: 5 },
      { promptIds: [3, 1, 4, 1, 5, 9, 2, 6], adapter: "ia3", n: 8 },
      { promptIds: [60, 61], adapter: "multi_b", n: 10 },
      { promptIds: [8, 30, 31, 2], adapter: "rslora_all_linear", n: 4 },
    ];
    const streams: Promise<number[]>[] = [];
    const first = engine.stream({ ...reqs[0]!, params: { maxNewTokens: reqs[0]!.n } });
    // the others join while the first decodes: one after each of its tokens (the pool holds 4 rows, so some wait)
    const aborter = new AbortController();
    const aborted = engine.stream({ promptIds: [9, 9, 9, 9], adapter: "multi_a", params: { maxNewTokens: 20 }, signal: aborter.signal });
    let abortedTokens = 0;
    const abortedIds = (async () => {
      const ids: number[] = [];
      for await (const e of aborted) {
        ids.push(e.tokenId);
        if (++abortedTokens === 3) aborter.abort();
      }
      return ids;
    })();
    let k = 1;
    const firstIds: number[] = [];
    for await (const e of first) {
      firstIds.push(e.tokenId);
      if (k < reqs.length) {
        const r = reqs[k++]!;
        streams.push(collect(engine.stream({ ...r, params: { maxNewTokens: r.n } })));
      }
    }
    const got = [firstIds, ...(await Promise.all(streams))];
    const abortedResult = await aborted.result;
    assert.equal(abortedResult.finishReason, "abort");
    assert.equal(abortedResult.tokenIds.length, (await abortedIds).length);
    assert.ok(abortedResult.tokenIds.length >= 3 && abortedResult.tokenIds.length < 20);
    for (let i = 0; i < reqs.length; i++) {
      const r = reqs[i]!;
      const want = await greedyReference(pm, r.adapter ?? null, [...r.promptIds], r.n);
      assert.deepEqual(got[i], want, `request ${i} (${r.adapter ?? "base"})`);
    }
    const s = engine.stats();
    assert.equal(s.running, 0);
    assert.equal(s.waiting, 0);
    assert.ok(s.steps > 10);
  });

  test("Llama: base and LoRA rows batched together equal each alone", async () => {
    const base = loadModel(fixturePath("peft-parity", "llama", "base"));
    const pm = PeftModel.fromPretrained(base, fixturePath("peft-parity", "llama", "lora"), { adapterName: "lora" });
    const engine = new GenerationEngine(pm, { maxSlots: 3 });
    cleanup.push(() => engine.close(), () => pm.dispose());
    const reqs = [
      { promptIds: [5, 6, 7, 8, 9, 10], adapter: "lora" },
      { promptIds: [11, 3], adapter: null },
      { promptIds: [40, 41, 42], adapter: "lora" },
      { promptIds: [1, 100, 20, 3, 4], adapter: null },
    ];
    const results = await Promise.all(reqs.map((r) => engine.generate({ ...r, params: { maxNewTokens: 8, ignoreEos: true } })));
    for (let i = 0; i < reqs.length; i++) {
      assert.deepEqual(results[i]!.tokenIds, await greedyReference(pm, reqs[i]!.adapter, reqs[i]!.promptIds, 8), `request ${i}`);
      assert.equal(results[i]!.finishReason, "length");
      assert.deepEqual(results[i]!.promptTokenIds, reqs[i]!.promptIds);
    }
  });

  test("same seed, same tokens; sampling, stop ids and the context limit", async () => {
    const base = loadModel(fixturePath("peft-parity", "gpt2", "base"));
    const pm = new PeftModel(base);
    const engine = new GenerationEngine(pm, { maxSlots: 4 });
    cleanup.push(() => engine.close(), () => pm.dispose());
    const params = { doSample: true, temperature: 1.5, topK: 50, topP: 0.95, maxNewTokens: 12, seed: 7 };
    const [a, b, c] = await Promise.all([
      engine.generate({ promptIds: [1, 2, 3], params }),
      engine.generate({ promptIds: [1, 2, 3], params }),
      engine.generate({ promptIds: [1, 2, 3], params: { ...params, seed: 8 } }),
    ]);
    assert.deepEqual(a!.tokenIds, b!.tokenIds);
    assert.notDeepEqual(a!.tokenIds, c!.tokenIds);
    // a stop id ends the output with that token
    const greedy = await engine.generate({ promptIds: [1, 2, 3], params: { maxNewTokens: 8 } });
    const stopAt = greedy.tokenIds[3]!;
    const stopped = await engine.generate({ promptIds: [1, 2, 3], params: { maxNewTokens: 8, stopTokenIds: [stopAt] } });
    assert.equal(stopped.finishReason, "stop");
    assert.deepEqual(stopped.tokenIds, greedy.tokenIds.slice(0, greedy.tokenIds.indexOf(stopAt) + 1));
    // the fixture has 64 positions: a 60-token prompt can get 5 more tokens
    const long = await engine.generate({ promptIds: Array.from({ length: 60 }, (_, i) => i), params: { maxNewTokens: 50 } });
    assert.equal(long.finishReason, "length");
    assert.equal(long.tokenIds.length, 5);
    // logprobs: the chosen token's logprob and sorted alternatives
    const lp = await engine.generate({ promptIds: [4, 5], params: { maxNewTokens: 2, logprobs: 3 } });
    assert.equal(lp.logprobs!.length, 2);
    const e0 = lp.logprobs![0]!;
    assert.equal(e0.topLogprobs!.length, 3);
    assert.equal(e0.topLogprobs![0]!.tokenId, e0.tokenId); // greedy picks the most likely token
    assert.ok(e0.topLogprobs![0]!.logprob >= e0.topLogprobs![1]!.logprob && e0.logprob! <= 0);
  });

  test("generation_config.json: max_length caps prompt + new tokens, eos_token_id stops, sampling fields are the defaults", async () => {
    const base = loadModel(fixturePath("peft-parity", "gpt2", "base"));
    const pm = new PeftModel(base);
    const plain = new GenerationEngine(pm);
    const greedy = await plain.generate({ promptIds: [1, 2, 3, 4], params: { maxNewTokens: 6 } });
    await plain.close();
    const eos = greedy.tokenIds[2]!;
    const engine = new GenerationEngine(pm, { generationConfig: parseGenerationConfig({ max_length: 9, eos_token_id: [eos] }) });
    const sampled = new GenerationEngine(pm, { generationConfig: parseGenerationConfig({ do_sample: true, temperature: 2, max_new_tokens: 7 }) });
    cleanup.push(() => engine.close(), () => sampled.close(), () => pm.dispose());
    const r = await engine.generate({ promptIds: [1, 2, 3, 4] });
    assert.equal(r.finishReason, "stop");
    assert.deepEqual(r.tokenIds, greedy.tokenIds.slice(0, greedy.tokenIds.indexOf(eos) + 1));
    const capped = await engine.generate({ promptIds: [1, 2, 3, 4], params: { ignoreEos: true } });
    assert.equal(capped.tokenIds.length, 5); // max_length 9 − 4 prompt tokens
    const [a, b] = await Promise.all([1, 1].map((seed) => sampled.generate({ promptIds: [1, 2], params: { seed } })));
    assert.equal(a!.tokenIds.length, 7);
    assert.deepEqual(a!.tokenIds, b!.tokenIds);
    const c = await sampled.generate({ promptIds: [1, 2], params: { seed: 2 } });
    assert.notDeepEqual(a!.tokenIds, c.tokenIds); // sampling (do_sample from the file), not greedy
  });

  test("n choices of one request read the prompt once; choice i equals the request alone with seed + i", async () => {
    const pm = gpt2WithAdapters();
    const engine = new GenerationEngine(pm, { maxSlots: 4, prefillTokenBudget: 4 });
    cleanup.push(() => engine.close(), () => pm.dispose());
    const prompt = [5, 17, 42, 9, 3, 77, 12];
    const params = { doSample: true, temperature: 1.3, topK: 40, maxNewTokens: 6, seed: 11 };
    const alone: number[][] = [];
    for (let i = 0; i < 3; i++) alone.push((await engine.generate({ promptIds: prompt, adapter: "lora", params: { ...params, seed: 11 + i } })).tokenIds);
    assert.equal(engine.stats().prefillTokens, 3 * prompt.length);
    const before = engine.stats().prefillTokens;
    const streams = engine.streamChoices({ promptIds: prompt, adapter: "lora", params }, 3);
    const got = await Promise.all(streams.map((s) => collect(s)));
    assert.deepEqual(got, alone);
    assert.equal(engine.stats().prefillTokens - before, prompt.length); // read once, in two chunks (budget 4)
    assert.notDeepEqual(got[0], got[1]);
    // prompt tuning (virtual tokens before the prompt), greedy: both choices are the greedy continuation
    const pt = engine.streamChoices({ promptIds: [99, 4], adapter: "prompt_tuning", params: { maxNewTokens: 4 } }, 2);
    const want = await greedyReference(pm, "prompt_tuning", [99, 4], 4);
    assert.deepEqual(await Promise.all(pt.map((s) => collect(s))), [want, want]);
    assert.throws(() => engine.streamChoices({ promptIds: prompt }, 0), RangeError);
  });

  test("choices that do not fit the batch read the prompt themselves", async () => {
    const base = loadModel(fixturePath("peft-parity", "gpt2", "base"));
    const pm = new PeftModel(base);
    const engine = new GenerationEngine(pm, { maxSlots: 2 });
    cleanup.push(() => engine.close(), () => pm.dispose());
    const prompt = [1, 2, 3, 4, 5];
    const want = await greedyReference(pm, null, prompt, 5);
    const streams = engine.streamChoices({ promptIds: prompt, params: { maxNewTokens: 5 } }, 3);
    assert.deepEqual(await Promise.all(streams.map((s) => collect(s))), [want, want, want]);
    // choices 0 and 1 share one prompt read; choice 2 waited for a slot and read it again
    assert.equal(engine.stats().prefillTokens, 2 * prompt.length);
  });

  test("bad requests are typed errors and the engine keeps serving", async () => {
    const base = loadModel(fixturePath("peft-parity", "gpt2", "base"));
    const pm = new PeftModel(base);
    const engine = new GenerationEngine(pm, { maxSlots: 2 });
    cleanup.push(() => engine.close(), () => pm.dispose());
    assert.throws(() => engine.stream({ promptIds: [] }), EmptyPromptError);
    await assert.rejects(engine.generate({ promptIds: [] }), (e: EmptyPromptError) => e.code === "PEFT_ERR_EMPTY_PROMPT");
    await assert.rejects(engine.generate({ promptIds: Array.from({ length: 65 }, () => 1) }), (e: ContextLengthError) => e.code === "PEFT_ERR_CONTEXT_LENGTH");
    await assert.rejects(engine.generate({ promptIds: [1], adapter: "nope" }), UnknownAdapterError);
    await assert.rejects(engine.generate({ promptIds: [1, 128] }), PromptTokenError);
    await assert.rejects(engine.generate({ promptIds: [1], params: { topP: 0 } }), SamplingParamsError);
    await assert.rejects(engine.generate({ promptIds: [1], params: { maxNewTokens: 0 } }), SamplingParamsError);
    const ok = await engine.generate({ promptIds: [1, 2], params: { maxNewTokens: 3 } });
    assert.equal(ok.tokenIds.length, 3);
    const pending = engine.generate({ promptIds: [1, 2], params: { maxNewTokens: 3 } });
    await engine.drain();
    assert.equal((await pending).tokenIds.length, 3);
    assert.throws(() => engine.stream({ promptIds: [1] }), EngineClosedError);
  });
});
