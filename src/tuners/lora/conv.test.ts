import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { cnnLoops, tinyCnn, tinyCnnWeights, tinyImages } from "../../models/simple-cnn.test-util.js";
import { PeftModel } from "../../peft/peft-model.js";
import { type Tensor, toFloat32 } from "../../tensor.js";
import { convSuite, gradCheckConv } from "../../train/conv-suite.test-util.js";

const t = (shape: number[], data: number[]): Tensor => ({ dtype: "float32", shape, data: Float32Array.from(data) });
const vals = (n: number, k: number) => Array.from({ length: n }, (_, i) => (((i * k + 5) % 19) - 9) / 8);
const maxDiff = (a: ArrayLike<number>, b: ArrayLike<number>) => Array.from(a).reduce((m, v, i) => Math.max(m, Math.abs(v - b[i]!)), 0);

describe("LoRA on convolutions (PEFT's lora.Conv2d)", () => {
  const raw = { peft_type: "LORA", task_type: "SEQ_CLS", r: 2, lora_alpha: 6, target_modules: ["conv1", "conv2"], init_lora_weights: false };

  test("keys and shapes: lora_A [r, in, kh, kw], lora_B [out, r, 1, 1]; a fresh default adapter has B = 0", () => {
    const m = tinyCnn(1);
    const pm = PeftModel.create(m, { ...raw, init_lora_weights: true });
    const shapes = Object.fromEntries([...pm.adapter("default").tensors].map(([k, v]) => [k, v.shape]));
    assert.deepEqual(shapes["conv1.lora_A.weight"], [2, 1, 3, 3]);
    assert.deepEqual(shapes["conv1.lora_B.weight"], [2, 2, 1, 1]);
    assert.deepEqual(shapes["conv2.lora_A.weight"], [2, 2, 3, 3]);
    assert.deepEqual(shapes["conv2.lora_B.weight"], [3, 2, 1, 1]);
    assert.ok(toFloat32(pm.adapter("default").tensors.get("conv2.lora_B.weight")!).every((v) => v === 0));
    // nn.Conv2d's Kaiming-uniform bound 1/√(in·kh·kw) = 1/√18 for conv2's lora_A
    const a = toFloat32(pm.adapter("default").tensors.get("conv2.lora_A.weight")!);
    assert.ok(Math.max(...a.map(Math.abs)) <= 1 / Math.sqrt(18) + 1e-7 && Math.max(...a.map(Math.abs)) > 0.5 / Math.sqrt(18));
  });

  test("forward = the network with kernels W + (alpha/r)·Σ_r B[o, r]·A[r, c, i, j], written out by hand", async () => {
    const m = tinyCnn(2);
    const pm = PeftModel.create(m, raw, "default", { seed: 7 });
    const a = pm.adapter("default").tensors;
    const kernels = new Map<string, Float64Array>();
    for (const name of ["conv1", "conv2"]) {
      const w = m.weights.get(`${name}.weight`);
      const [out, inn, kh, kw] = w.shape as [number, number, number, number];
      const A = toFloat32(a.get(`${name}.lora_A.weight`)!);
      const B = toFloat32(a.get(`${name}.lora_B.weight`)!);
      const k = Float64Array.from(toFloat32(w));
      for (let o = 0; o < out; o++)
        for (let c = 0; c < inn * kh * kw; c++) for (let r = 0; r < 2; r++) k[o * inn * kh * kw + c]! += (6 / 2) * B[o * 2 + r]! * A[r * inn * kh * kw + c]!;
      kernels.set(name, k);
    }
    const pixels = tinyImages(m.config, 4, 3);
    const got = await pm.forward({ inputIds: pixels });
    const want = cnnLoops(m.config, tinyCnnWeights(m.config, 2), pixels, kernels);
    const base = cnnLoops(m.config, tinyCnnWeights(m.config, 2), pixels);
    assert.ok(maxDiff(want, base) > 1e-2, "the adapter changes the logits");
    assert.ok(maxDiff(got.data as Float32Array, want) < 1e-4, `max diff ${maxDiff(got.data as Float32Array, want)}`);
    await pm.dispose();
  });

  test("finite-difference gradients of its conv graph (stride 2, padding 1)", async () => {
    await gradCheckConv({
      raw: { peft_type: "LORA", r: 2, lora_alpha: 3, target_modules: ["c"] },
      module: "c",
      tensors: new Map([
        ["c.lora_A.weight", t([2, 3, 3, 3], vals(54, 7))],
        ["c.lora_B.weight", t([4, 2, 1, 1], vals(8, 3))],
      ]),
      weight: t([4, 3, 3, 3], vals(108, 11)),
      x: t([2, 3, 5, 6], vals(180, 13)),
      stride: 2,
      padding: 1,
    });
  });

  test("a mixed-adapter batch (rows with conv LoRA adapters a, b and the base) equals each adapter alone per row", async () => {
    const m = tinyCnn(4);
    const cfg = { peft_type: "LORA", r: 2, lora_alpha: 4, target_modules: ["conv1", "conv2"], init_lora_weights: false };
    const pm = PeftModel.create(m, cfg, "a", { seed: 1 });
    pm.addAdapter("b", { ...cfg, r: 3 }, { seed: 2 });
    const pixels = tinyImages(m.config, 4, 8);
    const rows = ["a", "b", "__base__", "a"];
    const mixed = (await pm.forward({ inputIds: pixels, adapterNames: rows })).data as Float32Array;
    const alone: Record<string, Float32Array> = {};
    for (const name of ["a", "b"]) {
      pm.setAdapter(name);
      alone[name] = (await pm.forward({ inputIds: pixels })).data as Float32Array;
    }
    alone.__base__ = (await pm.disableAdapter(() => pm.forward({ inputIds: pixels }))).data as Float32Array;
    assert.ok(maxDiff(alone.a!, alone.b!) > 1e-3 && maxDiff(alone.a!, alone.__base__) > 1e-3, "the adapters differ");
    rows.forEach((name, i) => assert.ok(maxDiff(mixed.subarray(i * 4, i * 4 + 4), alone[name]!.subarray(i * 4, i * 4 + 4)) < 1e-5, `row ${i} (${name})`));
    await pm.dispose();
  });

  test("options peft-ts implements for linear layers only are refused on a conv target, naming the option", () => {
    const m = tinyCnn(1);
    const unsupported = (key: string) => (e: unknown) => (e as { code?: string }).code === "PEFT_ERR_UNSUPPORTED_OPTION" && new RegExp(key).test((e as Error).message);
    assert.throws(() => PeftModel.create(m, { ...raw, use_dora: true }), unsupported("use_dora"));
    assert.throws(() => PeftModel.create(m, { ...raw, init_lora_weights: "pissa" }), unsupported("init_lora_weights"));
    // a method that adapts linear layers only names the convolution it was pointed at
    assert.throws(() => PeftModel.create(m, { peft_type: "IA3", target_modules: ["conv1"], feedforward_modules: [] }), unsupported("conv1"));
    // nothing matches: the error lists the convolutions too
    assert.throws(() => PeftModel.create(m, { ...raw, target_modules: ["nope"] }), (e: unknown) => (e as { code?: string }).code === "PEFT_ERR_CONFIG" && /conv1, conv2/.test((e as Error).message));
  });
});

convSuite({
  method: "lora",
  random: { peft_type: "LORA", task_type: "SEQ_CLS", r: 2, lora_alpha: 4, target_modules: ["conv1", "conv2"], init_lora_weights: false },
  train: { peft_type: "LORA", task_type: "SEQ_CLS", r: 2, lora_alpha: 4, target_modules: ["conv1", "conv2"] },
});
