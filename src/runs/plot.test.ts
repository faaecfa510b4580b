import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { curveData, mergeHistory, movingAverage, type RunHistory } from "./history.js";
import { curvesSpec, renderCurves } from "./plot.js";

function history(): RunHistory {
  const h: RunHistory = { steps: [], evals: [] };
  for (let s = 1; s <= 30; s++) mergeHistory(h, { steps: [{ step: s, epoch: s / 10, loss: 1 / s, lr: 1e-3 }], evals: [] });
  for (const s of [10, 20, 30]) mergeHistory(h, { steps: [], evals: [{ step: s, epoch: s / 10, loss: 0.5 - s / 100, accuracy: 0.6 + s / 100, f1: 0.55 + s / 100 }] });
  return h;
}

describe("training curves", () => {
  test("history: a resumed run replaces the entries after its checkpoint", () => {
    const h = history();
    mergeHistory(h, { steps: [{ step: 15, epoch: 1.5, loss: 9, lr: 1e-3 }], evals: [] });
    assert.deepEqual(h.steps.map((s) => s.step), [...Array.from({ length: 14 }, (_, i) => i + 1), 15]);
    assert.equal(h.steps.at(-1)!.loss, 9);
    assert.deepEqual(h.evals.map((e) => e.step), [10]);
  });

  test("series: train and validation loss, accuracy and F1 (classification) or perplexity (LM)", () => {
    const d = curveData(history(), "seq-cls", "t");
    assert.equal(d.loss.filter((p) => p.series === "train loss").length, 30);
    const long: RunHistory = { steps: Array.from({ length: 200 }, (_, i) => ({ step: i + 1, epoch: 1, loss: (i * 7919) % 13, lr: 1 })), evals: [] };
    const smooth = curveData(long, "seq-cls", "t").loss.filter((p) => p.series === "train loss (smoothed)");
    assert.equal(smooth.length, 200);
    const raw = long.steps.map((x) => x.loss);
    const want = raw.slice(98, 103).reduce((a, b) => a + b) / 5; // window 200 / 40 = 5, centred on index 100
    assert.ok(Math.abs(smooth[100]!.value - want) < 1e-12, `${smooth[100]!.value} vs ${want}`);
    assert.deepEqual(d.loss.filter((p) => p.series === "validation loss").map((p) => p.step), [10, 20, 30]);
    assert.deepEqual([...new Set(d.metrics.map((p) => p.series))], ["accuracy", "macro F1"]);
    const lm = curveData({ steps: [], evals: [{ step: 5, epoch: 1, loss: 2, perplexity: Math.exp(2) }] }, "causal-lm", "t");
    assert.deepEqual(lm.metrics, [{ step: 5, value: Math.exp(2), series: "perplexity" }]);
    const spec = curvesSpec(d) as { vconcat: unknown[] };
    assert.equal(spec.vconcat.length, 2);
  });

  test("movingAverage is centred and shrinks at the ends", () => {
    assert.deepEqual(movingAverage([1, 2, 3, 4, 5], 3), [1.5, 2, 3, 4, 4.5]);
    assert.deepEqual(movingAverage([1, 2, 3], 1), [1, 2, 3]);
  });

  test("renders a valid SVG (with the series names) and PNG", async () => {
    const { svg, png } = await renderCurves(curveData(history(), "seq-cls", "LORA on test · seed 1"));
    assert.match(svg, /^<svg[^>]*xmlns="http:\/\/www.w3.org\/2000\/svg"/);
    assert.ok(svg.trimEnd().endsWith("</svg>"));
    for (const s of ["train loss", "validation loss", "accuracy", "macro F1", "LORA on test · seed 1"]) assert.ok(svg.includes(s), s);
    const b = Buffer.from(png);
    assert.deepEqual([...b.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
    assert.equal(b.subarray(12, 16).toString("ascii"), "IHDR");
    const w = b.readUInt32BE(16);
    const h = b.readUInt32BE(20);
    const m = /<svg[^>]*width="(\d+(?:\.\d+)?)"[^>]*height="(\d+(?:\.\d+)?)"/.exec(svg)!;
    assert.equal(w, Math.round(2 * Number(m[1])), "PNG is the SVG at 2×");
    assert.equal(h, Math.round(2 * Number(m[2])));
  });
});
