import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { dequantize, quantize } from "../../compress/quant/quantize.js";
import { loadCheckpoint, saveCheckpoint } from "../checkpoint.js";
import { AdamW } from "./adamw.js";
import { AdamW8bit, packCodes, unpackCodes } from "./adamw8bit.js";
import type { NamedParam, Optimizer } from "./types.js";

/** Seeded values in [-1, 1). */
function values(n: number, seed: number): Float32Array {
  let s = seed >>> 0 || 1;
  return Float32Array.from({ length: n }, () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return (s / 2 ** 32) * 2 - 1;
  });
}

/**
 * f(x) = ½ Σ aᵢ (xᵢ − tᵢ)² over a large parameter (8-bit state) and a small one (32-bit state),
 * with curvatures spread over two decades so the second moments vary.
 */
function quadratic() {
  const sizes = { big: 8192, small: 300 };
  const a = { big: values(sizes.big, 1).map((u) => 10 ** (u + 1) / 10), small: values(sizes.small, 2).map((u) => 1 + u * 0.5) };
  const t = { big: values(sizes.big, 3), small: values(sizes.small, 4) };
  const params = (): NamedParam[] => [
    { name: "big", data: new Float32Array(sizes.big) },
    { name: "small", data: new Float32Array(sizes.small) },
  ];
  const grads = (ps: readonly NamedParam[]) => ps.map((p) => {
    const k = p.name as "big" | "small";
    return Float32Array.from(p.data, (x, i) => a[k][i]! * (x - t[k][i]!));
  });
  const loss = (ps: readonly NamedParam[]) => {
    let f = 0;
    for (const p of ps) {
      const k = p.name as "big" | "small";
      p.data.forEach((x, i) => (f += 0.5 * a[k][i]! * (x - t[k][i]!) ** 2));
    }
    return f;
  };
  return { params, grads, loss };
}

function run(opt: Optimizer, q: ReturnType<typeof quadratic>, steps: number): number[] {
  const losses: number[] = [];
  for (let s = 0; s < steps; s++) {
    opt.step(q.grads(opt.params));
    losses.push(q.loss(opt.params));
  }
  return losses;
}

