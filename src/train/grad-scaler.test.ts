import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { loadModel } from "../models/load.js";
import { PeftModel } from "../peft/peft-model.js";
import type { Tensor } from "../tensor.js";
import { fixturePath } from "../util/paths.js";
import { Rng } from "../util/rng.js";
import { GRAD_SCALER_DEFAULTS, GradScaler, LossScaledStep } from "./grad-scaler.js";
import { TrainStep } from "./step.js";
import { type TokenizedExample, Trainer, type TrainerConfig, collate } from "./trainer.js";

function grads(...values: number[][]): Map<string, Float32Array> {
  return new Map(values.map((v, i) => [`p${i}`, Float32Array.from(v)]));
}

/** Repeated short patterns, learnable by the tiny fixture LMs (as in trainer.test.ts). */
function corpus(n: number, seed: number): TokenizedExample[] {
  const rng = new Rng(seed);
  return Array.from({ length: n }, () => {
    const start = 3 + rng.int(8);
    return { ids: Array.from({ length: 10 }, (_, j) => 3 + ((start + 3 * j) % 40)) };
  });
}

function llamaLora(): PeftModel {
  const raw = { peft_type: "LORA", r: 4, lora_alpha: 8, target_modules: ["q_proj", "v_proj"], lora_dropout: 0, init_lora_weights: "gaussian" };
  return PeftModel.create(loadModel(fixturePath("peft-parity", "llama", "base")), raw, "default", { seed: 3 });
}

describe("GradScaler (PyTorch GradScaler semantics)", () => {
  test("defaults are PyTorch's", () => {
    const s = new GradScaler();
    assert.equal(s.scale, 65536);
    assert.deepEqual({ ...GRAD_SCALER_DEFAULTS }, { initScale: 65536, growthFactor: 2, backoffFactor: 0.5, growthInterval: 2000 });
  });

  test("unscale divides in place and reports non-finite values", () => {
    const s = new GradScaler({ kind: "dynamic", initScale: 1024 });
    const g = grads([1024, -2048], [512]);
    assert.equal(s.unscale(g), true);
    assert.deepEqual([...g.get("p0")!], [1, -2]);
    assert.deepEqual([...g.get("p1")!], [0.5]);
    assert.equal(s.unscale(grads([1, Infinity])), false);
    assert.equal(s.unscale(grads([NaN])), false);
  });

  test("an overflow halves the scale and resets the growth count; growthInterval good steps double it", () => {
    const s = new GradScaler({ kind: "dynamic", initScale: 256, growthInterval: 3 });
    s.update(false);
    s.update(false);
    assert.equal(s.growthTracker, 2);
    assert.equal(s.unscaleAndUpdate(grads([Infinity])), false);
    assert.equal(s.scale, 128);
    assert.equal(s.growthTracker, 0);
    for (let i = 0; i < 3; i++) assert.equal(s.unscaleAndUpdate(grads([1])), true);
    assert.equal(s.scale, 256);
    assert.equal(s.growthTracker, 0);
  });

  test("growth that would overflow float32 keeps the scale", () => {
    const s = new GradScaler({ kind: "dynamic", initScale: 2 ** 127, growthInterval: 1 });
    s.update(false);
    assert.equal(s.scale, 2 ** 127);
  });

  test("static scaling never changes the scale but still reports overflow", () => {
    const s = new GradScaler({ kind: "static", scale: 128 });
    assert.equal(s.unscaleAndUpdate(grads([Infinity])), false);
    assert.equal(s.scale, 128);
    for (let i = 0; i < 5000; i++) s.update(false);
    assert.equal(s.scale, 128);
  });

  test("state round trip", () => {
    const a = new GradScaler({ kind: "dynamic", growthInterval: 10 });
    a.update(true);
    a.update(false);
    const b = new GradScaler({ kind: "dynamic", growthInterval: 10 });
    b.loadStateDict(a.stateDict());
    assert.deepEqual(b.stateDict(), { scale: 32768, growthTracker: 1 });
  });

  test("bad options are ConfigErrors naming the key", () => {
    const bad: [ConstructorParameters<typeof GradScaler>[0], RegExp][] = [
      [{ kind: "dynamic", initScale: 0 }, /initScale/],
      [{ kind: "dynamic", growthFactor: 1 }, /growthFactor/],
      [{ kind: "dynamic", backoffFactor: 1.5 }, /backoffFactor/],
      [{ kind: "dynamic", growthInterval: 0.5 }, /growthInterval/],
      [{ kind: "static", scale: Infinity }, /scale/],
    ];
    for (const [cfg, key] of bad) {
      assert.throws(() => new GradScaler(cfg), (e: Error & { code?: string }) => e.code === "PEFT_ERR_CONFIG" && key.test(e.message));
    }
  });
});

