import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { loadModel } from "../models/load.js";
import { MISTRAL, QWEN2, type TinyDecoderSpec, decoderConfigJson, randomDecoderWeights, writeHfModel } from "../models/tiny-decoder.test-util.js";
import { AdapterPool, planLayout } from "../peft/adapter-pool.js";
import { PeftModel } from "../peft/peft-model.js";
import { toFloat32 } from "../tensor.js";
import { fixturePath } from "../util/paths.js";
import { toOnnx } from "../graph/onnx.js";
import { Decoder, buildGenerationGraph, moduleShapes } from "./decoder.js";

const TOL = 1e-5;

function maxDiff(a: Float32Array, b: Float32Array): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

/** Logits of the last position of each prefix, from full forward passes of `model` with `adapter` active (null: base). */
async function fullForwardLast(pm: PeftModel, ids: number[], vocab: number): Promise<Float32Array> {
  const t = { dtype: "int64" as const, shape: [1, ids.length], data: BigInt64Array.from(ids, BigInt) };
  const l = toFloat32(await pm.forward({ inputIds: t }));
  return l.slice((l.length / vocab - 1) * vocab);
}

const CASES: { model: string; adapter: string | null; merge?: boolean }[] = [
  { model: "gpt2", adapter: "dora", merge: true },
  { model: "llama", adapter: "lora", merge: true },
  { model: "gpt2", adapter: null },
  { model: "gpt2", adapter: "lora" },
  { model: "gpt2", adapter: "rslora_all_linear" },
  { model: "gpt2", adapter: "lora_patterns" },
  { model: "gpt2", adapter: "dora" },
  { model: "gpt2", adapter: "ia3" },
  { model: "gpt2", adapter: "prompt_tuning" },
  { model: "llama", adapter: null },
  { model: "llama", adapter: "lora" },
];

describe("incremental decoding equals the full forward pass at every step", () => {
  const toRelease: (() => Promise<void>)[] = [];
  after(async () => {
    for (const r of toRelease) await r();
  });
  for (const c of CASES) {
    test(`${c.model}/${c.adapter ?? "base"}${c.merge ? " merged" : ""}`, async () => {
      const base = loadModel(fixturePath("peft-parity", c.model, "base"));
      const pm = c.adapter ? PeftModel.fromPretrained(base, fixturePath("peft-parity", c.model, c.adapter), { adapterName: "a" }) : new PeftModel(base);
      toRelease.push(() => pm.dispose());
      // merged: the adapter is folded into the weights the decoder reads, and no pool slot is used
      if (c.merge) pm.mergeAdapter(["a"]);
      const pooled = c.adapter !== null && !c.merge;
      const adapters = pooled ? [pm.adapter("a")] : [];
      const layout = planLayout(adapters, moduleShapes(pm), base.config.hiddenSize, { minSlots: 1 });
      const pool = new AdapterPool(layout, (n) => pm.weights.get(n), (n) => pm.weights.has(n));
      if (pooled) pool.assign(1, pm.adapter("a"));
      const dec = await Decoder.create(pm, pool);
      toRelease.push(() => dec.release());
      const V = dec.geometry.vocabSize;
      const prompt = [5, 17, 42, 9, 3];
      const vt = pool.virtualTokens(1);
      // prompt tuning: the virtual tokens go first, as PEFT prepends them
      const prefix = vt ? Array.from({ length: vt[1] }, (_, i) => vt[0] + i) : [];
      const first = await dec.step([{ slot: 0, ids: [...prefix.map(() => 0), ...prompt], virtual: [...prefix, ...prompt.map(() => -1)], adapterSlot: pooled ? 1 : 0 }]);
      let worst = maxDiff(first[0]!, await fullForwardLast(pm, prompt, V));
      const seq = [...prompt];
      let logits = first[0]!;
      for (let step = 0; step < 6; step++) {
        let best = 0;
        for (let i = 1; i < V; i++) if (logits[i]! > logits[best]!) best = i;
        seq.push((best + step * 7) % V); // vary the tokens a little
        logits = (await dec.step([{ slot: 0, ids: [seq.at(-1)!], adapterSlot: pooled ? 1 : 0 }]))[0]!;
        worst = Math.max(worst, maxDiff(logits, await fullForwardLast(pm, seq, V)));
      }
      console.log(`# ${c.model}/${c.adapter ?? "base"}${c.merge ? " merged" : ""}: max |Δ| over 7 steps = ${worst.toExponential(2)}`);
      assert.ok(worst <= TOL, `${worst} > ${TOL}`);
    });
  }
});

