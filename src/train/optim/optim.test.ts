import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { ConfigError, MissingTensorError, ShapeMismatchError } from "../../errors.js";
import { AdamW } from "./adamw.js";
import { clipGradNorm, gradNorm } from "./clip.js";
import { excludeFromWeightDecay, isNoDecayParamName } from "./decay.js";
import { Sgd } from "./sgd.js";
import type { NamedParam } from "./types.js";

/** |a − b| within float32 rounding of a few ops. */
function close(actual: number, expected: number, what: string, tol = 1e-6): void {
  assert.ok(Math.abs(actual - expected) <= tol * Math.max(1, Math.abs(expected)), `${what}: got ${actual}, expected ${expected}`);
}

interface AdamRef {
  lr: number;
  b1: number;
  b2: number;
  eps: number;
  wd: number;
  amsgrad: boolean;
}

/** Independent scalar AdamW, written from the torch.optim.AdamW docs, in float64. */
function adamwReference(p0: number, grads: number[], h: AdamRef): { p: number[]; m: number; v: number } {
  let p = p0;
  let m = 0;
  let v = 0;
  let vMax = 0;
  const ps: number[] = [];
  grads.forEach((g, k) => {
    const t = k + 1;
    p -= h.lr * h.wd * p;
    m = h.b1 * m + (1 - h.b1) * g;
    v = h.b2 * v + (1 - h.b2) * g * g;
    vMax = Math.max(vMax, v);
    const mHat = m / (1 - h.b1 ** t);
    const vHatSqrt = Math.sqrt(h.amsgrad ? vMax : v) / Math.sqrt(1 - h.b2 ** t);
    p -= (h.lr * mHat) / (vHatSqrt + h.eps);
    ps.push(p);
  });
  return { p: ps, m, v };
}

function param(name: string, values: number[], weightDecay?: number): NamedParam {
  return weightDecay === undefined ? { name, data: Float32Array.from(values) } : { name, data: Float32Array.from(values), weightDecay };
}

