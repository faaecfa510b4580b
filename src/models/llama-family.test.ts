/**
 * Qwen2 and Mistral: tiny random models in Hugging Face layout, checked against an independent
 * float64 reference (plain loops), against Llama (zero biases), across sliding windows, with LoRA
 * adapters, and on bad configs.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { ConfigError, MissingTensorError } from "../errors.js";
import { parseHfConfig } from "../io/hf-config.js";
import { PeftModel } from "../peft/peft-model.js";
import type { Tensor } from "../tensor.js";
import { forwardLogits } from "./forward.js";
import { loadModel } from "./load.js";
import { MODELS } from "./registry.js";
import { MISTRAL, QWEN2, type TinyDecoderSpec, decoderConfigJson, randomDecoderWeights, referenceDecoderLogits, writeHfModel } from "./tiny-decoder.test-util.js";

const tmp = mkdtempSync(join(tmpdir(), "peft-llama-family-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

const IDS = [
  [3, 17, 5, 29, 11, 0, 38, 7],
  [12, 4, 33, 9, 21, 2, 0, 0],
];
const MASK = [
  [1, 1, 1, 1, 1, 1, 1, 1],
  [1, 1, 1, 1, 1, 1, 0, 0],
];
const SEQ = IDS[0]!.length;

function int64(rows: readonly (readonly number[])[]): Tensor<"int64"> {
  return { dtype: "int64", shape: [rows.length, rows[0]!.length], data: BigInt64Array.from(rows.flat(), (v) => BigInt(v)) };
}

async function logitsOf(dir: string): Promise<Float32Array> {
  const model = loadModel(dir);
  try {
    return (await forwardLogits(model, int64(IDS), int64(MASK))).data as Float32Array;
  } finally {
    (model.weights as { close?: () => void }).close?.();
  }
}

/** Max |a − b| over the positions whose attention_mask is 1 (padded queries are not compared). */
function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>, vocab: number, positions?: (b: number, s: number) => boolean): number {
  let m = 0;
  for (let r = 0; r < IDS.length; r++) {
    for (let s = 0; s < SEQ; s++) {
      if (MASK[r]![s] !== 1 || (positions && !positions(r, s))) continue;
      for (let v = 0; v < vocab; v++) {
        const i = (r * SEQ + s) * vocab + v;
        m = Math.max(m, Math.abs(a[i]! - b[i]!));
      }
    }
  }
  return m;
}

let n = 0;
const dirFor = (name: string) => join(tmp, `${name}-${n++}`);

describe("qwen2 / mistral logits equal a float64 reference written with plain loops", () => {
  test("qwen2: q/k/v biases, GQA, tied embeddings, sliding window on layers ≥ max_window_layers", async () => {
    const w = randomDecoderWeights(QWEN2, 1);
    const dir = writeHfModel(dirFor("qwen2"), decoderConfigJson(QWEN2, { use_sliding_window: true, sliding_window: 3, max_window_layers: 1 }), w);
    const cfg = loadModel(dir).config;
    assert.equal(cfg.modelType, "qwen2");
    if (cfg.modelType === "qwen2") assert.deepEqual(cfg.layerTypes, ["full_attention", "sliding_attention"]);
    const ref = referenceDecoderLogits(QWEN2, w, IDS, MASK, [null, 3]);
    const err = maxDiff(await logitsOf(dir), ref, QWEN2.vocab);
    console.log(`# qwen2 vs reference: max |Δlogits| = ${err.toExponential(2)}`);
    assert.ok(err <= 1e-5, `max abs diff ${err}`);
    // the window matters: the reference without it differs
    assert.ok(maxDiff(ref, referenceDecoderLogits(QWEN2, w, IDS, MASK, [null, null]), QWEN2.vocab) > 1e-3);
  });

  test("qwen2: layer_types as stored by transformers 5 (sliding on layer 0 only)", async () => {
    const w = randomDecoderWeights(QWEN2, 2);
    const dir = writeHfModel(dirFor("qwen2-lt"), decoderConfigJson(QWEN2, { use_sliding_window: true, sliding_window: 2, layer_types: ["sliding_attention", "full_attention"] }), w);
    const err = maxDiff(await logitsOf(dir), referenceDecoderLogits(QWEN2, w, IDS, MASK, [2, null]), QWEN2.vocab);
    assert.ok(err <= 1e-5, `max abs diff ${err}`);
  });

  test("mistral: head_dim ≠ hidden/heads, one kv head, untied lm_head, sliding window 4 on every layer", async () => {
    const w = randomDecoderWeights(MISTRAL, 3);
    const dir = writeHfModel(dirFor("mistral"), decoderConfigJson(MISTRAL, { sliding_window: 4 }), w);
    const err = maxDiff(await logitsOf(dir), referenceDecoderLogits(MISTRAL, w, IDS, MASK, [4, 4]), MISTRAL.vocab);
    console.log(`# mistral vs reference: max |Δlogits| = ${err.toExponential(2)}`);
    assert.ok(err <= 1e-5, `max abs diff ${err}`);
  });
  test("llama: attention_bias and mlp_bias read the biases of every projection", async () => {
    const spec: TinyDecoderSpec = { ...QWEN2, modelType: "llama", tied: false, oBias: true, mlpBias: true };
    const w = randomDecoderWeights(spec, 9);
    const dir = writeHfModel(dirFor("llama-bias"), decoderConfigJson(spec), w);
    const err = maxDiff(await logitsOf(dir), referenceDecoderLogits(spec, w, IDS, MASK, [null, null]), spec.vocab);
    assert.ok(err <= 1e-5, `max abs diff ${err}`);
  });
});

