/**
 * Prefix tuning. The reference is independent of the tuner: the keys and values a real token
 * prefix leaves in the base model's KV cache, packed in PEFT's layout, must make the prefix-tuned
 * model compute exactly what the base model computes for [prefix tokens, input] at the input's
 * positions (positions after the prefix, every query seeing all prefix keys).
 */
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { tinyModel } from "../../compose/atlas/tiny-model.test-util.js";
import { PeftError } from "../../errors.js";
import * as G from "../../graph/api.js";
import { Decoder, moduleShapes } from "../../generate/decoder.js";
import { prefillPrefix } from "../../generate/prefix.js";
import { loadSafetensors } from "../../io/safetensors.js";
import { ModelContext } from "../../models/context.js";
import { type LoadedModel, loadModel } from "../../models/load.js";
import { MISTRAL, QWEN2, type TinyDecoderSpec, decoderConfigJson, randomDecoderWeights, writeHfModel } from "../../models/tiny-decoder.test-util.js";
import { AdapterPool, planLayout } from "../../peft/adapter-pool.js";
import { PeftModel } from "../../peft/peft-model.js";
import { gradCheck } from "../../runtime/gradcheck.js";
import { type Tensor, toFloat32 } from "../../tensor.js";
import { fixtureModel, maxDiff } from "../../train/method-suite.test-util.js";
import { patternCorpus } from "../../train/tiny-llama.test-util.js";
import { Trainer } from "../../train/trainer.js";

const ids = (rows: number[][]): Tensor<"int64"> => ({ dtype: "int64", shape: [rows.length, rows[0]!.length], data: BigInt64Array.from(rows.flat(), BigInt) });
const PREFIX = [7, 19, 3];

interface Geo {
  layers: number;
  kvHeads: number;
  headDim: number;
}

/** The keys and values the base model caches for `tokens`, packed as PEFT's P [n, layers·2·kvHeads·headDim]. */
async function cachedPrefix(model: LoadedModel, tokens: number[]): Promise<{ p: Float32Array; geo: Geo }> {
  const pm = new PeftModel(model);
  const pool = new AdapterPool(planLayout([], moduleShapes(pm), (model.config as { hiddenSize: number }).hiddenSize), (n) => pm.weights.get(n), (n) => pm.weights.has(n));
  const dec = await Decoder.create(pm, pool);
  try {
    await dec.step([{ slot: 0, ids: tokens, adapterSlot: 0 }]);
    const { layers, kvHeads, headDim } = dec.geometry;
    const n = tokens.length;
    const d = kvHeads * headDim;
    const w = layers * 2 * d;
    const p = new Float32Array(n * w);
    const cap = dec.cache.capacity;
    for (let l = 0; l < layers; l++) {
      for (const [c, kind] of [
        [2 * l, "key"],
        [2 * l + 1, "value"],
      ] as const) {
        const buf = dec.cache.view(l, kind, 0, 1); // [kvHeads, capacity, headDim]
        for (let h = 0; h < kvHeads; h++) for (let t = 0; t < n; t++) for (let j = 0; j < headDim; j++) p[t * w + c * d + h * headDim + j] = buf[(h * cap + t) * headDim + j]!;
      }
    }
    return { p, geo: { layers, kvHeads, headDim } };
  } finally {
    await dec.release();
    await pm.dispose();
  }
}

