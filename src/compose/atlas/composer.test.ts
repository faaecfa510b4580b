import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { ConfigError } from "../../errors.js";
import { mapSource } from "../../models/context.js";
import { forwardLogits } from "../../models/forward.js";
import type { Tensor } from "../../tensor.js";
import { applyTaskVectors } from "../task-vector.js";
import { AtlasComposer } from "./composer.js";
import { ATLAS_OUTPUTS } from "./graph.js";
import { coefficientIndex } from "./layout.js";
import { randomSequences, randomTaskVector, tinyModel } from "./tiny-model.test-util.js";

const model = tinyModel(1, 3);
const Q0 = "encoder.layer.0.attention.self.query.weight";
const V1 = "encoder.layer.1.attention.self.value.weight";
const FF = "encoder.layer.1.intermediate.dense.weight";
const LN = "encoder.layer.0.attention.layer_norm.weight";
const BIAS = "pooler.dense.bias";
const EMB = "embeddings.word_embeddings.weight";
const tvA = randomTaskVector(model, "a", [Q0, V1, FF, LN, EMB], 11);
const tvB = randomTaskVector(model, "b", [Q0, FF, BIAS], 12);
const examples = randomSequences(6, 5).map((ids, i) => ({ ids, label: i % 3 }));

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

describe("aTLAS composition graph", () => {
  for (const mode of ["anisotropic", "isotropic"] as const) {
    for (const objective of ["cross-entropy", "entropy"] as const) {
      test(`${mode}, ${objective}: ∂loss/∂λ from the graph equals float64 central differences`, async (t) => {
        const c = AtlasComposer.create(model, [tvA, tvB], { mode, dtype: "float64" });
        try {
          const coef = Float64Array.from(c.coefficients, (_, i) => 0.3 * Math.sin(i + 1));
          const { grad } = await c.lossAndGradient(examples, objective, { coefficients: coef });
          const lossName = objective === "entropy" ? ATLAS_OUTPUTS.lossEntropy : ATLAS_OUTPUTS.lossCe;
          const lossAt = async (x: Float64Array) => Number((await c.run(examples, [lossName], { coefficients: x }))[lossName]!.data[0]);
          const eps = 1e-6;
          let worst = 0;
          let checked = 0;
          for (let i = 0; i < coef.length; i++) {
            const up = Float64Array.from(coef);
            const down = Float64Array.from(coef);
            up[i] += eps;
            down[i] -= eps;
            const num = ((await lossAt(up)) - (await lossAt(down))) / (2 * eps);
            worst = Math.max(worst, Math.abs(num - grad[i]!) / Math.max(1e-3, Math.abs(num)));
            checked++;
          }
          t.diagnostic(`${checked} coefficients, worst relative error ${worst.toExponential(2)}`);
          assert.ok(worst < 1e-5, `worst ${worst}`);
          // gradients are real: pairs that exist move the loss, absent pairs (no τ) have exactly 0
          assert.ok(grad.some((g) => Math.abs(g) > 1e-4));
          if (mode === "anisotropic") {
            const b = c.layout.blocks.indexOf(BIAS);
            assert.equal(grad[coefficientIndex(c.layout, 0, b)], 0, "task vector a has no pooler bias block");
          }
        } finally {
          await c.release();
        }
      });
    }
  }

  test("isotropic with λ fixed is task arithmetic: logits and weights equal θ0 + Σ λ_t τ_t", async () => {
    const c = AtlasComposer.create(model, [tvA, tvB], { mode: "isotropic" });
    c.coefficients.set([0.3, -0.7]);
    try {
      const base = new Map(model.weights.keys().map((k) => [k, model.weights.get(k)]));
      const arithmetic = applyTaskVectors(base, [tvA.blocks, tvB.blocks], [0.3, -0.7]);
      const composed = c.composedWeights();
      assert.deepEqual([...composed.keys()].sort(), [Q0, V1, FF, LN, EMB, BIAS].sort());
      for (const [k, v] of composed) assert.ok(maxAbsDiff(v.data as Float32Array, arithmetic.get(k)!.data as Float32Array) <= 1e-6, k);
      const out = await c.run(examples, [ATLAS_OUTPUTS.logits]);
      const batch = out[ATLAS_OUTPUTS.logits]!;
      // reference: the plain model graph on the task-arithmetic weights, one row at a time (no padding)
      for (let i = 0; i < examples.length; i++) {
        const ids = examples[i]!.ids;
        const ref = await forwardLogits(
          { ...model, weights: mapSource(arithmetic) },
          { dtype: "int64", shape: [1, ids.length], data: BigInt64Array.from(ids, BigInt) },
          { dtype: "int64", shape: [1, ids.length], data: new BigInt64Array(ids.length).fill(1n) },
        );
        const row = (batch.data as Float32Array).subarray(i * 3, i * 3 + 3);
        assert.ok(maxAbsDiff(row, ref.data as Float32Array) <= 1e-5, `row ${i}`);
      }
      // and λ matters: at λ = 0 the logits are different
      c.coefficients.fill(0);
      const zero = (await c.run(examples, [ATLAS_OUTPUTS.logits]))[ATLAS_OUTPUTS.logits]!;
      assert.ok(maxAbsDiff(zero.data as Float32Array, batch.data as Float32Array) > 1e-3);
    } finally {
      await c.release();
    }
  });

  test("heads fed at run time: one graph serves tasks with different label counts", async () => {
    const c = AtlasComposer.create(model, [tvA], { fedParams: ["classifier.weight", "classifier.bias"] });
    try {
      const head = (n: number, v: number): Map<string, Tensor> =>
        new Map<string, Tensor>([
          ["classifier.weight", { dtype: "float32", shape: [n, 16], data: Float32Array.from({ length: n * 16 }, (_, i) => Math.cos(i * v)) }],
          ["classifier.bias", { dtype: "float32", shape: [n], data: new Float32Array(n) }],
        ]);
      // the model's head has 3 labels: a 2-label head is padded with a masked class
      const two = (await c.run(examples, [ATLAS_OUTPUTS.logits], { head: head(2, 0.3) }))[ATLAS_OUTPUTS.logits]!;
      const three = (await c.run(examples, [ATLAS_OUTPUTS.logits], { head: head(3, 0.3) }))[ATLAS_OUTPUTS.logits]!;
      assert.deepEqual(two.shape, [6, 3]);
      for (let i = 0; i < 6; i++) {
        const row = (two.data as Float32Array).subarray(3 * i, 3 * i + 3);
        assert.ok(row[2]! < -1e8, "padded class is masked");
        // the real classes' logits are those of the same head without padding
        assert.ok(maxAbsDiff(row.subarray(0, 2), (three.data as Float32Array).subarray(3 * i, 3 * i + 2)) <= 1e-6);
      }
      const ev = await c.evaluate(examples.map((e) => ({ ids: e.ids, label: e.label % 2 })), { head: head(2, 0.3) });
      assert.ok(ev.predictions.every((p) => p < 2));
      assert.ok(Number.isFinite(ev.entropy) && ev.entropy <= Math.log(2) + 1e-6, `entropy ${ev.entropy} over 2 real classes`);
      await assert.rejects(() => c.run(examples, [ATLAS_OUTPUTS.logits]), ConfigError);
      await assert.rejects(() => c.run(examples, [ATLAS_OUTPUTS.logits], { head: head(5, 0.7) }), /at most 3 labels/);
    } finally {
      await c.release();
    }
  });

  test("bad inputs are typed errors", () => {
    assert.throws(() => AtlasComposer.create(model, [tvA, { ...tvB, name: "a" }]), /unique/);
    assert.throws(() => AtlasComposer.create(model, [randomTaskVector(model, "x", [Q0], 1), { name: "y", ref: { kind: "memory" }, blocks: new Map([["nope.weight", new Float32Array(3)]]) }]), ConfigError);
    assert.throws(() => AtlasComposer.create(model, [{ name: "z", ref: { kind: "memory" }, blocks: new Map([[Q0, new Float32Array(3)]]) }]), /shape mismatch/);
    assert.throws(() => AtlasComposer.create(model, [tvA], { init: [1, 2] }), ConfigError);
  });
});
