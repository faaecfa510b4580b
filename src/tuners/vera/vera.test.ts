import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { PeftModel } from "../../peft/peft-model.js";
import type { Tensor } from "../../tensor.js";
import { fixtureModel, gradCheckLinear, maxDiff, methodSuite, runLinear } from "../../train/method-suite.test-util.js";

const t = (shape: number[], data: number[]): Tensor => ({ dtype: "float32", shape, data: Float32Array.from(data) });

describe("VeRA", () => {
  // shared projections sized for the largest layer (in 3, out 3), r 2; the layer is out 2, in 2
  const A = [
    [1, -1, 9],
    [0.5, 2, 9],
  ];
  const B = [
    [1, 0.5],
    [-2, 1],
    [9, 9],
  ];
  const lb = [0.5, -1.5];
  const ld = [2, -0.25];
  const W = [
    [0.1, -0.2],
    [0.3, 0.4],
  ];
  const x = [
    [1, 2],
    [-1, 0.5],
  ];
  const tensors = new Map<string, Tensor>([
    ["base_model.vera_A", t([2, 3], A.flat())],
    ["base_model.vera_B", t([3, 2], B.flat())],
    ["m.vera_lambda_b", t([2], lb)],
    ["m.vera_lambda_d", t([2], ld)],
  ]);
  const raw = { peft_type: "VERA", r: 2, target_modules: ["m"] };

  test("forward = x·Wᵀ + λ_b ⊙ (B[:out]·(λ_d ⊙ (A[:, :in]·x))), computed by hand (the 9s lie outside the slices)", async () => {
    const want: number[] = [];
    for (const row of x) {
      const h = [0, 1].map((k) => ld[k]! * (A[k]![0]! * row[0]! + A[k]![1]! * row[1]!));
      for (let o = 0; o < 2; o++) want.push(W[o]![0]! * row[0]! + W[o]![1]! * row[1]! + lb[o]! * (B[o]![0]! * h[0]! + B[o]![1]! * h[1]!));
    }
    const got = await runLinear({ raw, module: "m", tensors, weight: t([2, 2], W.flat()), x: t([2, 2], x.flat()) });
    assert.ok(maxDiff(got, want) < 1e-6, `${[...got]} vs ${want}`);
  });

  test("finite-difference gradients of its graph (the projections are frozen)", async () => {
    await gradCheckLinear({ raw, module: "m", tensors, weight: t([2, 2], W.flat()), x: t([2, 2], x.flat()) });
  });

  test("projections are shared, saved as base_model.vera_A/B and not trained; GPT-2's Conv1D works with fan_in_fan_out", async () => {
    const pm = PeftModel.create(fixtureModel("llama"), { peft_type: "VERA", r: 16, target_modules: ["q_proj", "v_proj"] });
    const a = pm.adapter("default");
    assert.deepEqual(a.tensors.get("base_model.vera_A")!.shape, [16, 32]);
    assert.deepEqual(a.tensors.get("base_model.vera_B")!.shape, [32, 16], "sized for the largest out (q_proj 32 > v_proj 16)");
    // trainable: λ_b (out) + λ_d (r) per layer; PEFT keeps the projections as buffers
    assert.equal(pm.getNbTrainableParameters()[0], 2 * (32 + 16 + 16 + 16));
    const built = pm.buildGraph({ training: true });
    assert.ok(![...built.trainable.keys()].some((k) => k.includes("vera_A") || k.includes("vera_B")));
    const g = PeftModel.create(fixtureModel("gpt2"), { peft_type: "VERA", r: 4, target_modules: ["c_attn"], fan_in_fan_out: true, init_weights: false });
    const ids: Tensor<"int64"> = { dtype: "int64", shape: [1, 4], data: BigInt64Array.from([3, 4, 5, 6], BigInt) };
    const y = await g.forward({ inputIds: ids });
    g.mergeAdapter();
    assert.ok(maxDiff((await g.forward({ inputIds: ids })).data as Float32Array, y.data as Float32Array) < 1e-4);
    await g.dispose();
    await pm.dispose();
  });

  methodSuite({
    method: "vera",
    arch: "llama",
    randomConfig: { peft_type: "VERA", r: 8, target_modules: ["q_proj", "v_proj"], init_weights: false },
    trainConfig: { peft_type: "VERA", r: 32, target_modules: ["q_proj", "v_proj", "down_proj"] },
    badConfigs: [
      [{ peft_type: "VERA", r: 0, target_modules: ["q_proj"] }, "'r'"],
      [{ peft_type: "VERA", save_projection: false, target_modules: ["q_proj"] }, "save_projection"],
      [{ peft_type: "VERA", bias: "lora_only", target_modules: ["q_proj"] }, "bias"],
      [{ peft_type: "VERA", target_modules: ["nothing_here"] }, "target_modules"],
    ],
    lr: 0.05,
  });
});