describe("prefix tuning", () => {
  // tiny decoders whose config.json has an explicit head_dim ≠ hidden_size / num_attention_heads (24 / 4 = 6), full attention
  const tmp = mkdtempSync(join(tmpdir(), "peft-prefix-headdim-"));
  after(() => rmSync(tmp, { recursive: true, force: true }));
  const explicitHeadDim = (spec: TinyDecoderSpec): LoadedModel =>
    loadModel(writeHfModel(mkdtempSync(join(tmp, `${spec.modelType}-`)), decoderConfigJson(spec, { sliding_window: null }), randomDecoderWeights(spec, 11)));
  const models: [label: string, make: () => LoadedModel][] = [
    ["gpt2", () => fixtureModel("gpt2")],
    ["llama (grouped-query heads)", () => fixtureModel("llama")],
    ["mistral with head_dim 8 ≠ 24/4, one kv head", () => explicitHeadDim(MISTRAL)],
    ["qwen2 with head_dim 10 ≠ 24/4, two kv heads", () => explicitHeadDim({ ...QWEN2, headDim: 10 })],
  ];
  for (const [arch, make] of models) {
    test(`${arch}: forward with a prefix = the base model on [prefix tokens, input] (PEFT's layout, token_dim = head_dim · kv heads, positions after the prefix)`, async () => {
      const model = make();
      const { p, geo } = await cachedPrefix(model, PREFIX);
      const pm = PeftModel.create(model, { peft_type: "PREFIX_TUNING", task_type: "CAUSAL_LM", num_virtual_tokens: PREFIX.length });
      const cfg = pm.adapter("default").config as unknown as { tokenDim: number; numAttentionHeads: number; numLayers: number };
      assert.deepEqual([cfg.tokenDim, cfg.numAttentionHeads, cfg.numLayers], [geo.kvHeads * geo.headDim, geo.kvHeads, geo.layers], "PEFT's token_dim (kv heads × head_dim) and heads");
      pm.updateAdapterTensors("default", new Map([["prompt_embeddings", { dtype: "float32", shape: [PREFIX.length, p.length / PREFIX.length], data: p } as Tensor]]));
      const rows = [
        [5, 11, 2, 30, 8],
        [9, 4, 17, 0, 0],
      ];
      const got = toFloat32(await pm.forward({ inputIds: ids(rows), attentionMask: ids([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]) }));
      const V = model.config.vocabSize;
      assert.equal(got.length, 2 * 5 * V, "logits for the input's positions only");
      const base = new PeftModel(model);
      for (const [r, row] of rows.entries()) {
        const len = r === 0 ? 5 : 3;
        const full = toFloat32(await base.forward({ inputIds: ids([[...PREFIX, ...row.slice(0, len)]]) }));
        const want = full.subarray(PREFIX.length * V);
        const mine = got.subarray(r * 5 * V, (r * 5 + len) * V);
        const d = maxDiff(mine, want);
        assert.ok(d < 2e-5, `row ${r}: |Δ| ${d}`);
      }
      await base.dispose();
      await pm.dispose();
    });
  }

  test("explicit head_dim: the saved adapter has PEFT's token_dim = head_dim · kv heads and loads to the same logits; token_dim from hidden_size / heads is refused naming it", async () => {
    const model = explicitHeadDim(MISTRAL); // head_dim 8, 1 kv head, 2 layers
    const pm = PeftModel.create(model, { peft_type: "PREFIX_TUNING", task_type: "CAUSAL_LM", num_virtual_tokens: 3 }, "default", { seed: 2 });
    const dir = mkdtempSync(join(tmp, "adapter-"));
    pm.savePretrained(dir);
    const saved = JSON.parse(readFileSync(join(dir, "adapter_config.json"), "utf8")) as Record<string, unknown>;
    assert.deepEqual([saved.token_dim, saved.num_attention_heads, saved.num_layers, saved.encoder_hidden_size], [8, 1, 2, 8]);
    assert.deepEqual(loadSafetensors(join(dir, "adapter_model.safetensors")).tensors.get("prompt_embeddings")!.shape, [3, 2 * 2 * 8]);
    const pm2 = PeftModel.fromPretrained(model, dir);
    const x = ids([[3, 8, 12, 5]]);
    assert.deepEqual(toFloat32(await pm2.forward({ inputIds: x })), toFloat32(await pm.forward({ inputIds: x })));
    assert.throws(
      () => PeftModel.create(model, { peft_type: "PREFIX_TUNING", num_virtual_tokens: 3, token_dim: 6 }),
      (e: unknown) => e instanceof PeftError && /token_dim/.test(e.message) && /\(8\)/.test(e.message),
    );
    await pm.dispose();
    await pm2.dispose();
  });

  test("gpt2: generation starts from a KV cache holding the prefix; greedy decoding equals the full forward pass at every step", async () => {
    const model = fixtureModel("gpt2");
    const pm = PeftModel.create(model, { peft_type: "PREFIX_TUNING", task_type: "CAUSAL_LM", num_virtual_tokens: 4 }, "default", { seed: 3 });
    const pool = new AdapterPool(planLayout([], moduleShapes(pm), model.config.hiddenSize), (n) => pm.weights.get(n), (n) => pm.weights.has(n));
    const dec = await Decoder.create(pm, pool);
    try {
      assert.equal(prefillPrefix(dec.cache, 0, pm.adapter("default")), 4);
      assert.equal(dec.cache.lengths[0], 4);
      const V = model.config.vocabSize;
      const seq = [5, 17, 42, 9];
      let logits = (await dec.step([{ slot: 0, ids: seq, adapterSlot: 0 }]))[0]!;
      let worst = 0;
      for (let step = 0; step < 5; step++) {
        const full = toFloat32(await pm.forward({ inputIds: ids([seq]) }));
        worst = Math.max(worst, maxDiff(logits, full.subarray((seq.length - 1) * V)));
        let best = 0;
        for (let i = 1; i < V; i++) if (logits[i]! > logits[best]!) best = i;
        seq.push(best);
        logits = (await dec.step([{ slot: 0, ids: [best], adapterSlot: 0 }]))[0]!;
      }
      console.log(`# prefix tuning gpt2 generation: max |Δ| over 5 steps ${worst.toExponential(2)}`);
      assert.ok(worst < 1e-5, `${worst}`);
      const base = toFloat32(await pm.disableAdapter(() => pm.forward({ inputIds: ids([seq.slice(0, 4)]) })));
      const prefixed = toFloat32(await pm.forward({ inputIds: ids([seq.slice(0, 4)]) }));
      assert.ok(maxDiff(base, prefixed) > 1e-3, "the prefix changes the logits");
    } finally {
      await dec.release();
      await pm.dispose();
    }
  });

  for (const projection of [false, true]) {
    test(`finite-difference gradient check through the GPT-2 graph${projection ? " and the prefix projection" : ""}`, async () => {
      const model = fixtureModel("gpt2");
      const pm = PeftModel.create(model, { peft_type: "PREFIX_TUNING", num_virtual_tokens: 2, prefix_projection: projection, encoder_hidden_size: 6 }, "default", { seed: 1 });
      const a = pm.adapter("default");
      const keys = [...a.tensors.keys()];
      const inputs = keys.map((k) => ({ name: k, shape: a.tensors.get(k)!.shape, values: Float32Array.from(toFloat32(a.tensors.get(k)!), (v) => 0.3 * v) }));
      const r = await gradCheck(
        inputs,
        (...xs) => {
          const g = xs[0]!.graph;
          const m = new Map(keys.map((k, i) => [k, xs[i]!]));
          const hooks = a.tuner.hooks(a, (k) => m.get(k)!, { training: false, seed: 0 });
          const ctx = new ModelContext(g, model.weights, { dtype: "float64", hooks });
          const out = model.def.build(ctx, model.config as never, { inputIds: g.constant(ids([[4, 9, 2]])), attentionMask: g.constant(ids([[1, 1, 1]])) });
          return G.reduceSum(G.mul(out.logits, G.sin(out.logits)), [0, 1, 2], false);
        },
        { maxElements: 12 },
      );
      for (const [k, e] of Object.entries(r.maxError)) assert.ok(e <= 1e-6, `d/d${k}: ${e}`);
      await pm.dispose();
    });
  }

  for (const projection of [false, true]) {
    test(`gpt2${projection ? " with prefix_projection" : ""}: training lowers the loss; PEFT's prompt_embeddings [n, layers·2·token_dim] are saved and load to the same logits`, async () => {
      const model = fixtureModel("gpt2");
      const raw = { peft_type: "PREFIX_TUNING", task_type: "CAUSAL_LM", num_virtual_tokens: 4, prefix_projection: projection, encoder_hidden_size: 16 };
      const pm = PeftModel.create(model, raw, "default", { seed: 5 });
      const fit = await new Trainer(pm, { task: "causal-lm", epochs: 100, maxSteps: 12, batchSize: 16, lr: 0.01, seed: 0, schedule: "constant", dropout: false }, patternCorpus(16, 2, () => 8)).fit();
      const losses = fit.history.steps.map((x) => x.loss);
      console.log(`# prefix tuning gpt2${projection ? " (projection)" : ""}: loss ${losses[0]!.toFixed(4)} → ${losses.at(-1)!.toFixed(4)}`);
      assert.ok(losses.at(-1)! < losses[0]! - 0.02, `loss fell: ${losses.join(", ")}`);
      const dir = mkdtempSync(join(tmpdir(), "peft-prefix-"));
      try {
        pm.savePretrained(join(dir, "a"));
        const saved = JSON.parse(readFileSync(join(dir, "a", "adapter_config.json"), "utf8")) as Record<string, unknown>;
        const H = model.config.hiddenSize;
        const L = model.config.numLayers;
        assert.deepEqual(
          [saved.peft_type, saved.inference_mode, saved.token_dim, saved.num_layers, saved.prefix_projection, saved.encoder_hidden_size],
          ["PREFIX_TUNING", true, H, L, projection, 16],
        );
        const file = loadSafetensors(join(dir, "a", "adapter_model.safetensors")).tensors;
        assert.deepEqual([...file.keys()], ["prompt_embeddings"]);
        assert.deepEqual(file.get("prompt_embeddings")!.shape, [4, L * 2 * H]);
        const pm2 = PeftModel.fromPretrained(model, join(dir, "a"));
        const x = ids([[3, 8, 12, 5]]);
        assert.ok(maxDiff(toFloat32(await pm2.forward({ inputIds: x })), toFloat32(await pm.forward({ inputIds: x }))) < 1e-5);
        pm2.savePretrained(join(dir, "b"));
        for (const f of ["adapter_config.json", "adapter_model.safetensors"]) assert.deepEqual(readFileSync(join(dir, "b", f)), readFileSync(join(dir, "a", f)), f);
        await pm2.dispose();
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
      await pm.dispose();
    });
  }

  test("bad configs and unsupported models are rejected naming the field", () => {
    const gpt2 = fixtureModel("gpt2");
    for (const [raw, field] of [
      [{ token_dim: 7 }, "token_dim"],
      [{ num_layers: 9 }, "num_layers"],
      [{ prefix_projection: "yes" }, "prefix_projection"],
      [{ encoder_reparameterization_type: "MLP" }, "encoder_reparameterization_type"],
      [{ num_transformer_submodules: 2 }, "num_transformer_submodules"],
    ] as const) {
      assert.throws(() => PeftModel.create(gpt2, { peft_type: "PREFIX_TUNING", num_virtual_tokens: 3, ...raw }), (e: unknown) => e instanceof PeftError && e.message.includes(field), field);
    }
    for (const m of [fixtureModel("bert"), tinyModel()]) {
      assert.throws(() => PeftModel.create(m, { peft_type: "PREFIX_TUNING", num_virtual_tokens: 3 }), (e: unknown) => e instanceof PeftError && /peft_type/u.test(e.message) && /prefix tuning is implemented for/u.test(e.message));
    }
  });
});
