import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { PeftModel } from "../../peft/peft-model.js";
import type { Tensor } from "../../tensor.js";
import { fixtureModel, gradCheckLinear, maxDiff, methodSuite, runLinear } from "../../train/method-suite.test-util.js";
import { fourierEntries } from "./index.js";
import { torchRandperm } from "./torch-randperm.js";

const t = (shape: number[], data: number[]): Tensor => ({ dtype: "float32", shape, data: Float32Array.from(data) });

describe("FourierFT", () => {
  test("torch.randperm's Fisher–Yates over torch's generator (util/torch-generator, checked there against mt19937's reference values)", () => {
    // randperm(3): 3499211612 % 3 = 2 swaps r0 ↔ r2; 581869302 % 2 = 0 keeps r1
    assert.deepEqual([...torchRandperm(3, 5489)], [2, 1, 0]);
    const p = torchRandperm(1000, 777);
    assert.deepEqual([...p].sort((a, b) => a - b), Array.from({ length: 1000 }, (_, i) => i), "a permutation");
  });

  // out 2, in 3, three coefficients; ΔW by the inverse-DFT definition, summed by hand
  const W = [
    [0.1, -0.2, 0.3],
    [0.4, 0.5, -0.6],
  ];
  const c = [0.7, -1.1, 2.0];
  const x = [
    [1, 2, -1],
    [0.5, -0.5, 3],
  ];
  const raw = { peft_type: "FOURIERFT", n_frequency: 3, scaling: 10, random_loc_seed: 5, target_modules: ["m"] };
  const tensors = new Map([["m.fourierft_spectrum", t([3], c)]]);

  test("forward = x·Wᵀ + x·ΔWᵀ with ΔW[p, q] = scaling/(out·in)·Σ_k c_k·cos(2π(i_k·p/out + j_k·q/in)), by hand", async () => {
    const { rows, cols } = fourierEntries(2, 3, 3, 5);
    const perm = torchRandperm(6, 5, 3);
    assert.deepEqual([...rows], [...perm].map((v) => Math.floor(v / 3)), "row = index // in (PEFT)");
    assert.deepEqual([...cols], [...perm].map((v) => v % 3), "column = index % in");
    const dW = [0, 1].map((p) => [0, 1, 2].map((q) => (10 / 6) * c.reduce((s, ck, k) => s + ck * Math.cos(2 * Math.PI * ((rows[k]! * p) / 2 + (cols[k]! * q) / 3)), 0)));
    const want = x.flatMap((row) => [0, 1].map((o) => [0, 1, 2].reduce((s, i) => s + (W[o]![i]! + dW[o]![i]!) * row[i]!, 0)));
    const got = await runLinear({ raw, module: "m", tensors, weight: t([2, 3], W.flat()), x: t([2, 3], x.flat()) });
    assert.ok(maxDiff(got, want) < 1e-6, `${[...got]} vs ${want}`);
  });

  test("finite-difference gradients of its graph", async () => {
    await gradCheckLinear({ raw, module: "m", tensors, weight: t([2, 3], W.flat()), x: t([2, 3], x.flat()) });
  });

  test("GPT-2's Conv1D (fan_in_fan_out): merge == forward; layers of one shape share the frequencies", async () => {
    const g = PeftModel.create(fixtureModel("gpt2"), { peft_type: "FOURIERFT", n_frequency: 50, target_modules: ["c_attn", "mlp.c_proj"], fan_in_fan_out: true });
    assert.equal(g.getNbTrainableParameters()[0], 2 * 2 * 50);
    const ids: Tensor<"int64"> = { dtype: "int64", shape: [1, 4], data: BigInt64Array.from([3, 4, 5, 6], BigInt) };
    const y = await g.forward({ inputIds: ids });
    g.mergeAdapter();
    assert.ok(maxDiff((await g.forward({ inputIds: ids })).data as Float32Array, y.data as Float32Array) < 1e-4);
    await g.dispose();
  });

  methodSuite({
    method: "fourierft",
    arch: "llama",
    randomConfig: { peft_type: "FOURIERFT", n_frequency: 64, scaling: 300, target_modules: ["q_proj", "v_proj"] },
    trainConfig: { peft_type: "FOURIERFT", n_frequency: 200, scaling: 300, init_weights: true, target_modules: ["q_proj", "v_proj", "down_proj"] },
    badConfigs: [
      [{ peft_type: "FOURIERFT", n_frequency: 0, target_modules: ["q_proj"] }, "n_frequency"],
      [{ peft_type: "FOURIERFT", n_frequency: 5000, target_modules: ["q_proj"] }, "n_frequency"],
      [{ peft_type: "FOURIERFT", bias: "lora_only", target_modules: ["q_proj"] }, "bias"],
      [{ peft_type: "FOURIERFT", random_loc_seed: -1, target_modules: ["q_proj"] }, "random_loc_seed"],
      [{ peft_type: "FOURIERFT", target_modules: "q_proj", layers_to_transform: [0] }, "layers_to_transform"],
    ],
    lr: 0.05,
  });
});
