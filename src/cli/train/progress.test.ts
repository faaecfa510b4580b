import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { createContext } from "../context.js";
import { createProgress, formatEval, formatSeconds } from "./progress.js";

function capture() {
  const out = { stdout: "", stderr: "" };
  const ctx = createContext({ stdout: (t) => void (out.stdout += t), stderr: (t) => void (out.stderr += t), setExitCode: () => undefined }, {});
  return { ctx, out };
}

const step = (s: number) => ({ step: s, totalSteps: 10, epoch: s / 5, loss: 1 / s, examplesPerSecond: 40 });

describe("training progress", () => {
  test("plain mode: a line every N steps and every evaluation, on stderr only", () => {
    const { ctx, out } = capture();
    const p = createProgress(ctx, { tty: false, every: 5 });
    p.start(10, 0);
    for (let s = 1; s <= 10; s++) p.step(step(s));
    p.evaluation({ step: 10, epoch: 2, loss: 0.25, accuracy: 0.9, f1: 0.875 });
    p.stop();
    assert.equal(out.stdout, "");
    const lines = out.stderr.trim().split("\n");
    assert.deepEqual(lines[0], "train: 10 steps");
    assert.match(lines[1]!, /^step 5\/10 epoch 1\.00 loss 0\.2000 40\.0 sent\/s ETA \d+s$/);
    assert.match(lines[2]!, /^step 10\/10 epoch 2\.00 loss 0\.1000/);
    assert.equal(lines[3], "eval step 10 (epoch 2.00): loss 0.2500 accuracy 0.9000 f1 0.8750");
    assert.equal(lines.length, 4);
  });

  test("terminal mode: a cli-progress bar with step, loss, throughput and ETA", () => {
    const { ctx, out } = capture();
    const p = createProgress(ctx, { tty: true });
    p.start(10, 0);
    for (let s = 1; s <= 10; s++) p.step(step(s));
    p.note("a note");
    p.stop();
    assert.match(out.stderr, /train \[[^\]]*\] 10\/10 steps \| epoch 2\.00 \| loss \d\.\d{4} \| 40\.0 sent\/s \| ETA/);
    assert.match(out.stderr, /a note/);
    assert.equal(out.stdout, "");
  });

  test("formatting", () => {
    assert.equal(formatSeconds(42.4), "42s");
    assert.equal(formatSeconds(75), "1m15s");
    assert.equal(formatSeconds(3 * 3600 + 120), "3h02m");
    assert.equal(formatEval({ step: 3, epoch: 0.5, loss: 2, perplexity: Math.exp(2) }), "eval step 3 (epoch 0.50): loss 2.0000 perplexity 7.389");
  });
});
