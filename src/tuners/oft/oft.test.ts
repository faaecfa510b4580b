import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { PeftModel } from "../../peft/peft-model.js";
import type { Tensor } from "../../tensor.js";
import { fixtureModel, gradCheckLinear, maxDiff, methodSuite, runLinear } from "../../train/method-suite.test-util.js";
import { adjustOftParameter } from "./index.js";

const t = (shape: number[], data: number[]): Tensor => ({ dtype: "float32", shape, data: Float32Array.from(data) });

type M = number[][];
const mm = (a: M, b: M): M => a.map((row) => b[0]!.map((_, j) => row.reduce((s, v, k) => s + v * b[k]![j]!, 0)));
const add = (a: M, b: M, s = 1): M => a.map((row, i) => row.map((v, j) => v + s * b[i]![j]!));

describe("OFT", () => {
  // in 4 = 2 blocks of 2 (one free entry each), out 3
  const q = [0.3, -0.6];
  const W = [
    [0.1, 0.2, -0.3, 0.4],
    [0.5, -0.1, 0.2, 0.3],
    [-0.2, 0.6, 0.1, -0.5],
  ];
  const x = [
    [1, -1, 2, 0.5],
    [0.25, 3, -1, 1],
  ];
  const tensors = new Map<string, Tensor>([["m.oft_R.weight", t([2, 1], q)]]);
  const raw = { peft_type: "OFT", r: 0, oft_block_size: 2, target_modules: ["m"] };

  test("forward = (x·diag(R_1, R_2))·Wᵀ with R_i = I + 2Q + 2Q² + 2Q³ + Q⁴ (Cayley–Neumann, 5 terms), computed by hand", async () => {
    const R = q.map((v) => {
      const Q: M = [
        [0, v],
        [-v, 0],
      ];
      const Q2 = mm(Q, Q);
      const Q3 = mm(Q2, Q);
      const Q4 = mm(Q3, Q);
      return add(add(add(add([[1, 0], [0, 1]], Q, 2), Q2, 2), Q3, 2), Q4, 1);
    });
    const want = x.flatMap((row) => {
      const rot = [0, 1].flatMap((b) => [0, 1].map((c) => row[2 * b]! * R[b]![0]![c]! + row[2 * b + 1]! * R[b]![1]![c]!));
      return W.map((w) => w.reduce((s, v, i) => s + v * rot[i]!, 0));
    });
    const got = await runLinear({ raw, module: "m", tensors, weight: t([3, 4], W.flat()), x: t([2, 4], x.flat()) });
    assert.ok(maxDiff(got, want) < 1e-6, `${[...got]} vs ${want}`);
  });

  test("finite-difference gradients of its graph", async () => {
    await gradCheckLinear({ raw, module: "m", tensors, weight: t([3, 4], W.flat()), x: t([2, 4], x.flat()) });
  });

  test("block layout as PEFT derives it: r or oft_block_size, adjusted to a divisor; block_share stores one row", () => {
    assert.equal(adjustOftParameter(32, 5), 4);
    assert.equal(adjustOftParameter(32, 7), 8);
    assert.equal(adjustOftParameter(32, 6), 4, "ties go to the lower divisor");
    assert.equal(adjustOftParameter(32, 40), 32);
    const model = fixtureModel("llama");
    const a = PeftModel.create(model, { peft_type: "OFT", oft_block_size: 8, target_modules: ["q_proj"] }).adapter("default").tensors;
    assert.deepEqual(a.get("model.layers.0.self_attn.q_proj.oft_R.weight")!.shape, [4, 28]);
    const b = PeftModel.create(model, { peft_type: "OFT", r: 2, oft_block_size: 0, block_share: true, target_modules: ["q_proj"] }).adapter("default").tensors;
    assert.deepEqual(b.get("model.layers.0.self_attn.q_proj.oft_R.weight")!.shape, [1, 120]);
    assert.throws(() => PeftModel.create(fixtureModel("gpt2"), { peft_type: "OFT", oft_block_size: 8, target_modules: ["c_attn"] }), /target_modules.*Conv1D/u);
  });

  methodSuite({
    method: "oft",
    arch: "llama",
    randomConfig: { peft_type: "OFT", oft_block_size: 8, target_modules: ["q_proj", "v_proj", "down_proj"], init_weights: false },
    trainConfig: { peft_type: "OFT", oft_block_size: 8, target_modules: ["q_proj", "v_proj", "down_proj"] },
    badConfigs: [
      [{ peft_type: "OFT", r: 4, oft_block_size: 8, target_modules: ["q_proj"] }, "oft_block_size"],
      [{ peft_type: "OFT", oft_block_size: 8, coft: true, target_modules: ["q_proj"] }, "coft"],
      [{ peft_type: "OFT", oft_block_size: 8, use_cayley_neumann: false, target_modules: ["q_proj"] }, "use_cayley_neumann"],
      [{ peft_type: "OFT", oft_block_size: 8, target_modules: ["nothing_here"] }, "target_modules"],
    ],
    lr: 0.02,
  });
});