describe("AdamW8bit", () => {
  test("tracks 32-bit AdamW on a quadratic; only parameters ≥ 4096 elements get 8-bit state", () => {
    const q = quadratic();
    const h = { lr: 0.01, weightDecay: 0.01 };
    const full = new AdamW(q.params(), h);
    const eight = new AdamW8bit(q.params(), h);
    const l32 = run(full, q, 300);
    const l8 = run(eight, q, 300);
    const start = q.loss(q.params());
    console.log(`# loss ${start.toFixed(1)} → 32-bit ${l32.at(-1)!.toExponential(3)}, 8-bit ${l8.at(-1)!.toExponential(3)}`);
    assert.ok(l32.at(-1)! < 1e-4 * start && l8.at(-1)! < 1e-4 * start, "both solve the quadratic");
    // at every step the 8-bit run has made the same progress (loss decrease) to within 1 %
    l32.forEach((l, k) => assert.ok(Math.abs(l8[k]! - l) <= 0.01 * (start - l), `step ${k + 1}: ${l8[k]} vs ${l}`));
    // parameters stay close: drift well below the distance travelled (about 0.58 RMS per element)
    let drift = 0;
    full.params[0]!.data.forEach((x, i) => (drift += (x - eight.params[0]!.data[i]!) ** 2));
    const rms = Math.sqrt(drift / 8192);
    console.log(`# RMS parameter difference after 300 steps: ${rms.toExponential(2)}`);
    assert.ok(rms < 0.02, `rms ${rms}`);
    // the small parameter's state is 32-bit, so it follows AdamW to float32 rounding
    assert.ok(eight.is8bit(0) && !eight.is8bit(1));
    const st = eight.stateDict();
    assert.deepEqual([...st.tensors.keys()].sort(), ["big.absmax1", "big.absmax2", "big.state1", "big.state2", "small.exp_avg", "small.exp_avg_sq"]);
    assert.equal(st.hyperparams.optimBits, 8);
  });

  test("one step by hand: the update uses the float32 moments, the state holds their quantisation", () => {
    const n = 4096;
    const p0 = values(n, 5);
    const g = values(n, 6);
    const opt = new AdamW8bit([{ name: "w", data: Float32Array.from(p0) }], { lr: 0.1, weightDecay: 0 });
    opt.step([g]);
    const p = opt.params[0]!.data;
    for (const j of [0, 17, 4095]) {
      // t = 1: m̂ = g, v̂ = g², so p ← p − lr·g/(|g| + eps) with the unrounded m, v
      const m = Math.fround(0.1 * g[j]!);
      const v = Math.fround(0.001 * g[j]! * g[j]!);
      const want = Math.fround(p0[j]! - ((0.1 / 0.1) * m) / (Math.sqrt(v) / Math.sqrt(0.001) + 1e-8));
      assert.ok(Math.abs(p[j]! - want) <= 1e-6, `p[${j}] ${p[j]} vs ${want}`);
    }
    const st = opt.stateDict();
    const mq = quantize(Float32Array.from(g, (x) => 0.1 * x), { kind: "dynamic", blockSize: 256 });
    assert.deepEqual(unpackCodes(st.tensors.get("w.state1")!, n, "k"), mq.codes);
    assert.equal(st.tensors.get("w.absmax1")!.length, n / 256);
  });

  test("state bytes: one byte per moment entry plus a float32 absmax per block of 256", () => {
    const q = quadratic();
    const opt = new AdamW8bit(q.params());
    assert.deepEqual(opt.stateBytes(), { quantized: 0, float32: 0, total: 0, adamW32: 0 });
    run(opt, q, 2);
    const b = opt.stateBytes();
    assert.equal(b.quantized, 2 * (8192 + 4 * 32));
    assert.equal(b.float32, 2 * 4 * 300);
    assert.equal(b.adamW32, 8 * (8192 + 300));
    console.log(`# state ${b.total} bytes vs ${b.adamW32} for 32-bit AdamW (${(b.adamW32 / b.total).toFixed(2)}×)`);
  });

  test("stateDict / loadStateDict resume bit for bit; a 32-bit AdamW state is quantised on load", () => {
    const q = quadratic();
    const a = new AdamW8bit(q.params(), { lr: 0.02 });
    run(a, q, 7);
    const snap = a.stateDict();
    let resumed: AdamW8bit;
    const params = a.params.map((p) => ({ name: p.name, data: Float32Array.from(p.data) }));
    // through a training checkpoint on disk (float32 state tensors)
    const dir = mkdtempSync(join(tmpdir(), "adamw8bit-"));
    try {
      saveCheckpoint(dir, { step: 7, epoch: 0, params: new Map(), optimizer: snap, rng: {}, dataOrder: [] });
      const b = new AdamW8bit(params, { lr: 0.5 });
      b.loadStateDict(loadCheckpoint(dir).optimizer);
      resumed = b;
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    const b = resumed;
    assert.equal(b.lr, 0.02);
    assert.equal(b.stepCount, 7);
    run(a, q, 5);
    run(b, q, 5);
    assert.deepEqual(b.params[0]!.data, a.params[0]!.data);
    assert.deepEqual(b.params[1]!.data, a.params[1]!.data);

    const full = new AdamW(q.params(), { lr: 0.02 });
    run(full, q, 3);
    const c = new AdamW8bit(full.params.map((p) => ({ name: p.name, data: Float32Array.from(p.data) })));
    c.loadStateDict(full.stateDict());
    const st = c.stateDict();
    const m32 = full.stateDict().tensors.get("big.exp_avg")!;
    const mq = dequantize({ kind: "dynamic", shape: [8192], sourceDtype: "float32", blockSize: 256, codes: unpackCodes(st.tensors.get("big.state1")!, 8192, "k"), scales: { kind: "float32", absmax: st.tensors.get("big.absmax1")! } }).data as Float32Array;
    let worst = 0;
    m32.forEach((x, i) => (worst = Math.max(worst, Math.abs(x - mq[i]!))));
    assert.ok(worst > 0 && worst < 0.05 * Math.max(...m32.map(Math.abs)), `dequantised first moment off by ${worst}`);
    assert.deepEqual(st.tensors.get("small.exp_avg"), full.stateDict().tensors.get("small.exp_avg"));
  });

  test("bad options and bad or mismatched states are refused with typed errors; a failed load changes nothing", () => {
    const q = quadratic();
    assert.throws(() => new AdamW8bit(q.params(), { amsgrad: true } as never), { code: "PEFT_ERR_CONFIG" });
    assert.throws(() => new AdamW8bit(q.params(), { blockSize: 100 }), { code: "PEFT_ERR_CONFIG" });
    assert.throws(() => new AdamW8bit(q.params(), { betas: [0.9, 1] }), { code: "PEFT_ERR_CONFIG" });
    const a = new AdamW8bit(q.params());
    run(a, q, 2);
    const good = a.stateDict();
    const b = new AdamW8bit(q.params(), { blockSize: 512 });
    assert.throws(() => b.loadStateDict(good), /blockSize 256/);
    const tampered = new Map(good.tensors);
    const codes = Float32Array.from(tampered.get("big.state1")!);
    codes[3] = 0.5;
    tampered.set("big.state1", codes);
    const c = new AdamW8bit(q.params());
    assert.throws(() => c.loadStateDict({ ...good, tensors: tampered }), (e: Error & { code?: string; path?: string }) => {
      assert.equal(e.code, "PEFT_ERR_CONFIG");
      assert.equal(e.path, "big.state1");
      return true;
    });
    const missing = new Map(good.tensors);
    missing.delete("big.absmax2");
    assert.throws(() => c.loadStateDict({ ...good, tensors: missing }), { code: "PEFT_ERR_MISSING_TENSOR" });
    assert.equal(c.stepCount, 0, "the failed loads left the optimizer untouched");
    assert.throws(() => c.loadStateDict({ ...good, kind: "sgd" }), { code: "PEFT_ERR_CONFIG" });
    // a non-finite gradient is a typed error naming the moment, and the parameter keeps its step count
    const d = new AdamW8bit([{ name: "w", data: new Float32Array(4096) }]);
    const g = new Float32Array(4096);
    g[9] = NaN;
    assert.throws(() => d.step([g]), /w\.exp_avg/);
    assert.equal(d.stateDict().params[0]!.step, 0);
  });

  test("packCodes / unpackCodes round-trip any byte string and reject stray bits", () => {
    for (const n of [0, 1, 2, 3, 4, 1000]) {
      const bytes = Uint8Array.from({ length: n }, (_, i) => (i * 97 + 255) % 256);
      const packed = packCodes(bytes);
      assert.equal(packed.length, Math.ceil(n / 3));
      assert.deepEqual(unpackCodes(packed, n, "k"), bytes);
    }
    assert.throws(() => unpackCodes(Float32Array.of(256), 1, "k"), /beyond the last code/);
    assert.throws(() => unpackCodes(Float32Array.of(1, 2), 3, "k"), /packed values/);
  });
});
