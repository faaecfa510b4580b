/**
 * The decoding graph with onnxruntime's contrib kernels (`contribOps`: MultiHeadAttention over the
 * KV cache, SkipLayerNormalization, FastGelu) gives the logits of the standard-op graph to ≤ 1e-5
 * on a small random GPT-2 (the tiny fixture), through a prefill of rows of different lengths,
 * decode steps and a row whose slot is refilled, with a LoRA adapter on some rows; the graph
 * really holds the contrib nodes (com.microsoft domain, optional inputs left out); other execution
 * providers are refused.
 */
import assert from "node:assert/strict";
import { after, describe, test } from "node:test";
import { toModelProto } from "../graph/onnx.js";
import { loadModel } from "../models/load.js";
import { ALL_CONTRIB_OPS } from "../models/context.js";
import { AdapterPool, planLayout } from "../peft/adapter-pool.js";
import { PeftModel } from "../peft/peft-model.js";
import { fixturePath } from "../util/paths.js";
import { Decoder, type StepRow, buildGenerationGraph, moduleShapes } from "./decoder.js";

const TOL = 1e-5;

function argmax(x: Float32Array): number {
  let b = 0;
  for (let i = 1; i < x.length; i++) if (x[i]! > x[b]!) b = i;
  return b;
}

describe("decoding with onnxruntime contrib kernels (GPT-2)", () => {
  const base = loadModel(fixturePath("peft-parity", "gpt2", "base"));
  const pm = PeftModel.fromPretrained(base, fixturePath("peft-parity", "gpt2", "lora"), { adapterName: "a" });
  const layout = planLayout([pm.adapter("a")], moduleShapes(pm), base.config.hiddenSize, { minSlots: 1 });
  const pool = () => {
    const p = new AdapterPool(layout, (n) => pm.weights.get(n), (n) => pm.weights.has(n));
    p.assign(1, pm.adapter("a"));
    return p;
  };
  after(async () => {
    await pm.dispose();
  });

  test("the graph uses MultiHeadAttention, SkipLayerNormalization and FastGelu from com.microsoft", () => {
    const proto = toModelProto(buildGenerationGraph(pm, layout, { contribOps: ALL_CONTRIB_OPS }));
    const contrib = proto.graph!.node!.filter((n) => n.domain === "com.microsoft");
    const count = (op: string) => contrib.filter((n) => n.opType === op).length;
    const layers = base.config.numLayers;
    assert.equal(count("MultiHeadAttention"), layers);
    assert.equal(count("FastGelu"), layers);
    assert.equal(count("SkipLayerNormalization"), 2 * layers - 1); // every layer norm but the first and ln_f
    assert.deepEqual(proto.opsetImport!.map((o) => o.domain).sort(), ["", "com.microsoft"]);
    const mha = contrib.find((n) => n.opType === "MultiHeadAttention")!;
    assert.equal(mha.input!.length, 8);
    assert.deepEqual([mha.input![3], mha.input![4]], ["", ""], "bias and key_padding_mask left out");
    const plain = toModelProto(buildGenerationGraph(pm, layout));
    assert.ok(plain.graph!.node!.every((n) => !n.domain), "no contrib op without contribOps");
  });

  test("logits equal the standard graph's to ≤ 1e-5 at every step (prefill of ragged rows, decode, a refilled slot, mixed adapters)", async () => {
    const plain = await Decoder.create(pm, pool(), { sessionOptions: { threads: 1 } });
    const fused = await Decoder.create(pm, pool(), { sessionOptions: { threads: 1 }, contribOps: ALL_CONTRIB_OPS });
    try {
      let worst = 0;
      let steps = 0;
      const both = async (rows: StepRow[]): Promise<number[]> => {
        const [a, b] = [await plain.step(rows), await fused.step(rows)];
        a.forEach((la, r) => la.forEach((x, j) => (worst = Math.max(worst, Math.abs(x - b[r]![j]!)))));
        steps++;
        return a.map(argmax);
      };
      const adapterOf = (slot: number) => slot % 2; // rows 1 and 3 on the adapter
      const prompts = [[5, 17, 42, 7, 9, 11, 13], [3], [8, 8, 2], [100, 1, 2, 3, 4]];
      let next = await both(prompts.map((ids, slot) => ({ slot, ids, adapterSlot: adapterOf(slot) })));
      for (let t = 0; t < 6; t++) next = await both(next.map((id, slot) => ({ slot, ids: [id], adapterSlot: adapterOf(slot) })));
      // slot 2 leaves and a new prompt takes it while the others keep decoding
      plain.cache.reset(2);
      fused.cache.reset(2);
      await both([{ slot: 2, ids: [60, 61, 62, 63], adapterSlot: 1 }]);
      for (let t = 0; t < 3; t++) next = await both(next.map((id, slot) => ({ slot, ids: [id], adapterSlot: adapterOf(slot) })));
      assert.equal(steps, 11);
      assert.ok(worst <= TOL, `max |Δ logit| ${worst} > ${TOL}`);
    } finally {
      await plain.release();
      await fused.release();
    }
  });

  test("contrib kernels on another execution provider are refused (PEFT_ERR_UNSUPPORTED_OPTION)", async () => {
    await assert.rejects(Decoder.create(pm, pool(), { sessionOptions: { ep: "webgpu" }, contribOps: { attention: true } }), (e: unknown) => (e as { code?: string }).code === "PEFT_ERR_UNSUPPORTED_OPTION" && /CPU execution provider only, not webgpu/.test((e as Error).message));
  });
});
