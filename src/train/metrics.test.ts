import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { ConfigError, ShapeMismatchError } from "../errors.js";
import { accuracy, argmaxRows, classificationReport, confusionMatrix, macroF1, perClassScores, perplexity } from "./metrics.js";

const labels = [0, 0, 0, 1, 1, 2, 2, 2, 2];
const preds = [0, 1, 0, 1, 2, 2, 2, 0, 1];

function near(a: number, b: number, what: string): void {
  assert.ok(Math.abs(a - b) < 1e-12, `${what}: ${a} vs ${b}`);
}

describe("classification metrics", () => {
  test("confusion matrix rows are references, columns predictions", () => {
    assert.deepEqual(confusionMatrix(preds, labels), [
      [2, 1, 0],
      [0, 1, 1],
      [1, 1, 2],
    ]);
    assert.deepEqual(confusionMatrix([1], [0], { numLabels: 3 }), [
      [0, 1, 0],
      [0, 0, 0],
      [0, 0, 0],
    ]);
  });

  test("accuracy, per-class and macro F1 by hand", () => {
    near(accuracy(preds, labels), 5 / 9, "accuracy");
    const pc = perClassScores(preds, labels);
    // class 0: tp 2, predicted 3, support 3; class 1: tp 1, predicted 3, support 2; class 2: tp 2, predicted 3, support 4.
    const expected = [
      { p: 2 / 3, r: 2 / 3, support: 3 },
      { p: 1 / 3, r: 1 / 2, support: 2 },
      { p: 2 / 3, r: 2 / 4, support: 4 },
    ];
    pc.forEach((c, i) => {
      const e = expected[i]!;
      assert.equal(c.label, i);
      near(c.precision, e.p, `precision ${i}`);
      near(c.recall, e.r, `recall ${i}`);
      near(c.f1, (2 * e.p * e.r) / (e.p + e.r), `f1 ${i}`);
      assert.equal(c.support, e.support);
    });
    const macro = (2 / 3 + 0.4 + 4 / 7) / 3;
    near(macroF1(preds, labels), macro, "macro F1");
    const report = classificationReport(preds, labels);
    near(report.accuracy, 5 / 9, "report accuracy");
    near(report.macroF1, macro, "report macro");
    assert.deepEqual(report.perClass, pc);
  });

  test("macro F1 averages over classes present in either list (sklearn), or all with numLabels", () => {
    // Class 1 only predicted: F1 0 for it; class 0: tp 1, fp 0, fn 1 → 2/3.
    near(macroF1([0, 1], [0, 0]), (2 / 3 + 0) / 2, "union of labels");
    // A class absent from both lists is left out…
    near(macroF1([0, 2], [0, 2]), 1, "absent class 1 ignored");
    // …unless numLabels asks for all classes (zero_division = 0).
    near(macroF1([0, 2], [0, 2], { numLabels: 3 }), 2 / 3, "numLabels");
    assert.deepEqual(
      perClassScores([0, 2], [0, 2]).map((c) => c.label),
      [0, 2],
    );
  });

  test("bad input is rejected", () => {
    assert.throws(() => accuracy([0, 1], [0]), ShapeMismatchError);
    assert.throws(() => accuracy([], []), ConfigError);
    assert.throws(() => macroF1([0, 3], [0, 1], { numLabels: 2 }), ConfigError);
    assert.throws(() => confusionMatrix([0.5], [0]), ConfigError);
  });
});

describe("perplexity and argmax", () => {
  test("perplexity = exp(mean loss)", () => {
    near(perplexity(0), 1, "zero loss");
    assert.ok(Math.abs(perplexity(Math.log(50257)) / 50257 - 1) < 1e-12, "uniform over GPT-2 vocab");
    near(perplexity(2), Math.E * Math.E, "e^2");
    assert.equal(perplexity(1000), Infinity);
    assert.ok(Number.isNaN(perplexity(NaN)));
  });

  test("argmaxRows picks the first maximum per row", () => {
    assert.deepEqual(Array.from(argmaxRows(Float32Array.from([0.1, 0.9, -1, 2, 2, 0, NaN, 5, 1]), 3)), [1, 0, 0]);
    assert.deepEqual(Array.from(argmaxRows([1, 3, 3, 1], 2)), [1, 0]);
    assert.throws(() => argmaxRows([1, 2, 3], 2), ShapeMismatchError);
  });
});
