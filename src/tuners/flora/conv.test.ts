import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { cnnLoops, tinyCnn, tinyCnnWeights, tinyImages } from "../../models/simple-cnn.test-util.js";
import { PeftModel } from "../../peft/peft-model.js";
import { loraExportFiles, loraExportOf } from "../../peft/export-lora.js";
import { type Tensor, toFloat32 } from "../../tensor.js";
import { convSuite, gradCheckConv } from "../../train/conv-suite.test-util.js";
import { floraDeltaNd, floraParamsNd } from "./index.js";

const t = (shape: number[], data: number[]): Tensor => ({ dtype: "float32", shape, data: Float32Array.from(data) });
const vals = (n: number, k: number) => Array.from({ length: n }, (_, i) => (((i * k + 5) % 19) - 9) / 8);
const maxDiff = (a: ArrayLike<number>, b: ArrayLike<number>) => Array.from(a).reduce((m, v, i) => Math.max(m, Math.abs(v - b[i]!)), 0);

/** ΔW[o, c, i, j] = scale · Σ_{a, b, p, q} G[a, b, p, q]·P_0[c, a]·P_1[o, b]·P_2[i, p]·P_3[j, q], entry by entry. */
function tuckerByHand(a: ReadonlyMap<string, Tensor>, m: string, scale: number): Float64Array {
  const core = a.get(`${m}.flora_G`)!;
  const P = [0, 1, 2, 3].map((i) => a.get(`${m}.flora_${i}`)!);
  const [r0, r1, r2, r3] = core.shape as [number, number, number, number];
  const [inn, out, kh, kw] = P.map((p) => p.shape[0]!) as [number, number, number, number];
  const g = toFloat32(core);
  const [p0, p1, p2, p3] = P.map((p) => toFloat32(p)) as [Float32Array, Float32Array, Float32Array, Float32Array];
  const d = new Float64Array(out * inn * kh * kw);
  for (let o = 0; o < out; o++)
    for (let c = 0; c < inn; c++)
      for (let i = 0; i < kh; i++)
        for (let j = 0; j < kw; j++) {
          let s = 0;
          for (let x = 0; x < r0; x++)
            for (let y = 0; y < r1; y++)
              for (let p = 0; p < r2; p++)
                for (let q = 0; q < r3; q++) s += g[((x * r1 + y) * r2 + p) * r3 + q]! * p0[c * r0 + x]! * p1[o * r1 + y]! * p2[i * r2 + p]! * p3[j * r3 + q]!;
          d[((o * inn + c) * kh + i) * kw + j] = scale * s;
        }
  return d;
}

