import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { PeftModel } from "../../peft/peft-model.js";
import type { Tensor } from "../../tensor.js";
import { fixtureModel, gradCheckLinear, maxDiff, methodSuite, runLinear } from "../../train/method-suite.test-util.js";
import { patternCorpus } from "../../train/tiny-llama.test-util.js";
import { Trainer } from "../../train/trainer.js";
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

  test("coft: each block's skew matrix is projected onto the ball of radius eps/√rows before use (by hand); merging projects too", async () => {
    // rows 2, eps 0.5: radius 0.5/√2; ‖Q_1‖_F = √2·0.3 ≈ 0.42 > 0.354 is scaled, ‖Q_2‖_F = √2·0.1 stays
    const vec = [0.3, 0.1];
    const radius = 0.5 / Math.sqrt(2);
    const projected = [(0.3 * radius) / (Math.sqrt(2) * 0.3), 0.1];
    const weight = t([3, 4], W.flat());
    const xs = t([2, 4], x.flat());
    const got = await runLinear({ raw: { ...raw, coft: true, eps: 0.5 }, module: "m", tensors: new Map([["m.oft_R.weight", t([2, 1], vec)]]), weight, x: xs });
    const want = await runLinear({ raw, module: "m", tensors: new Map([["m.oft_R.weight", t([2, 1], projected)]]), weight, x: xs });
    assert.ok(maxDiff(got, want) < 1e-6, "projected forward");
    const unprojected = await runLinear({ raw, module: "m", tensors: new Map([["m.oft_R.weight", t([2, 1], vec)]]), weight, x: xs });
    assert.ok(maxDiff(got, unprojected) > 1e-3, "the projection changes the output");
  });

  test("coft trains with the projection written back after every step: every block stays within eps/√rows", async () => {
    const model = fixtureModel("llama");
    const eps = 0.5;
    const pm = PeftModel.create(model, { peft_type: "OFT", r: 0, oft_block_size: 8, coft: true, eps, target_modules: ["q_proj", "v_proj"] }, "default", { seed: 2 });
    const fit = await new Trainer(pm, { task: "causal-lm", epochs: 100, maxSteps: 6, batchSize: 8, lr: 0.05, seed: 0, schedule: "constant", dropout: false }, patternCorpus(8, 2, () => 6)).fit();
    const losses = fit.history.steps.map((s) => s.loss);
    assert.ok(losses.at(-1)! < losses[0]!, `the loss fell: ${losses.join(", ")}`);
    let atRadius = 0;
    for (const [k, v] of pm.adapter("default").tensors) {
      const rows = v.shape[0]!;
      const n = v.shape[1]!;
      const data = v.data as Float32Array;
      for (let b = 0; b < rows; b++) {
        const norm = Math.sqrt(2 * data.subarray(b * n, (b + 1) * n).reduce((s, e) => s + e * e, 0));
        assert.ok(norm <= (eps / Math.sqrt(rows)) * (1 + 1e-5), `${k} row ${b}: ‖Q‖ ${norm}`);
        if (norm > (eps / Math.sqrt(rows)) * 0.999) atRadius++;
      }
    }
    assert.ok(atRadius > 0, "the constraint is active (lr 0.05 pushes the blocks to the sphere)");
    // merge == forward with the projection
    const ids: Tensor<"int64"> = { dtype: "int64", shape: [1, 5], data: BigInt64Array.from([3, 9, 4, 20, 7], BigInt) };
    const y = await pm.forward({ inputIds: ids });
    const merged = new PeftModel(pm.mergeAndUnload());
    assert.ok(maxDiff((await merged.forward({ inputIds: ids })).data as Float32Array, y.data as Float32Array) < 1e-4);
    await merged.dispose();
    await pm.dispose();
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
      [{ peft_type: "OFT", oft_block_size: 8, use_cayley_neumann: false, target_modules: ["q_proj"] }, "use_cayley_neumann"],
      [{ peft_type: "OFT", oft_block_size: 8, target_modules: ["nothing_here"] }, "target_modules"],
    ],
    lr: 0.02,
  });
});
