import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { llamaLora, patternCorpus } from "./tiny-llama.test-util.js";
import { Trainer, type TrainerConfig, type TrainResult } from "./trainer.js";

const corpus = (n: number, seed: number) => patternCorpus(n, seed, (r) => 2 + r.int(29));

/** Padded tokens per example over the run (each step's tokens ÷ examples, as the trainer counts them). */
const paddedPerExample = (r: TrainResult) => {
  const t = r.history.steps.reduce((s, x) => s + x.tokensPerSecond / x.examplesPerSecond, 0);
  return t / r.history.steps.length;
};

describe("trainer: groupByLength and length-sorted evaluation", () => {
  const data = corpus(96, 7);
  const cfg: TrainerConfig = { task: "causal-lm", epochs: 2, batchSize: 4, lr: 5e-3, seed: 3, dropout: false };

  test("length-grouped batches carry much less padding, and training still lowers the loss", async () => {
    const plain = await new Trainer(llamaLora(), cfg, data).fit();
    const grouped = await new Trainer(llamaLora(), { ...cfg, groupByLength: true }, data).fit();
    const [pp, pg] = [paddedPerExample(plain), paddedPerExample(grouped)];
    console.log(`# batch width per example: plain ${pp.toFixed(1)} tokens, grouped ${pg.toFixed(1)} (mean length ${(data.reduce((s, e) => s + e.ids.length, 0) / data.length).toFixed(1)})`);
    assert.equal(grouped.steps, plain.steps);
    assert.ok(pg < 0.75 * pp, `grouped ${pg} vs plain ${pp}`);
    const mean = (r: TrainResult, from: number, to: number) => r.history.steps.slice(from, to).reduce((s, x) => s + x.loss, 0) / (to - from);
    const n = grouped.history.steps.length;
    assert.ok(mean(grouped, n - 8, n) < mean(grouped, 0, 8), "the loss went down");
  });

  test("evaluation does not depend on the order of the examples (it batches them by length)", async () => {
    const t = new Trainer(llamaLora(), { ...cfg, epochs: 1, maxSteps: 3 }, data);
    await t.fit();
    const a = await t.evaluate(data);
    const b = await t.evaluate([...data].reverse());
    await t.release();
    assert.ok(Math.abs(a.loss - b.loss) <= 1e-6 * a.loss, `${a.loss} vs ${b.loss}`);
  });
});
