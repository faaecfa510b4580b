import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { loraExportOf } from "../../peft/export-lora.js";
import { type Tensor, toFloat32 } from "../../tensor.js";
import { gradCheckLinear, maxDiff, methodSuite, runLinear } from "../../train/method-suite.test-util.js";
import { exportParity, trainedTiny } from "../../cli/commands/export-lora.test-util.js";
import { tunerFor } from "../registry.js";
import { type SoraConfig, lambdaAt, lambdaStages, parseSoraConfig, soraRanks } from "./index.js";

const t = (shape: number[], data: number[]): Tensor => ({ dtype: "float32", shape, data: Float32Array.from(data) });

describe("SoRA", () => {
  // r 3, in 2, out 2, alpha 6 (scaling 2); gate [0.5, 0, -2]
  const A = [
    [1, -1],
    [0.5, 2],
    [-0.25, 0.75],
  ];
  const B = [
    [1, 0.5, -2],
    [-2, 1, 0.5],
  ];
  const gate = [0.5, 0, -2];
  const W = [
    [0.1, -0.2],
    [0.3, 0.4],
  ];
  const x = [
    [1, 2],
    [-1, 0.5],
  ];
  const raw = { peft_type: "SORA", r: 3, lora_alpha: 6, target_modules: ["m"] };
  const tensors = new Map<string, Tensor>([
    ["m.sora_A", t([3, 2], A.flat())],
    ["m.sora_B", t([2, 3], B.flat())],
    ["m.sora_gate", t([3], gate)],
  ]);

  test("forward = x·Wᵀ + (α/r)·B·diag(g)·A·x, computed by hand", async () => {
    const want = x.flatMap((row) =>
      [0, 1].map((o) => {
        let d = 0;
        for (let k = 0; k < 3; k++) d += B[o]![k]! * gate[k]! * (A[k]![0]! * row[0]! + A[k]![1]! * row[1]!);
        return W[o]![0]! * row[0]! + W[o]![1]! * row[1]! + 2 * d;
      }),
    );
    const got = await runLinear({ raw, module: "m", tensors, weight: t([2, 2], W.flat()), x: t([2, 2], x.flat()) });
    assert.ok(maxDiff(got, want) < 1e-6, `${[...got]} vs ${want}`);
  });

  test("finite-difference gradients of its graph", async () => {
    await gradCheckLinear({ raw, module: "m", tensors: new Map([...tensors, ["m.sora_gate", t([3], [0.5, 0.3, -2])]]), weight: t([2, 2], W.flat()), x: t([2, 2], x.flat()) });
  });

  test("the proximal step is soft-thresholding computed by hand, and a zero gate whose update is below ξ stays zero", () => {
    const tuner = tunerFor("SORA");
    const cfg = parseSoraConfig({ ...raw, sparse_lambda: 0.1 }, "test");
    const prox = tuner.training!.allocator!({ name: "t", tuner, config: cfg, tensors })!;
    // after an optimizer step the gate is [0.35, −0.05, 0.1, −1.2, 0.02, 0] (a zero gate moved by 0.02 < ξ)
    const g = Float32Array.from([0.35, -0.05, 0.1, -1.2, 0.02, 0]);
    prox.afterStep(0, new Map([["m.sora_gate", g]]), new Map());
    const want = [0.35 - 0.1, 0, 0, -1.2 + 0.1, 0, 0];
    assert.ok(maxDiff(g, want) < 1e-7, `${[...g]}`);
    assert.ok(Object.is(g[1], 0) || g[1] === 0);
    // other tensors are not touched
    const a = Float32Array.from([0.05, -0.05]);
    prox.afterStep(1, new Map([["m.sora_A", a]]), new Map());
    assert.deepEqual([...a], [Math.fround(0.05), Math.fround(-0.05)]);
  });

  test("the sparsifying scheduler raises ξ in lambda_num equal stages of total_step, as the official step_lambda", () => {
    const c: SoraConfig = parseSoraConfig({ ...raw, sparse_lambda: 0.001, lambda_schedule: "linear", max_lambda: 0.004, lambda_num: 4, total_step: 10 }, "test");
    assert.deepEqual(lambdaStages(c).map((v) => Number(v.toFixed(6))), [0.001, 0.002, 0.003, 0.004]);
    assert.deepEqual([0, 2, 3, 5, 6, 9, 50].map((s) => Number(lambdaAt(c, s).toFixed(6))), [0.001, 0.001, 0.002, 0.002, 0.003, 0.004, 0.004]);
    const e = parseSoraConfig({ ...raw, sparse_lambda: 0.001, lambda_schedule: "exp_linear", max_lambda: 0.1, lambda_num: 3, total_step: 9 }, "test");
    assert.deepEqual(lambdaStages(e).map((v) => Number(v.toPrecision(6))), [0.001, 0.01, 0.1]);
    assert.throws(() => parseSoraConfig({ ...raw, lambda_schedule: "linear" }, "test"), /max_lambda/);
  });

  test("training sparsifies the gates, zeros stay zero (ξ above the Adam step), and the pruned export keeps the logits through peft forward", async () => {
    const cfg = { peft_type: "SORA", r: 4, lora_alpha: 8, target_modules: ["q_proj", "v_proj"], sparse_lambda: 0.25 };
    const early = await trainedTiny(cfg, 3, 0.02);
    const late = await trainedTiny(cfg, 6, 0.02);
    const zeros = (pm: typeof early.pm) => new Set([...pm.adapter("default").tensors].filter(([k]) => k.endsWith(".sora_gate")).flatMap(([k, v]) => [...toFloat32(v)].flatMap((g, i) => (g === 0 ? [`${k}[${i}]`] : []))));
    const z3 = zeros(early.pm);
    const z6 = zeros(late.pm);
    assert.ok(z3.size > 0, "some gates reach zero in 3 steps");
    for (const k of z3) assert.ok(z6.has(k), `${k} is zero after 3 steps and stays zero`);
    const ranks = soraRanks(late.pm.adapter("default").tensors);
    const e = loraExportOf(late.pm, "default");
    for (const [m, r] of ranks) {
      if (r === 0) assert.ok(!e.tensors.has(`${m}.lora_A.weight`), `${m}: every rank pruned, left out`);
      else assert.equal(e.tensors.get(`${m}.lora_A.weight`)!.shape[0], r, `${m}: exported rank = kept gates`);
    }
    const cfgOut = await exportParity(late.pm);
    const rp = cfgOut.rank_pattern as Record<string, number>;
    assert.ok(Object.values(rp).every((v) => v < 4 || v === cfgOut.r));
    await early.pm.dispose();
    await late.pm.dispose();
  });

  methodSuite({
    method: "sora",
    arch: "llama",
    randomConfig: { peft_type: "SORA", r: 4, lora_alpha: 8, target_modules: ["q_proj", "v_proj"] },
    trainConfig: { peft_type: "SORA", r: 4, lora_alpha: 8, target_modules: ["q_proj", "v_proj", "down_proj"], sparse_lambda: 0.001 },
    badConfigs: [
      [{ peft_type: "SORA", sparse_lambda: -1, target_modules: ["q_proj"] }, "sparse_lambda"],
      [{ peft_type: "SORA", lambda_schedule: "cosine", target_modules: ["q_proj"] }, "lambda_schedule"],
      [{ peft_type: "SORA", lambda_schedule: "linear", target_modules: ["q_proj"] }, "max_lambda"],
      [{ peft_type: "SORA", target_modules: ["nothing_here"] }, "target_modules"],
    ],
    perturb: true,
    lr: 0.02,
  });
});
