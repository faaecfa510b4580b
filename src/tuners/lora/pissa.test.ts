import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import { AdapterStateError, ConfigError, PeftError, UnsupportedOptionError } from "../../errors.js";
import { PeftModel } from "../../peft/peft-model.js";
import { type Tensor, toFloat32 } from "../../tensor.js";
import { fixtureModel, gradCheckLinear, maxDiff, methodSuite, runLinear } from "../../train/method-suite.test-util.js";
import { Rng } from "../../util/rng.js";
import type { BaseModelInfo } from "../common/types.js";
import { lora } from "./index.js";
import { parseLoraConfig } from "./config.js";

const t = (shape: number[], data: number[]): Tensor => ({ dtype: "float32", shape, data: Float32Array.from(data) });

/** A one-layer model description around the [out, in] weight `w`. */
function oneLayer(w: Tensor): BaseModelInfo {
  const [out, inn] = w.shape as [number, number];
  return {
    modelType: "toy",
    linearModules: [{ name: "m", inFeatures: inn, outFeatures: out, fanInFanOut: false }],
    convModules: [],
    outputModules: [],
    hiddenSize: inn,
    numLayers: 1,
    numHeads: 1,
    numKeyValueHeads: 1,
    weight: () => w,
    has: (k) => k === "m.weight",
    embeddingParam: "e",
    embeddingDim: inn,
    paramNames: ["m.weight"],
    defaultTargets: ["m"],
  };
}

/** init + base rewrite of a LoRA config on the one-layer model. */
function initOn(raw: Record<string, unknown>, w: Tensor) {
  const c = parseLoraConfig({ peft_type: "LORA", target_modules: ["m"], ...raw }, "test");
  const info = oneLayer(w);
  const tensors = lora.init(c, info, new Rng(1));
  const rewritten = lora.baseRewrite!(c, info, tensors)!.get("m.weight")!;
  return { A: toFloat32(tensors.get("m.lora_A.weight")!), B: toFloat32(tensors.get("m.lora_B.weight")!), residual: toFloat32(rewritten), tensors };
}

