import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { Tensor } from "../../tensor.js";
import { gradCheckLinear, maxDiff, methodSuite, runLinear } from "../../train/method-suite.test-util.js";
import { butterflyPerm } from "./index.js";

const t = (shape: number[], data: number[]): Tensor => ({ dtype: "float32", shape, data: Float32Array.from(data) });

/** Row-major n×n helpers for the hand reference. */
const mm = (a: number[][], b: number[][]) => a.map((row) => b[0]!.map((_, j) => row.reduce((s, v, k) => s + v * b[k]![j]!, 0)));
const tr = (a: number[][]) => a[0]!.map((_, j) => a.map((row) => row[j]!));
/** Cayley of a 2×2 block R: S = (R − Rᵀ)/2 = [[0, σ], [−σ, 0]], Q = (I + S)⁻¹(I − S) = [[1 − σ², −2σ], [2σ, 1 − σ²]]/(1 + σ²). */
const cayley2 = (R: number[]) => {
  const sg = (R[1]! - R[2]!) / 2;
  const f = 1 / (1 + sg * sg);
  return [
    [(1 - sg * sg) * f, -2 * sg * f],
    [2 * sg * f, (1 - sg * sg) * f],
  ];
};
function blockDiag(blocks: number[][][]): number[][] {
  const n = blocks.length * 2;
  const M = Array.from({ length: n }, () => new Array<number>(n).fill(0));
  blocks.forEach((b, i) => b.forEach((row, p) => row.forEach((v, q) => (M[2 * i + p]![2 * i + q] = v))));
  return M;
}

describe("BOFT", () => {
  test("PEFT's block-butterfly permutation (by hand from block_butterfly_perm: 8 features, 2 blocks, r 1)", () => {
    assert.deepEqual([...butterflyPerm(8, 4, 1, 1)], [0, 1, 2, 3, 4, 5, 6, 7]);
    assert.deepEqual([...butterflyPerm(8, 2, 1, 1)], [0, 2, 1, 3, 4, 6, 5, 7]);
    assert.deepEqual([...butterflyPerm(8, 2, 1, 0)], [0, 1, 2, 3, 4, 5, 6, 7], "no butterfly factor: identity");
  });

  // in 8, out 3, block size 2 (4 blocks), two butterfly factors
  const inn = 8;
  const R = Array.from({ length: 2 * 4 }, (_, b) => [0.3 * b - 0.5, 0.7 - 0.2 * b, -0.4 + 0.1 * b, 0.25 * b]);
  const s = [1.5, -0.5, 0.75];
  const W = Array.from({ length: 3 }, (_, o) => Array.from({ length: inn }, (_, i) => Math.sin(o * 8 + i) / 2));
  const bias = [0.1, -0.2, 0.3];
  const x = [Array.from({ length: inn }, (_, i) => i / 4 - 1), Array.from({ length: inn }, (_, i) => Math.cos(i))];
  const raw = { peft_type: "BOFT", boft_block_size: 2, boft_n_butterfly_factor: 2, target_modules: ["m"] };
  const tensors = new Map([
    ["m.boft_R", t([2, 4, 2, 2], R.flat())],
    ["m.boft_s", t([3, 1], s)],
  ]);

  test("forward = s ⊙ (W·(x·M)) + bias with M = P₁·BD₁·P₁ᵀ·BD₀ (explicit matrices)", async () => {
    const perm = [0, 2, 1, 3, 4, 6, 5, 7];
    const P = perm.map((p) => Array.from({ length: inn }, (_, j) => (j === p ? 1 : 0)));
    const BD0 = blockDiag(R.slice(0, 4).map(cayley2));
    const BD1 = blockDiag(R.slice(4).map(cayley2));
    const M = mm(mm(mm(P, BD1), tr(P)), BD0);
    const want = mm(x, M).flatMap((xr) => W.map((w, o) => s[o]! * w.reduce((acc, v, i) => acc + v * xr[i]!, 0) + bias[o]!));
    const got = await runLinear({ raw, module: "m", tensors, weight: t([3, inn], W.flat()), bias: t([3], bias), x: t([2, inn], x.flat()) });
    assert.ok(maxDiff(got, want) < 1e-6, `${[...got]} vs ${want}`);
  });

  test("finite-difference gradients of its graph (the Gauss–Jordan Cayley transform included)", async () => {
    await gradCheckLinear({ raw, module: "m", tensors, weight: t([3, inn], W.flat()), x: t([2, inn], x.flat()) });
  });

  methodSuite({
    method: "boft",
    arch: "llama",
    randomConfig: { peft_type: "BOFT", boft_block_size: 4, boft_n_butterfly_factor: 2, target_modules: ["q_proj", "v_proj"], init_weights: false },
    trainConfig: { peft_type: "BOFT", boft_block_size: 4, target_modules: ["q_proj", "v_proj", "down_proj"] },
    badConfigs: [
      [{ peft_type: "BOFT", boft_block_size: 0, boft_block_num: 0, target_modules: ["q_proj"] }, "boft_block_size"],
      [{ peft_type: "BOFT", boft_block_size: 4, boft_block_num: 8, target_modules: ["q_proj"] }, "boft_block_num"],
      [{ peft_type: "BOFT", boft_block_size: 5, target_modules: ["q_proj"] }, "boft_block_size"],
      [{ peft_type: "BOFT", boft_block_size: 4, boft_n_butterfly_factor: 0, target_modules: ["q_proj"] }, "boft_n_butterfly_factor"],
      [{ peft_type: "BOFT", bias: "lora_only", target_modules: ["q_proj"] }, "bias"],
    ],
    lr: 0.05,
  });
});