describe("AdamW", () => {
  test("defaults are PyTorch's", () => {
    const opt = new AdamW([param("w", [1])]);
    assert.deepEqual([opt.lr, opt.beta1, opt.beta2, opt.eps, opt.weightDecay, opt.amsgrad], [1e-3, 0.9, 0.999, 1e-8, 1e-2, false]);
  });

  test("first step written out: p·(1 − lr·wd) − lr·g/(|g| + eps)", () => {
    const opt = new AdamW([param("w", [0.5, -1.5])], { lr: 0.1, weightDecay: 0.1 });
    opt.step([Float32Array.from([0.2, -0.3])]);
    // m̂ = g and v̂ = g² after one step, so the update is lr·g/(|g| + eps).
    close(opt.params[0]!.data[0]!, 0.5 * 0.99 - (0.1 * 0.2) / (0.2 + 1e-8), "p[0]");
    close(opt.params[0]!.data[1]!, -1.5 * 0.99 + (0.1 * 0.3) / (0.3 + 1e-8), "p[1]");
    const st = opt.stateDict();
    close(st.tensors.get("w.exp_avg")![0]!, 0.1 * 0.2, "m");
    close(st.tensors.get("w.exp_avg_sq")![1]!, 0.001 * 0.09, "v", 1e-9);
  });

  test("three steps match the hand-computed reference (decay, bias correction, eps placement)", () => {
    const grads = [
      [0.2, -0.3, 1.0],
      [0.1, 0.4, 0.01],
      [-0.5, 0.05, 0.01],
    ];
    const p0 = [0.5, -1.5, 2.0];
    const cases: AdamRef[] = [
      { lr: 0.1, b1: 0.9, b2: 0.999, eps: 1e-8, wd: 0.1, amsgrad: false },
      { lr: 0.05, b1: 0.8, b2: 0.95, eps: 0.5, wd: 0.3, amsgrad: false }, // large eps: its placement matters
      { lr: 0.1, b1: 0.9, b2: 0.6, eps: 1e-8, wd: 0, amsgrad: true }, // fast β2 so v shrinks
    ];
    for (const h of cases) {
      const opt = new AdamW([param("w", p0)], { lr: h.lr, betas: [h.b1, h.b2], eps: h.eps, weightDecay: h.wd, amsgrad: h.amsgrad });
      for (let t = 0; t < 3; t++) {
        opt.step([Float32Array.from(grads[t]!)]);
        for (let i = 0; i < 3; i++) {
          const ref = adamwReference(p0[i]!, grads.slice(0, t + 1).map((g) => g[i]!), h);
          close(opt.params[0]!.data[i]!, ref.p[t]!, `case ${JSON.stringify(h)} step ${t + 1} p[${i}]`);
        }
      }
      const st = opt.stateDict();
      for (let i = 0; i < 3; i++) {
        const ref = adamwReference(p0[i]!, grads.map((g) => g[i]!), h);
        close(st.tensors.get("w.exp_avg")![i]!, ref.m, "m");
        close(st.tensors.get("w.exp_avg_sq")![i]!, ref.v, "v", 1e-8);
      }
      assert.equal(st.tensors.has("w.max_exp_avg_sq"), h.amsgrad);
    }
    // amsgrad changes the result where v shrinks (coordinate 2).
    const a = adamwReference(2, [1, 0.01, 0.01], cases[2]!).p[2]!;
    const b = adamwReference(2, [1, 0.01, 0.01], { ...cases[2]!, amsgrad: false }).p[2]!;
    assert.ok(Math.abs(a - b) > 1e-3, `amsgrad effect ${a - b}`);
  });

  test("per-parameter weightDecay overrides the default; lr argument overrides the base rate", () => {
    const opt = new AdamW([param("w", [1]), param("b", [1], 0)], { lr: 0.5, weightDecay: 0.2 });
    const g = Float32Array.from([0]);
    opt.step([g, g], 0.1); // zero gradient: only decay moves the parameters
    close(opt.params[0]!.data[0]!, 1 - 0.1 * 0.2, "decayed");
    assert.equal(opt.params[1]!.data[0], 1);
  });

  test("minimises a quadratic", () => {
    const target = [3, -2, 0.5, 10];
    const scale = [1, 10, 0.1, 2];
    const w = param("w", [0, 0, 0, 0]);
    const opt = new AdamW([w], { lr: 0.05, weightDecay: 0 });
    for (let t = 0; t < 3000; t++) {
      const grad = Float32Array.from(w.data, (x, i) => scale[i]! * (x - target[i]!));
      opt.step([grad], 0.05 * (1 - t / 3000));
    }
    w.data.forEach((x, i) => assert.ok(Math.abs(x - target[i]!) < 1e-2, `w[${i}] = ${x}`));
  });

  test("map gradients, skipped parameters, per-parameter steps", () => {
    const opt = new AdamW([param("a", [1, 2]), param("b", [3])], { lr: 0.1 });
    opt.step(new Map([["a", Float32Array.from([1, 1])]]));
    assert.equal(opt.params[1]!.data[0], 3);
    opt.step([null, Float32Array.from([1])]);
    const st = opt.stateDict();
    assert.deepEqual(
      st.params.map((p) => [p.name, p.step]),
      [
        ["a", 1],
        ["b", 1],
      ],
    );
    assert.equal(st.step, 2);
    assert.throws(() => opt.step(new Map([["c", Float32Array.from([1])]])), ConfigError);
    assert.throws(() => opt.step([Float32Array.from([1])]), ShapeMismatchError);
    assert.throws(() => opt.step([Float32Array.from([1]), Float32Array.from([1])]), ShapeMismatchError);
    assert.throws(() => new AdamW([param("a", [1])], { betas: [1, 0.9] }), ConfigError);
    assert.throws(() => new AdamW([param("a", [1]), param("a", [2])]), ConfigError);
  });

  test("stateDict/loadStateDict resume bit-exactly; the dict is a copy", () => {
    const grads = (t: number): Float32Array[] => [Float32Array.from([Math.sin(t), Math.cos(t)]), Float32Array.from([t * 0.1])];
    const a = new AdamW([param("x", [0.3, -0.7]), param("bias", [0.1], 0)], { lr: 0.01, amsgrad: true });
    for (let t = 0; t < 4; t++) a.step(grads(t));
    const saved = a.stateDict();
    const before = saved.tensors.get("x.exp_avg")!.slice();
    const b = new AdamW([param("x", Array.from(a.params[0]!.data)), param("bias", Array.from(a.params[1]!.data))]);
    b.loadStateDict(saved);
    assert.equal(b.lr, 0.01);
    assert.equal(b.amsgrad, true);
    for (let t = 4; t < 8; t++) {
      a.step(grads(t));
      b.step(grads(t));
    }
    assert.deepEqual(b.params.map((p) => Array.from(p.data)), a.params.map((p) => Array.from(p.data)));
    assert.deepEqual(b.stateDict().params, a.stateDict().params); // bias keeps weightDecay 0
    assert.deepEqual(saved.tensors.get("x.exp_avg"), before);
    // Mismatched states are rejected.
    const wrongNames = new AdamW([param("y", [0, 0]), param("bias", [0])]);
    assert.throws(() => wrongNames.loadStateDict(saved), ConfigError);
    const tensors = new Map(saved.tensors);
    tensors.delete("x.exp_avg_sq");
    assert.throws(() => b.loadStateDict({ ...saved, tensors }), MissingTensorError);
    tensors.set("x.exp_avg_sq", new Float32Array(3));
    assert.throws(() => b.loadStateDict({ ...saved, tensors }), ShapeMismatchError);
    assert.throws(() => new Sgd([param("x", [0, 0]), param("bias", [0])]).loadStateDict(saved), ConfigError);
    // A state with invalid hyperparameters is rejected and leaves the optimizer as it was.
    const c = new AdamW([param("x", [0, 0]), param("bias", [0])], { lr: 0.5, betas: [0.8, 0.99] });
    assert.throws(() => c.loadStateDict({ ...saved, hyperparams: { ...saved.hyperparams, beta1: 1.5 } }), ConfigError);
    assert.deepEqual([c.lr, c.beta1, c.beta2, c.amsgrad], [0.5, 0.8, 0.99, false]);
    const sgd = new Sgd([param("x", [0, 0])], { lr: 0.3, momentum: 0.9 });
    const sgdState = sgd.stateDict();
    assert.throws(() => sgd.loadStateDict({ ...sgdState, hyperparams: { ...sgdState.hyperparams, lr: 0.1, momentum: -1 } }), ConfigError);
    assert.deepEqual([sgd.lr, sgd.momentum], [0.3, 0.9]);
  });
});