describe("qwen2 / mistral against llama and full attention", () => {
  test("a qwen2 with zero q/k/v biases computes what llama computes with the same weights", async () => {
    const w = randomDecoderWeights(QWEN2, 4);
    for (const [k, t] of w) if (k.endsWith(".bias")) t.data.fill(0);
    const qwen = writeHfModel(dirFor("qwen2-zero"), decoderConfigJson(QWEN2), w);
    const llamaSpec: TinyDecoderSpec = { ...QWEN2, modelType: "llama", qkvBias: false };
    const noBias = new Map([...w].filter(([k]) => !k.endsWith(".bias")));
    const llama = writeHfModel(dirFor("llama"), decoderConfigJson(llamaSpec), noBias);
    const a = await logitsOf(qwen);
    const b = await logitsOf(llama);
    assert.ok(maxDiff(a, b, QWEN2.vocab) <= 1e-6);
    // and nonzero biases change the logits (the biases are read)
    const biased = writeHfModel(dirFor("qwen2-b"), decoderConfigJson(QWEN2), randomDecoderWeights(QWEN2, 4));
    assert.ok(maxDiff(await logitsOf(biased), b, QWEN2.vocab) > 1e-3);
  });

  test("a window ≥ the sequence equals full attention; a window of 3 changes only positions ≥ 3", async () => {
    const w = randomDecoderWeights(MISTRAL, 5);
    const full = await logitsOf(writeHfModel(dirFor("m-full"), decoderConfigJson(MISTRAL, { sliding_window: null }), w));
    const wide = await logitsOf(writeHfModel(dirFor("m-wide"), decoderConfigJson(MISTRAL, { sliding_window: SEQ }), w));
    const small = await logitsOf(writeHfModel(dirFor("m-3"), decoderConfigJson(MISTRAL, { sliding_window: 3 }), w));
    assert.equal(maxDiff(full, wide, MISTRAL.vocab), 0);
    assert.equal(maxDiff(full, small, MISTRAL.vocab, (_, s) => s < 3), 0);
    for (let s = 3; s < SEQ; s++) assert.ok(maxDiff(full, small, MISTRAL.vocab, (r, p) => r === 0 && p === s) > 1e-4, `position ${s} should change`);
  });
});