describe("LossScaledStep", () => {
  test("gradients are scale × the unscaled float16 step's, the loss is unscaled", async () => {
    const pm = llamaLora();
    const batch = collate(corpus(4, 1), "causal-lm");
    const plain = await TrainStep.create(pm, { task: "causal-lm", dtype: "float16", dropout: false });
    const scaler = new GradScaler({ kind: "static", scale: 1024 });
    const scaled = await LossScaledStep.create(pm, scaler, { task: "causal-lm", dtype: "float16", dropout: false });
    const params = new Map<string, Tensor>();
    const a = await plain.run(batch, params);
    const b = await scaled.run(batch, params);
    assert.equal(b.loss, a.loss);
    // scaling by a power of two is exact in float16 until a value leaves the normal range
    let worst = 0;
    let norm = 0;
    for (const [n, g] of a.grads) {
      const gs = b.grads.get(n)!;
      for (let i = 0; i < g.length; i++) {
        worst = Math.max(worst, Math.abs(gs[i]! / 1024 - g[i]!));
        norm = Math.max(norm, Math.abs(g[i]!));
      }
    }
    console.log(`# scaled/1024 vs unscaled float16 gradients: max |Δ| ${worst.toExponential(2)} (max |g| ${norm.toExponential(2)})`);
    assert.ok(norm > 0);
    assert.ok(worst <= 1e-3 * norm, `${worst}`);
    await plain.release();
    await scaled.release();
  });
});

describe("Trainer with dtype float16", () => {
  const cfg: TrainerConfig = { task: "causal-lm", epochs: 100, batchSize: 8, lr: 1e-2, seed: 0, schedule: "constant", dropout: false, dtype: "float16" };

  test("a forced overflow skips the optimizer step and halves the scale each time", async () => {
    const pm = llamaLora();
    const before = new Map([...pm.adapter("default").tensors].map(([k, t]) => [k, Float32Array.from(t.data as Float32Array)]));
    // 2⁴⁰ × the loss gradient overflows float16 (max 65504) in the backward pass
    const r = await new Trainer(pm, { ...cfg, maxSteps: 3, lossScaling: { kind: "dynamic", initScale: 2 ** 40 } }, corpus(24, 2)).fit();
    assert.deepEqual(
      r.history.steps.map((s) => [s.lossScale, s.skipped]),
      [
        [2 ** 40, true],
        [2 ** 39, true],
        [2 ** 38, true],
      ],
    );
    for (const [k, t] of pm.adapter("default").tensors) assert.deepEqual(t.data, before.get(k), `${k} unchanged by skipped steps`);
  });

  test("after the overflows the scale settles and training proceeds; growthInterval good steps double it", async () => {
    const pm = llamaLora();
    const r = await new Trainer(pm, { ...cfg, maxSteps: 12, lossScaling: { kind: "dynamic", initScale: 2 ** 26, growthInterval: 4 } }, corpus(32, 2)).fit();
    const steps = r.history.steps;
    const firstGood = steps.findIndex((s) => !s.skipped);
    console.log(`# scales: ${steps.map((s) => `${Math.log2(s.lossScale!)}${s.skipped ? "*" : ""}`).join(" ")} (log2, * = skipped)`);
    assert.ok(firstGood > 0, "2²⁶ overflowed at first");
    for (let i = 1; i <= firstGood; i++) assert.equal(steps[i]!.lossScale, steps[i - 1]!.lossScale! / 2);
    // four good steps at one scale, then twice that scale (which may overflow again and back off)
    const good = steps.slice(firstGood);
    assert.ok(good.slice(0, 4).every((s) => !s.skipped && s.lossScale === good[0]!.lossScale));
    assert.equal(good[4]!.lossScale, good[0]!.lossScale! * 2);
    if (good[4]!.skipped) assert.equal(good[5]!.lossScale, good[0]!.lossScale);
    assert.ok(steps.at(-1)!.loss < steps[firstGood]!.loss, "the loss went down after the skipped steps");
  });
});