describe("SGD", () => {
  test("momentum + dampening + weight decay, written out", () => {
    const opt = new Sgd([param("w", [1])], { lr: 0.1, momentum: 0.9, dampening: 0.1, weightDecay: 0.01 });
    // Step 1: d = 0.5 + 0.01·1 = 0.51; first buffer = d (no dampening); p = 1 − 0.1·0.51.
    opt.step([Float32Array.from([0.5])]);
    close(opt.params[0]!.data[0]!, 0.949, "step 1");
    // Step 2: d = −0.2 + 0.01·0.949 = −0.19051; b = 0.9·0.51 + 0.9·d = 0.287541; p = 0.949 − 0.0287541.
    opt.step([Float32Array.from([-0.2])]);
    close(opt.params[0]!.data[0]!, 0.9202459, "step 2");
    // Step 3 from the same formulas.
    const p2 = 0.9202459;
    const d3 = 0.3 + 0.01 * p2;
    const b3 = 0.9 * 0.287541 + 0.9 * d3;
    opt.step([Float32Array.from([0.3])]);
    close(opt.params[0]!.data[0]!, p2 - 0.1 * b3, "step 3");
    close(opt.stateDict().tensors.get("w.momentum_buffer")![0]!, b3, "buffer");
  });

  test("nesterov and plain SGD", () => {
    const nes = new Sgd([param("w", [2])], { lr: 0.1, momentum: 0.5, nesterov: true });
    nes.step([Float32Array.from([1])]); // b = 1; g = 1 + 0.5·1 = 1.5
    close(nes.params[0]!.data[0]!, 2 - 0.15, "nesterov 1");
    nes.step([Float32Array.from([2])]); // b = 0.5 + 2 = 2.5; g = 2 + 1.25 = 3.25
    close(nes.params[0]!.data[0]!, 1.85 - 0.325, "nesterov 2");
    const plain = new Sgd([param("w", [2])]);
    plain.step([Float32Array.from([4])]);
    close(plain.params[0]!.data[0]!, 2 - 1e-3 * 4, "plain, default lr 1e-3");
    assert.equal(plain.stateDict().tensors.size, 0);
    assert.throws(() => new Sgd([param("w", [1])], { nesterov: true }), ConfigError);
    assert.throws(() => new Sgd([param("w", [1])], { momentum: 0.9, dampening: 0.1, nesterov: true }), ConfigError);
  });

  test("minimises a quadratic and resumes bit-exactly", () => {
    const w = param("w", [5, -5]);
    const opt = new Sgd([w], { lr: 0.05, momentum: 0.9 });
    const grad = (): Float32Array => Float32Array.from(w.data, (x, i) => (i === 0 ? 2 : 0.5) * (x - (i === 0 ? 1 : -1)));
    for (let t = 0; t < 300; t++) opt.step([grad()]);
    close(w.data[0]!, 1, "w[0]", 1e-4);
    close(w.data[1]!, -1, "w[1]", 1e-4);
    const copy = param("w", Array.from(w.data));
    const other = new Sgd([copy]);
    other.loadStateDict(opt.stateDict());
    const g = Float32Array.from([0.25, -0.125]);
    opt.step([g]);
    other.step([g]);
    assert.deepEqual(Array.from(copy.data), Array.from(w.data));
  });
});