describe("LoRA PiSSA / OLoRA initialisation", () => {
  // W = 3·e₁e₂ᵀ + 1·e₂e₁ᵀ: singular values 3 (u = e₁, v = e₂) and 1 (u = e₂, v = e₁)
  const W = t([3, 2], [0, 3, 1, 0, 0, 0]);

  test("pissa, r 1, scaling 2: B·A = e₁e₂ᵀ·3/2 and the base becomes W − 2·B·A = e₂e₁ᵀ (by hand)", () => {
    const { A, B, residual } = initOn({ r: 1, lora_alpha: 2, init_lora_weights: "pissa" }, W);
    // A = ±√1.5·[0, 1], B = ±√1.5·[1, 0, 0]ᵀ with the same sign
    assert.ok(maxDiff(A.map(Math.abs), [0, Math.sqrt(1.5)]) < 1e-6, `A ${[...A]}`);
    assert.ok(maxDiff(B.map(Math.abs), [Math.sqrt(1.5), 0, 0]) < 1e-6, `B ${[...B]}`);
    assert.ok(A[1]! * B[0]! > 0, "B·A is +1.5 at (0, 1)");
    assert.ok(maxDiff(residual, [0, 0, 1, 0, 0, 0]) < 1e-6, `residual ${[...residual]}`);
  });

  test("pissa_niter_4 finds the same rank-1 part (randomised SVD, well-separated singular values)", () => {
    const w = t([3, 2], [0, 3, 0.1, 0, 0, 0]);
    const { residual } = initOn({ r: 1, lora_alpha: 2, init_lora_weights: "pissa_niter_4" }, w);
    assert.ok(maxDiff(residual, [0, 0, 0.1, 0, 0, 0]) < 1e-6, `residual ${[...residual]}`);
  });

  test("olora, r 1: B = first column of W normalised, A = Bᵀ·W, base W − B·A (by hand)", () => {
    const w = t([3, 2], [3, 4, 0, 5, 4, 0]);
    const { A, B, residual } = initOn({ r: 1, lora_alpha: 1, init_lora_weights: "olora" }, w);
    assert.ok(maxDiff(B, [0.6, 0, 0.8]) < 1e-6, `B ${[...B]}`);
    assert.ok(maxDiff(A, [5, 2.4]) < 1e-6, `A ${[...A]}`);
    assert.ok(maxDiff(residual, [0, 4 - 1.44, 0, 5, 0, -1.92]) < 1e-5, `residual ${[...residual]}`);
  });

  test("the adapted layer on the residual: x·W_resᵀ + s·x·Aᵀ·Bᵀ, by hand after moving B; its gradients check", async () => {
    const { residual } = initOn({ r: 1, lora_alpha: 2, init_lora_weights: "pissa" }, W);
    const A = [0, 1.2];
    const B = [1, -0.5, 2];
    const x = [
      [1, 2],
      [-1, 0.5],
    ];
    const want: number[] = [];
    for (const row of x) {
      const ax = A[0]! * row[0]! + A[1]! * row[1]!;
      for (let o = 0; o < 3; o++) want.push(residual[o * 2]! * row[0]! + residual[o * 2 + 1]! * row[1]! + 2 * B[o]! * ax);
    }
    const c = {
      raw: { peft_type: "LORA", r: 1, lora_alpha: 2, init_lora_weights: "pissa", target_modules: ["m"] },
      module: "m",
      tensors: new Map([
        ["m.lora_A.weight", t([1, 2], A)],
        ["m.lora_B.weight", t([3, 1], B)],
      ]),
      weight: t([3, 2], [...residual]),
      x: t([2, 2], x.flat()),
    };
    assert.ok(maxDiff(await runLinear(c), want) < 1e-6);
    await gradCheckLinear(c);
  });

  test("on a model: the fresh adapter leaves the logits unchanged; the base is rewritten while it is loaded and restored when deleted", async () => {
    const model = fixtureModel("llama");
    const ids: Tensor<"int64"> = { dtype: "int64", shape: [1, 5], data: BigInt64Array.from([3, 9, 4, 20, 7], BigInt) };
    const plain = new PeftModel(model);
    const base = await plain.forward({ inputIds: ids });
    for (const init of ["pissa", "pissa_niter_2", "olora"]) {
      const pm = PeftModel.create(model, { peft_type: "LORA", r: 4, lora_alpha: 8, target_modules: ["q_proj", "v_proj"], init_lora_weights: init });
      assert.ok(maxDiff((await pm.forward({ inputIds: ids })).data as Float32Array, base.data as Float32Array) < 1e-4, `${init}: logits at init`);
      const k = "model.layers.0.self_attn.q_proj.weight";
      assert.ok(maxDiff(toFloat32(pm.baseWeights.get(k)), toFloat32(model.weights.get(k))) > 1e-3, `${init}: ${k} rewritten`);
      await assert.rejects(pm.forward({ inputIds: ids, adapterNames: ["default"] }), AdapterStateError);
      await pm.dispose();
    }
    const pm = PeftModel.create(model, { peft_type: "LORA", r: 4, target_modules: ["q_proj"], init_lora_weights: "pissa" }, "p");
    pm.addAdapter("other", { peft_type: "LORA", r: 2, target_modules: ["v_proj"] });
    pm.setAdapter("other");
    pm.deleteAdapter("p");
    const k = "model.layers.0.self_attn.q_proj.weight";
    assert.deepEqual(pm.baseWeights.get(k), model.weights.get(k));
    await pm.dispose();
    await plain.dispose();
  });

  test("save with path_initial_model_for_weight_conversion: a plain rank-2r LoRA that gives the trained logits on the original base", async () => {
    const model = fixtureModel("gpt2");
    const ids: Tensor<"int64"> = { dtype: "int64", shape: [1, 5], data: BigInt64Array.from([3, 9, 4, 20, 7], BigInt) };
    const dir = mkdtempSync(join(tmpdir(), "peft-pissa-"));
    try {
      const pm = PeftModel.create(model, { peft_type: "LORA", r: 2, lora_alpha: 4, target_modules: ["c_attn"], fan_in_fan_out: true, init_lora_weights: "pissa_niter_3" }, "default", { seed: 2 });
      pm.savePretrained(join(dir, "init"));
      // "training": move every factor
      const a = pm.adapter("default");
      pm.updateAdapterTensors("default", new Map([...a.tensors].map(([key, v]) => [key, { dtype: "float32", shape: v.shape, data: Float32Array.from(toFloat32(v), (x, i) => x * 1.3 + 0.02 * Math.sin(i)) } as Tensor])));
      const trained = await pm.forward({ inputIds: ids });
      pm.savePretrained(join(dir, "converted"), { pathInitialModelForWeightConversion: join(dir, "init") });
      const cfg = JSON.parse(readFileSync(join(dir, "converted", "adapter_config.json"), "utf8")) as Record<string, unknown>;
      assert.equal(cfg.init_lora_weights, true);
      assert.equal(cfg.r, 4);
      assert.equal(cfg.lora_alpha, 8);
      const conv = PeftModel.fromPretrained(model, join(dir, "converted"));
      assert.deepEqual(conv.adapter("default").tensors.get("transformer.h.0.attn.c_attn.lora_A.weight")!.shape, [4, 32]);
      assert.ok(maxDiff((await conv.forward({ inputIds: ids })).data as Float32Array, trained.data as Float32Array) < 1e-4, "converted adapter on the original base");
      const merged = new PeftModel(conv.mergeAndUnload());
      assert.ok(maxDiff((await merged.forward({ inputIds: ids })).data as Float32Array, trained.data as Float32Array) < 1e-4, "and merges into the original base");
      await merged.dispose();
      // the conversion needs an adapter of the same layout
      assert.throws(() => pm.savePretrained(join(dir, "x"), { pathInitialModelForWeightConversion: join(dir, "nothing") }), PeftError);
      await Promise.all([pm.dispose(), conv.dispose()]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("OLoRA refuses GPT-2's Conv1D layers (PEFT factorises the stored [in, out] weight)", () => {
    assert.throws(
      () => PeftModel.create(fixtureModel("gpt2"), { peft_type: "LORA", r: 2, target_modules: ["c_fc"], fan_in_fan_out: true, init_lora_weights: "olora" }),
      (e: unknown) => e instanceof UnsupportedOptionError && e.message.includes("init_lora_weights"),
    );
  });

  methodSuite({
    method: "lora",
    arch: "llama",
    randomConfig: { peft_type: "LORA", r: 4, lora_alpha: 8, target_modules: ["q_proj", "v_proj"], init_lora_weights: "pissa" },
    trainConfig: { peft_type: "LORA", r: 4, lora_alpha: 4, target_modules: ["q_proj", "v_proj", "down_proj"], init_lora_weights: "pissa" },
    perturb: true,
    badConfigs: [
      [{ peft_type: "LORA", target_modules: ["q_proj"], init_lora_weights: "pissa_niter_x" }, "init_lora_weights"],
      [{ peft_type: "LORA", target_modules: ["q_proj"], init_lora_weights: "eva" }, "init_lora_weights"],
      [{ peft_type: "LORA", r: 40, target_modules: ["q_proj"], init_lora_weights: "olora" }, "'r'"],
    ],
    lr: 0.01,
  });

  test("bad config types are ConfigErrors", () => {
    assert.throws(() => parseLoraConfig({ peft_type: "LORA", init_lora_weights: "pissa_niter_" }, "f"), ConfigError);
  });
});