describe("LoRA on qwen2 / mistral", () => {
  for (const spec of [QWEN2, MISTRAL]) {
    test(`${spec.modelType}: q/k/v/o adapters forward, merge == unmerged, save/load round trip`, async () => {
      const dir = writeHfModel(dirFor(`${spec.modelType}-lora`), decoderConfigJson(spec, { sliding_window: 5, use_sliding_window: true }), randomDecoderWeights(spec, 6));
      const model = loadModel(dir);
      const pm = PeftModel.create(model, { peft_type: "LORA", r: 2, lora_alpha: 4, target_modules: ["q_proj", "k_proj", "v_proj", "o_proj"], init_lora_weights: false }, "default", { seed: 3 });
      const adapted = pm.adapter("default").tensors;
      assert.equal(adapted.size, 2 * 4 * spec.layers);
      const inputs = { inputIds: int64(IDS), attentionMask: int64(MASK) };
      const base = (await pm.disableAdapter(() => pm.forward(inputs))).data as Float32Array;
      const unmerged = (await pm.forward(inputs)).data as Float32Array;
      assert.ok(maxDiff(base, unmerged, spec.vocab) > 1e-3, "the adapter changes the logits");
      pm.mergeAdapter();
      const merged = (await pm.forward(inputs)).data as Float32Array;
      assert.ok(maxDiff(merged, unmerged, spec.vocab) <= 1e-5);
      pm.unmergeAdapter();
      const saved = join(tmp, `${spec.modelType}-adapter-${n++}`);
      pm.savePretrained(saved);
      const back = PeftModel.fromPretrained(loadModel(dir), saved);
      assert.ok(maxDiff((await back.forward(inputs)).data as Float32Array, unmerged, spec.vocab) <= 1e-6);
      await pm.dispose();
      await back.dispose();
    });
  }

  test("all-linear adapts every projection but lm_head; the default targets are PEFT's", () => {
    const dir = writeHfModel(dirFor("qwen2-all"), decoderConfigJson(QWEN2), randomDecoderWeights(QWEN2, 7));
    const pm = PeftModel.create(loadModel(dir), { peft_type: "LORA", r: 2, target_modules: "all-linear" });
    const modules = [...new Set([...pm.adapter("default").tensors.keys()].map((k) => k.replace(/^base_model\.model\./u, "").replace(/\.lora_[AB]\.weight$/u, "")))];
    assert.equal(modules.length, 7 * QWEN2.layers);
    assert.ok(!modules.some((m) => m.includes("lm_head")));
    assert.deepEqual([...MODELS.qwen2.loraTargets], ["q_proj", "v_proj"]);
    assert.deepEqual([...MODELS.mistral.loraTargets], ["q_proj", "v_proj"]);
  });
});