describe("clipGradNorm", () => {
  test("global L2 norm, torch's coefficient max/(total + 1e-6), returns the pre-clip norm", () => {
    const grads = [Float32Array.from([3, 4]), Float32Array.from([12])];
    const norm = clipGradNorm(grads, 6.5);
    assert.equal(norm, 13);
    const coef = Math.fround(6.5 / (13 + 1e-6));
    assert.deepEqual(Array.from(grads[0]!), [Math.fround(3 * coef), Math.fround(4 * coef)]);
    assert.equal(grads[1]![0], Math.fround(12 * coef));
    close(gradNorm(grads), 6.5, "clipped norm", 1e-6);
    assert.ok(gradNorm(grads) < 6.5);
  });

  test("no change below the limit; maps, infinity norm, NaN", () => {
    const g = new Map([
      ["a", Float32Array.from([1, -2])],
      ["b", Float32Array.from([2])],
    ]);
    assert.equal(clipGradNorm(g, 10), 3);
    assert.deepEqual(Array.from(g.get("a")!), [1, -2]);
    assert.equal(gradNorm(g, Infinity), 2);
    assert.equal(gradNorm(g, 1), 5);
    const inf = [Float32Array.from([1, -4])];
    assert.equal(clipGradNorm(inf, 2, Infinity), 4);
    close(inf[0]![1]!, -2, "inf-norm clip");
    const bad = [Float32Array.from([NaN, 1])];
    assert.ok(Number.isNaN(clipGradNorm(bad, 1)));
    assert.ok(Number.isNaN(bad[0]![1]!));
    assert.equal(clipGradNorm([], 1), 0);
    assert.throws(() => clipGradNorm(inf, -1), ConfigError);
  });
});

describe("weight-decay exclusion", () => {
  test("biases and norms are excluded by name", () => {
    for (const n of ["encoder.layer.0.attention.output.dense.bias", "bias", "LayerNorm.weight", "model.norm.weight", "h.0.ln_1.weight", "transformer.ln_f.weight", "input_layernorm.weight"]) {
      assert.ok(isNoDecayParamName(n), n);
    }
    for (const n of ["q_proj.lora_A.weight", "classifier.weight", "embeddings.word_embeddings.weight", "biased.weight"]) {
      assert.ok(!isNoDecayParamName(n), n);
    }
    const ps = excludeFromWeightDecay([param("fc.weight", [1]), param("fc.bias", [1])]);
    assert.deepEqual(ps.map((p) => p.weightDecay), [undefined, 0]);
  });
});
