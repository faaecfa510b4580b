import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { Tensor } from "../../tensor.js";
import { gradCheckLinear, maxDiff, methodSuite, runLinear } from "../../train/method-suite.test-util.js";

const t = (shape: number[], data: number[]): Tensor => ({ dtype: "float32", shape, data: Float32Array.from(data) });

describe("LoHa", () => {
  // out 3, in 2, r 2: explicit matrices
  const w1a = [
    [0.5, -1],
    [2, 0.25],
    [-0.5, 1.5],
  ];
  const w1b = [
    [1, 2],
    [-1, 0.5],
  ];
  const w2a = [
    [0.2, 0.4],
    [-0.3, 1],
    [1, -1],
  ];
  const w2b = [
    [0.5, -0.5],
    [1.5, 0.25],
  ];
  const W = [
    [0.1, 0.2],
    [0.3, -0.4],
    [-0.5, 0.6],
  ];
  const x = [
    [1, -2],
    [0.5, 3],
  ];
  const alpha = 3;
  const r = 2;
  const tensors = new Map<string, Tensor>([
    ["m.hada_w1_a", t([3, 2], w1a.flat())],
    ["m.hada_w1_b", t([2, 2], w1b.flat())],
    ["m.hada_w2_a", t([3, 2], w2a.flat())],
    ["m.hada_w2_b", t([2, 2], w2b.flat())],
  ]);
  const raw = { peft_type: "LOHA", r, alpha, target_modules: ["m"] };

  test("forward = x·(W + ((w1_a·w1_b) ⊙ (w2_a·w2_b))·alpha/r)ᵀ, computed by hand", async () => {
    const dot = (a: number[][], b: number[][], i: number, j: number) => a[i]!.reduce((s, v, k) => s + v * b[k]![j]!, 0);
    const want: number[] = [];
    for (let n = 0; n < 2; n++) {
      for (let o = 0; o < 3; o++) {
        let y = 0;
        for (let i = 0; i < 2; i++) y += x[n]![i]! * (W[o]![i]! + dot(w1a, w1b, o, i) * dot(w2a, w2b, o, i) * (alpha / r));
        want.push(y);
      }
    }
    const got = await runLinear({ raw, module: "m", tensors, weight: t([3, 2], W.flat()), x: t([2, 2], x.flat()) });
    assert.ok(maxDiff(got, want) < 1e-6, `${[...got]} vs ${want}`);
  });

  test("finite-difference gradients of its graph", async () => {
    await gradCheckLinear({ raw, module: "m", tensors, weight: t([3, 2], W.flat()), x: t([2, 2], x.flat()) });
  });

  test("GPT-2's Conv1D layers are refused, as PEFT does", async () => {
    const { PeftModel } = await import("../../peft/peft-model.js");
    const { fixtureModel } = await import("../../train/method-suite.test-util.js");
    assert.throws(() => PeftModel.create(fixtureModel("gpt2"), { peft_type: "LOHA", target_modules: ["c_attn"] }), /target_modules.*Conv1D/u);
  });

  methodSuite({
    method: "loha",
    arch: "llama",
    randomConfig: { peft_type: "LOHA", r: 4, alpha: 8, target_modules: ["q_proj", "v_proj"], init_weights: false, rank_pattern: { v_proj: 2 } },
    trainConfig: { peft_type: "LOHA", r: 4, alpha: 4, target_modules: ["q_proj", "v_proj", "down_proj"] },
    badConfigs: [
      [{ peft_type: "LOHA", r: 0, target_modules: ["q_proj"] }, "'r'"],
      [{ peft_type: "LOHA", rank_dropout: 2, target_modules: ["q_proj"] }, "rank_dropout"],
      [{ peft_type: "LOHA", target_modules: ["q_proj"], decompose_both: true }, "decompose_both"],
      [{ peft_type: "LOHA", target_modules: ["nothing_here"] }, "target_modules"],
    ],
    lr: 0.02,
  });
});