describe("qwen2 / mistral config.json", () => {
  const base = (spec: TinyDecoderSpec, extra: Record<string, unknown> = {}) => decoderConfigJson(spec, extra);
  const fails = (raw: Record<string, unknown>, key: string) =>
    assert.throws(() => parseHfConfig(raw, "config.json"), (e: unknown) => e instanceof ConfigError && e.path === key && e.code === "PEFT_ERR_CONFIG");

  test("transformers' defaults: qwen2 window off unless use_sliding_window; mistral window 4096, 8 kv heads", () => {
    const q = parseHfConfig({ model_type: "qwen2", hidden_size: 256, num_attention_heads: 32, num_hidden_layers: 3 }, "q.json");
    assert.ok(q.modelType === "qwen2");
    assert.equal(q.slidingWindow, null);
    assert.deepEqual(q.layerTypes, ["full_attention", "full_attention", "full_attention"]);
    assert.equal(q.numKeyValueHeads, 32);
    assert.equal(q.tieWordEmbeddings, false);
    assert.equal(q.maxPositionEmbeddings, 32768);
    const on = parseHfConfig({ model_type: "qwen2", hidden_size: 64, num_attention_heads: 8, num_key_value_heads: 2, num_hidden_layers: 3, use_sliding_window: true, max_window_layers: 2 }, "q.json");
    assert.ok(on.modelType === "qwen2");
    assert.equal(on.slidingWindow, 4096);
    assert.deepEqual(on.layerTypes, ["full_attention", "full_attention", "sliding_attention"]);
    const m = parseHfConfig({ model_type: "mistral", hidden_size: 64, num_attention_heads: 8 }, "m.json");
    assert.ok(m.modelType === "mistral");
    assert.equal(m.slidingWindow, 4096);
    assert.equal(m.numKeyValueHeads, 8);
    assert.equal(m.headDim, 8);
    assert.equal(m.maxPositionEmbeddings, 131072);
    const nullKv = parseHfConfig({ model_type: "mistral", hidden_size: 64, num_attention_heads: 8, num_key_value_heads: null, sliding_window: null }, "m.json");
    assert.ok(nullKv.modelType === "mistral");
    assert.equal(nullKv.numKeyValueHeads, 8);
    assert.equal(nullKv.slidingWindow, null);
  });

  test("published configs: Qwen2.5-0.5B-Instruct and Mistral-7B-Instruct-v0.2 as on the Hub", () => {
    const q = parseHfConfig(
      {
        architectures: ["Qwen2ForCausalLM"],
        attention_dropout: 0.0,
        bos_token_id: 151643,
        eos_token_id: 151645,
        hidden_act: "silu",
        hidden_size: 896,
        initializer_range: 0.02,
        intermediate_size: 4864,
        max_position_embeddings: 32768,
        max_window_layers: 21,
        model_type: "qwen2",
        num_attention_heads: 14,
        num_hidden_layers: 24,
        num_key_value_heads: 2,
        rms_norm_eps: 1e-6,
        rope_theta: 1000000.0,
        sliding_window: 32768,
        tie_word_embeddings: true,
        torch_dtype: "bfloat16",
        transformers_version: "4.43.1",
        use_cache: true,
        use_sliding_window: false,
        vocab_size: 151936,
      },
      "qwen2.5/config.json",
    );
    assert.ok(q.modelType === "qwen2");
    assert.equal(q.headDim, 64);
    assert.equal(q.ropeTheta, 1e6);
    assert.equal(q.tieWordEmbeddings, true);
    assert.equal(q.slidingWindow, null);
    assert.ok(q.layerTypes.every((t) => t === "full_attention"));
    assert.deepEqual(MODELS.qwen2.tiedWeights(q), [["lm_head.weight", "model.embed_tokens.weight"]]);
    const m = parseHfConfig(
      {
        architectures: ["MistralForCausalLM"],
        attention_dropout: 0.0,
        bos_token_id: 1,
        eos_token_id: 2,
        hidden_act: "silu",
        hidden_size: 4096,
        initializer_range: 0.02,
        intermediate_size: 14336,
        max_position_embeddings: 32768,
        model_type: "mistral",
        num_attention_heads: 32,
        num_hidden_layers: 32,
        num_key_value_heads: 8,
        rms_norm_eps: 1e-5,
        rope_theta: 1000000.0,
        sliding_window: null,
        tie_word_embeddings: false,
        torch_dtype: "bfloat16",
        transformers_version: "4.36.0",
        use_cache: true,
        vocab_size: 32000,
      },
      "mistral/config.json",
    );
    assert.ok(m.modelType === "mistral");
    assert.equal(m.headDim, 128);
    assert.equal(m.slidingWindow, null);
    assert.equal(m.numKeyValueHeads, 8);
    assert.equal(m.dtype, "bfloat16");
  });

  test("bad values are ConfigErrors naming the key", () => {
    fails(base(QWEN2, { hidden_size: 30 }), "num_attention_heads");
    fails(base(MISTRAL, { num_key_value_heads: 3 }), "num_key_value_heads");
    fails(base(MISTRAL, { sliding_window: 0 }), "sliding_window");
    fails(base(QWEN2, { use_sliding_window: true, sliding_window: -2 }), "sliding_window");
    fails(base(QWEN2, { sliding_window: 2.5 }), "sliding_window");
    fails(base(QWEN2, { use_sliding_window: "yes" }), "use_sliding_window");
    fails(base(QWEN2, { max_window_layers: -1 }), "max_window_layers");
    fails(base(QWEN2, { use_sliding_window: true, layer_types: ["full_attention"] }), "layer_types");
    fails(base(QWEN2, { layer_types: ["full_attention", "sliding_attention"] }), "layer_types");
    fails(base(QWEN2, { use_sliding_window: true, layer_types: ["full_attention", "chunked_attention"] }), "layer_types.1");
    fails(base(MISTRAL, { head_dim: 7 }), "head_dim");
  });

  test("a qwen2 folder without its q/k/v biases is a MissingTensorError naming the tensor", () => {
    const w = randomDecoderWeights(QWEN2, 8);
    w.delete("model.layers.1.self_attn.k_proj.bias");
    const dir = writeHfModel(dirFor("qwen2-nobias"), decoderConfigJson(QWEN2), w);
    assert.throws(() => new PeftModel(loadModel(dir)), (e: unknown) => e instanceof MissingTensorError && e.key === "model.layers.1.self_attn.k_proj.bias");
  });
});