describe("FLoRA on convolutions (the N-dimensional case, N = 4)", () => {
  const raw = { peft_type: "FLORA", task_type: "SEQ_CLS", r: [2, 3, 2, 1], scale: 1.5, init_weights: false, target_modules: ["conv1", "conv2"] };

  test("keys and shapes: flora_G [r_in, r_out, r_kh, r_kw], flora_0..3 [dim_i, r_i]; parameters Σ dim_i·r_i + Π r_i; G starts at zero by default", () => {
    const m = tinyCnn(1);
    const pm = PeftModel.create(m, { ...raw, init_weights: true });
    const a = pm.adapter("default").tensors;
    assert.deepEqual(a.get("conv2.flora_G")!.shape, [2, 3, 2, 1]);
    assert.deepEqual([0, 1, 2, 3].map((i) => a.get(`conv2.flora_${i}`)!.shape), [[2, 2], [3, 3], [3, 2], [3, 1]]);
    const [trainable] = pm.getNbTrainableParameters();
    // conv1 [2, 1, 3, 3], conv2 [3, 2, 3, 3]; the head fc (4 × 12 + 4) is saved with SEQ_CLS
    assert.equal(trainable, floraParamsNd([1, 2, 3, 3], [2, 3, 2, 1]) + floraParamsNd([2, 3, 3, 3], [2, 3, 2, 1]) + 52);
    assert.equal(floraParamsNd([2, 3, 3, 3], [2, 3, 2, 1]), 2 * 2 + 3 * 3 + 3 * 2 + 3 * 1 + 12);
    assert.ok(toFloat32(a.get("conv1.flora_G")!).every((v) => v === 0));
  });

  test("forward = the network with kernels W + ΔW, ΔW the Tucker reconstruction written out entry by entry; the host floraDeltaNd (merge) equals it", async () => {
    const m = tinyCnn(2);
    const pm = PeftModel.create(m, raw, "default", { seed: 5 });
    const a = pm.adapter("default").tensors;
    const kernels = new Map<string, Float64Array>();
    for (const name of ["conv1", "conv2"]) {
      const d = tuckerByHand(a, name, 1.5);
      const host = floraDeltaNd(a.get(`${name}.flora_G`)!, [0, 1, 2, 3].map((i) => a.get(`${name}.flora_${i}`)!), 1.5);
      assert.ok(maxDiff(host, d) < 1e-9, `${name}: floraDeltaNd vs by hand`);
      kernels.set(name, Float64Array.from(toFloat32(m.weights.get(`${name}.weight`)), (w, i) => w + d[i]!));
    }
    const pixels = tinyImages(m.config, 4, 3);
    const want = cnnLoops(m.config, tinyCnnWeights(m.config, 2), pixels, kernels);
    assert.ok(maxDiff(want, cnnLoops(m.config, tinyCnnWeights(m.config, 2), pixels)) > 1e-2, "the adapter changes the logits");
    const got = await pm.forward({ inputIds: pixels });
    assert.ok(maxDiff(got.data as Float32Array, want) < 1e-4, `max diff ${maxDiff(got.data as Float32Array, want)}`);
    await pm.dispose();
  });

  test("finite-difference gradients of its conv graph (stride 2, padding 1; every factor and the core)", async () => {
    const r = [2, 3, 2, 1];
    const dims = [3, 4, 3, 2];
    await gradCheckConv({
      raw: { peft_type: "FLORA", r, scale: 0.7, target_modules: ["c"] },
      module: "c",
      tensors: new Map([["c.flora_G", t(r, vals(12, 7))], ...dims.map((d, i): [string, Tensor] => [`c.flora_${i}`, t([d, r[i]!], vals(d * r[i]!, 3 + 2 * i))])]),
      weight: t([4, 3, 3, 2], vals(72, 11)),
      x: t([2, 3, 5, 6], vals(180, 13)),
      stride: 2,
      padding: 1,
    });
  });

  test("a FLoRA conv adapter exports to a PEFT conv LoRA of rank r_out (lora_A [r_out, in, kh, kw], lora_B [out, r_out, 1, 1]) with the same logits", async () => {
    const m = tinyCnn(2);
    const pm = PeftModel.create(m, { peft_type: "FLORA", r: [2, 3, 2, 1], scale: 1.5, init_weights: false, target_modules: ["conv1", "conv2"] }, "f", { seed: 5 });
    const e = loraExportOf(pm, "f");
    assert.deepEqual(e.tensors.get("conv2.lora_A.weight")!.shape, [3, 2, 3, 3]);
    assert.deepEqual(e.tensors.get("conv2.lora_B.weight")!.shape, [3, 3, 1, 1]);
    const pixels = tinyImages(m.config, 4, 3);
    const flora = (await pm.forward({ inputIds: pixels })).data as Float32Array;
    pm.loadAdapterFromFiles(loraExportFiles(pm, "f"), "l");
    pm.setAdapter("l");
    const lora = (await pm.forward({ inputIds: pixels })).data as Float32Array;
    const base = (await pm.disableAdapter(() => pm.forward({ inputIds: pixels }))).data as Float32Array;
    assert.ok(maxDiff(flora, base) > 1e-2, "the adapter changes the logits");
    assert.ok(maxDiff(flora, lora) < 1e-5, `exported LoRA vs FLoRA: ${maxDiff(flora, lora)}`);
    await pm.dispose();
  });

  test("one rank for every mode; an r list of the wrong length is refused naming the option", () => {
    const m = tinyCnn(1);
    const pm = PeftModel.create(m, { peft_type: "FLORA", r: 2, target_modules: ["conv2"] });
    assert.deepEqual(pm.adapter("default").tensors.get("conv2.flora_G")!.shape, [2, 2, 2, 2]);
    const unsupported = (key: string) => (e: unknown) => (e as { code?: string }).code === "PEFT_ERR_UNSUPPORTED_OPTION" && new RegExp(key).test((e as Error).message);
    assert.throws(() => PeftModel.create(m, { peft_type: "FLORA", r: [2, 2], target_modules: ["conv2"] }), unsupported("'r'.*conv2 has 4 modes"));
    assert.throws(() => PeftModel.create(m, { peft_type: "FLORA", r: [2, 2, 2, 2], target_modules: ["fc"] }), unsupported("'r'.*fc has 2 modes"));
  });
});

convSuite({
  method: "flora",
  random: { peft_type: "FLORA", task_type: "SEQ_CLS", r: 2, scale: 1, init_weights: false, target_modules: ["conv1", "conv2"] },
  train: { peft_type: "FLORA", task_type: "SEQ_CLS", r: 2, scale: 2, target_modules: ["conv1", "conv2"] },
});