describe("incremental decoding: Qwen2 (q/k/v biases) and Mistral (sliding windows), prompts read in chunks", () => {
  const tmp = mkdtempSync(join(tmpdir(), "peft-decoder-"));
  after(() => rmSync(tmp, { recursive: true, force: true }));
  const cases: { name: string; spec: TinyDecoderSpec; extra: Record<string, unknown> }[] = [
    { name: "qwen2, window 3 on layer 1", spec: QWEN2, extra: { use_sliding_window: true, sliding_window: 3, max_window_layers: 1 } },
    { name: "mistral, window 4", spec: MISTRAL, extra: { sliding_window: 4 } },
  ];
  for (const c of cases) {
    test(c.name, async () => {
      const dir = writeHfModel(join(tmp, c.spec.modelType), decoderConfigJson(c.spec, c.extra), randomDecoderWeights(c.spec, 5));
      const pm = new PeftModel(loadModel(dir));
      const pool = new AdapterPool(planLayout([], moduleShapes(pm), c.spec.hidden), (n) => pm.weights.get(n), (n) => pm.weights.has(n));
      const dec = await Decoder.create(pm, pool);
      try {
        const V = c.spec.vocab;
        const prompt = [3, 17, 5, 29, 11, 0, 38];
        // two rows of one batch at different lengths; row 0 reads its prompt in two chunks
        await dec.step([{ slot: 0, ids: prompt.slice(0, 4), adapterSlot: 0 }]);
        const [l0, l1] = await dec.step([
          { slot: 0, ids: prompt.slice(4), adapterSlot: 0 },
          { slot: 1, ids: [9, 8], adapterSlot: 0 },
        ]);
        let worst = Math.max(maxDiff(l0!, await fullForwardLast(pm, prompt, V)), maxDiff(l1!, await fullForwardLast(pm, [9, 8], V)));
        const seqs = [[...prompt], [9, 8]];
        for (let step = 0; step < 6; step++) {
          seqs[0]!.push((step * 13 + 1) % V);
          seqs[1]!.push((step * 5 + 2) % V);
          const out = await dec.step(seqs.map((sq, slot) => ({ slot, ids: [sq.at(-1)!], adapterSlot: 0 })));
          for (let r = 0; r < 2; r++) worst = Math.max(worst, maxDiff(out[r]!, await fullForwardLast(pm, seqs[r]!, V)));
        }
        console.log(`# ${c.name}: max |Δ| = ${worst.toExponential(2)}`);
        assert.ok(worst <= TOL, `${worst} > ${TOL}`);
      } finally {
        await dec.release();
        await pm.dispose();
      }
    });
  }
});

describe("rotary tables of a long-context config are fed, sized to the cache", () => {
  const tmp = mkdtempSync(join(tmpdir(), "peft-decoder-rope-"));
  after(() => rmSync(tmp, { recursive: true, force: true }));
  test("a 131,072-position Llama: the graph does not grow with max_position_embeddings, and decodes as the 32-position one", async () => {
    const spec: TinyDecoderSpec = { ...MISTRAL, modelType: "llama", ropeTheta: 500000 };
    const weights = randomDecoderWeights(spec, 9);
    const small = new PeftModel(loadModel(writeHfModel(join(tmp, "short"), decoderConfigJson(spec), weights)));
    const long = new PeftModel(loadModel(writeHfModel(join(tmp, "long"), decoderConfigJson({ ...spec, maxPositions: 131072 }), weights)));
    const layout = planLayout([], moduleShapes(long), spec.hidden);
    // no [max_position_embeddings, head_dim] constants (2 × 131072 × 8 floats = 8 MiB): the two graphs are the same size
    const bytes = (pm: PeftModel) => toOnnx(buildGenerationGraph(pm, layout)).length;
    assert.equal(bytes(long), bytes(small));
    assert.ok(bytes(long) < 2 ** 20, `${bytes(long)} bytes`);
    const pool = new AdapterPool(layout, (n) => long.weights.get(n), (n) => long.weights.has(n));
    const dec = await Decoder.create(long, pool);
    try {
      const V = spec.vocab;
      // 20 tokens: the cache grows from 16 to 32 positions, and the tables with it
      const seq = [3, 17, 5, 29, 11, 0, 38, 2, 9, 14, 21, 7, 33, 1];
      let worst = maxDiff((await dec.step([{ slot: 0, ids: seq, adapterSlot: 0 }]))[0]!, await fullForwardLast(small, seq, V));
      for (let step = 0; step < 6; step++) {
        seq.push((step * 11 + 4) % V);
        const out = await dec.step([{ slot: 0, ids: [seq.at(-1)!], adapterSlot: 0 }]);
        worst = Math.max(worst, maxDiff(out[0]!, await fullForwardLast(small, seq, V)));
      }
      assert.equal(dec.cache.capacity, 32);
      assert.ok(worst <= TOL, `${worst} > ${TOL}`);
    } finally {
      await dec.release();
      await small.dispose();
      await long.dispose();
    }
  });
});
