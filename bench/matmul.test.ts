import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { CompiledGraph } from "../src/runtime/session.js";
import { toOnnx } from "../src/graph/onnx.js";
import { f32, type Tensor } from "../src/tensor.js";
import { GPT2_SMALL_SHAPES, type MatmulCeiling, PlainCeiling, builderLinearGraph, builderMatmulGraph, measureMatmulCeiling, mixCeilingGflops, parseShapes, plainMatmulModel } from "./matmul.js";

function naive(a: Tensor, b: Tensor): Float64Array {
  const [m, k] = a.shape as [number, number];
  const n = b.shape[1]!;
  const out = new Float64Array(m * n);
  for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) for (let p = 0; p < k; p++) out[i * n + j]! += Number(a.data[i * k + p]) * Number(b.data[p * n + j]);
  return out;
}

async function run(bytes: Uint8Array, x: Tensor): Promise<Float32Array> {
  const s = await CompiledGraph.create(bytes, { threads: 1 });
  try {
    return (await s.run({ x }))["y"]!.data as Float32Array;
  } finally {
    await s.release();
  }
}

describe("bench matmul", () => {
  test("the plain, ops.matmul and linear graphs compute x·w", async () => {
    const x = f32([3, 4], Array.from({ length: 12 }, (_, i) => (i % 5) - 2));
    const w = f32([4, 5], Array.from({ length: 20 }, (_, i) => ((i * 7) % 11) / 4 - 1));
    const wT = f32([5, 4], Array.from({ length: 20 }, (_, i) => w.data[(i % 4) * 5 + Math.floor(i / 4)]!));
    const want = naive(x, w);
    for (const got of [await run(plainMatmulModel(w, 3), x), await run(toOnnx(builderMatmulGraph(w, 3)), x), await run(toOnnx(builderLinearGraph(wT, 3)), x)]) {
      assert.equal(got.length, want.length);
      for (let i = 0; i < want.length; i++) assert.ok(Math.abs(got[i]! - want[i]!) < 1e-5, `element ${i}: ${got[i]} vs ${want[i]}`);
    }
  });

  test("measureMatmulCeiling reports every shape and variant, and aggregates Σflops/Σtime", async () => {
    const shapes = parseShapes("16x32x8,24x8x40");
    const r = await measureMatmulCeiling({ threads: 1, shapes, repeat: 2, warmup: 1 });
    assert.equal(r.shapes.length, 2);
    let flops = 0;
    let sec = 0;
    for (const [i, s] of r.shapes.entries()) {
      assert.equal(s.gflop, Math.round((2 * shapes[i]!.m * shapes[i]!.k * shapes[i]!.n) / 1e9 * 1e4) / 1e4);
      for (const v of ["plain", "matmul", "linear"] as const) {
        const t = s.timings[v]!;
        assert.ok(t.bestMs > 0 && t.bestMs <= t.medianMs, `${v}: ${JSON.stringify(t)}`);
        assert.ok(t.bestCpuMs > 0 && Number.isFinite(t.cpuGflops) && t.cpuGflops > 0, `${v}: ${JSON.stringify(t)}`);
        assert.ok(Number.isFinite(t.gflops) && t.gflops > 0);
      }
      assert.ok(s.maxAbsDiff.matmul! < 1e-4 && s.maxAbsDiff.linear! < 1e-4, JSON.stringify(s.maxAbsDiff));
      flops += 2 * s.m * s.k * s.n;
      sec += s.timings.plain!.bestMs / 1e3;
    }
    assert.ok(Math.abs(r.ceilingGflops - flops / sec / 1e9) <= 0.01 + 1e-3 * r.ceilingGflops);
    assert.equal(r.ceilingGflops, r.gflops.plain);
    assert.ok(Math.abs(r.ratio.linear! - r.gflops.linear! / r.gflops.plain!) < 1e-3);
    assert.equal(r.peakGflops, Math.max(...r.shapes.map((s) => s.timings.plain!.gflops)));
  });

  test("variants: ['plain'] times only the plain graph", async () => {
    const r = await measureMatmulCeiling({ threads: 1, shapes: parseShapes("8x8x8"), repeat: 1, warmup: 1, variants: ["plain"] });
    assert.deepEqual(Object.keys(r.shapes[0]!.timings), ["plain"]);
    assert.deepEqual(r.ratio, {});
  });

  test("transferOutput: false times the product through a one-element probe, same product", async () => {
    const w = f32([4, 5], Array.from({ length: 20 }, (_, i) => ((i * 7) % 11) / 4 - 1));
    const x = f32([3, 4], Array.from({ length: 12 }, (_, i) => (i % 5) - 2));
    const s = await CompiledGraph.create(plainMatmulModel(w, 3, true), { threads: 1 });
    try {
      const probe = (await s.run({ x }, ["probe"])).probe!;
      assert.deepEqual([...probe.shape], [1, 1]);
      assert.ok(Math.abs(Number(probe.data[0]) - naive(x, w)[0]!) < 1e-5);
    } finally {
      await s.release();
    }
    const r = await measureMatmulCeiling({ threads: 1, shapes: parseShapes("16x32x8"), repeat: 1, warmup: 1, transferOutput: false });
    assert.equal(r.transferOutput, false);
    assert.ok(r.shapes[0]!.maxAbsDiff.matmul! < 1e-4 && r.shapes[0]!.maxAbsDiff.linear! < 1e-4);
  });

  test("mixCeilingGflops weights each shape's speed by its FLOPs in the mix", () => {
    const timing = (gflops: number) => ({ bestMs: 1, medianMs: 1, gflops, bestCpuMs: 2, cpuGflops: 2 * gflops });
    const c = {
      shapes: [
        { name: "a", m: 10, k: 10, n: 10, gflop: 2e-6, timings: { plain: timing(100) }, maxAbsDiff: {} },
        { name: "b", m: 10, k: 10, n: 30, gflop: 6e-6, timings: { plain: timing(50) }, maxAbsDiff: {} },
      ],
    } as unknown as MatmulCeiling;
    // 1×a (2000 flops at 100) + 3×b (18000 flops at 50): 20000 flops in 20 + 360 ns
    const got = mixCeilingGflops(c, [
      { name: "a", m: 10, k: 10, n: 10, count: 1 },
      { name: "b", m: 10, k: 10, n: 30, count: 3 },
    ]);
    assert.ok(Math.abs(got - 20000 / 380) < 1e-3, String(got));
    const mix = [
      { name: "a", m: 10, k: 10, n: 10, count: 1 },
      { name: "b", m: 10, k: 10, n: 30, count: 3 },
    ];
    assert.ok(Math.abs(mixCeilingGflops(c, mix, "cpu") - 2 * got) < 1e-2);
    // medians: 1 ms per run of either shape → 20000 flops in 4 ms
    assert.ok(Math.abs(mixCeilingGflops(c, mix, "median") - 20000 / 4e-3 / 1e9) < 1e-9);
    assert.throws(() => mixCeilingGflops(c, [{ name: "zz", m: 1, k: 1, n: 1, count: 1 }]), /no plain timing/);
  });

  test("PlainCeiling: rounds with counts run each shape that many times and time the whole round", async () => {
    const c = await PlainCeiling.create(parseShapes("16x32x8,8x8x8"), { threads: 1, ep: "cpu", warmup: 1 });
    try {
      assert.throws(() => c.mixResult(), /needs a round with counts/);
      await c.round([2, 1]);
      await c.round([2, 1]);
      await c.round();
      const r = c.result();
      assert.deepEqual(r.shapes.map((s) => s.timings.plain!.medianMs > 0), [true, true]);
      assert.equal(r.repeat, 5); // runs of the first shape: 2 + 2 + 1
      const m = c.mixResult();
      assert.equal(m.rounds, 2);
      assert.ok(m.bestGflops >= m.medianGflops && m.medianGflops > 0 && m.cpuGflops > 0, JSON.stringify(m));
    } finally {
      await c.release();
    }
  });

  test("parseShapes accepts names and MxKxN and rejects anything else", () => {
    assert.deepEqual(parseShapes("lm_head"), [GPT2_SMALL_SHAPES.find((s) => s.name === "lm_head")]);
    assert.deepEqual(parseShapes("2x3x4, square")[0], { name: "2x3x4", m: 2, k: 3, n: 4 });
    assert.throws(() => parseShapes("2x3"), /neither MxKxN/);
    assert.throws(() => parseShapes("0x3x4"), /neither MxKxN/);
  });
});
