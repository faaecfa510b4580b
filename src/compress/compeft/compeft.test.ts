import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { f32, floatToHalf, i64, tensor, type Tensor } from "../../tensor.js";
import { compeft, compeftStats, keepCount, reconstruct, topKIndices } from "./compeft.js";

function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function gaussian(n: number, seed: number, scale = 1): Float32Array {
  const r = rng(seed);
  return Float32Array.from({ length: n }, () => scale * Math.sqrt(-2 * Math.log(1 - r())) * Math.cos(2 * Math.PI * r()));
}

/** Brute-force ComPEFT: sort by (|τ| desc, flat index asc), keep k non-zeros, value α·std·sign. */
function reference(tensors: Map<string, Float32Array>, density: number, alpha: number, baseline: (n: string) => number) {
  const names = [...tensors.keys()].sort();
  const tau: number[] = [];
  for (const n of names) for (const v of tensors.get(n)!) tau.push(Math.fround(v - Math.fround(baseline(n))));
  const mean = tau.reduce((a, b) => a + b, 0) / tau.length;
  const std = Math.sqrt(tau.reduce((a, b) => a + (b - mean) ** 2, 0) / (tau.length - 1));
  const k = Math.max(1, Math.floor(density * tau.length + 1e-9));
  const order = tau.map((_, i) => i).sort((a, b) => Math.abs(tau[b]!) - Math.abs(tau[a]!) || a - b);
  const kept = new Set(order.slice(0, k).filter((i) => tau[i] !== 0));
  const scale = alpha * std;
  const out = new Map<string, number[]>();
  let off = 0;
  for (const n of names) {
    const len = tensors.get(n)!.length;
    const b = Math.fround(baseline(n));
    out.set(n, Array.from({ length: len }, (_, i) => (kept.has(off + i) ? b + Math.sign(tau[off + i]!) * scale : b)));
    off += len;
  }
  return { out, kept: kept.size, std };
}

function assertClose(actual: ArrayLike<number>, expected: ArrayLike<number>, rel: number, what: string): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  for (let i = 0; i < actual.length; i++) {
    assert.ok(Math.abs(actual[i]! - expected[i]!) <= rel * Math.max(1, Math.abs(expected[i]!)), `${what}[${i}]: ${actual[i]} vs ${expected[i]}`);
  }
}

describe("compeft", () => {
  test("LoRA update: global top-k by magnitude, α·std·sign, names in sorted order", () => {
    const tensors = new Map<string, Float32Array>([
      ["layer.1.lora_B", gaussian(600, 1, 0.01)],
      ["layer.0.lora_A", gaussian(800, 2, 0.1)],
      ["layer.0.lora_B", gaussian(500, 3, 0.02)],
    ]);
    const c = compeft(tensors, { density: 0.1, alpha: 2 });
    assert.deepEqual(c.tensors.map((t) => t.name), ["layer.0.lora_A", "layer.0.lora_B", "layer.1.lora_B"]);
    const ref = reference(tensors, 0.1, 2, () => 0);
    assert.equal(compeftStats(c).kept, 190);
    assert.equal(ref.kept, 190);
    assert.ok(Math.abs(c.std - ref.std) <= ref.std * 1e-6);
    // The global selection favours the large-scale lora_A entries.
    assert.ok(c.tensors[0]!.positions.length > c.tensors[2]!.positions.length);
    const rec = reconstruct(c);
    for (const [name, exp] of ref.out) assertClose(rec.get(name)!.data as Float32Array, exp, 1e-6, name);
    for (const t of c.tensors) for (let j = 1; j < t.positions.length; j++) assert.ok(t.positions[j]! > t.positions[j - 1]!);
  });

  test("(IA)³ vectors use baseline 1: τ = v − 1, untouched entries reconstruct to exactly 1", () => {
    const v = gaussian(300, 4, 0.05).map((x) => 1 + x);
    const w = gaussian(40, 5, 0.3);
    const tensors = new Map([
      ["ia3_l", v],
      ["lora", w],
    ]);
    const baseline = (name: string): number => (name === "ia3_l" ? 1 : 0);
    const c = compeft(tensors, { density: 0.2, alpha: 1.5, baseline });
    const ref = reference(tensors, 0.2, 1.5, baseline);
    const rec = reconstruct(c);
    for (const [name, exp] of ref.out) assertClose(rec.get(name)!.data as Float32Array, exp, 1e-6, name);
    const ia3 = rec.get("ia3_l")!.data as Float32Array;
    const kept = new Set(c.tensors[0]!.positions);
    for (let i = 0; i < ia3.length; i++) {
      if (!kept.has(i)) assert.equal(ia3[i], 1);
      else assert.equal(ia3[i], Math.fround(1 + (v[i]! > 1 ? c.scale : -c.scale)));
    }
    assert.equal(c.tensors[0]!.baseline, 1);
  });

  test("kept count is exactly ⌊density · n⌋ (at least 1) for tie-free data", () => {
    const x = gaussian(1000, 6);
    for (const [density, k] of [[0.001, 1], [0.05, 50], [0.29, 290], [0.5, 500], [1, 1000], [1e-6, 1], [0.0125, 12]] as const) {
      const c = compeft(new Map([["w", x]]), { density, alpha: 1 });
      assert.equal(compeftStats(c).kept, k, `density ${density}`);
    }
    // 0.29 · 100 = 28.999999999999996 in float64; the reference's int() would keep 28.
    const c = compeft(new Map([["w", gaussian(100, 7)]]), { density: 0.29, alpha: 1 });
    assert.equal(compeftStats(c).kept, 29);
  });

  test("ties at the threshold: exactly k kept, earliest positions (sorted names first) win", () => {
    const a = f32([6], [1, -1, 1, -1, 1, -1]);
    const b = f32([4], [-1, 1, -1, 0.5]);
    const c = compeft(
      new Map<string, Tensor>([
        ["b", b],
        ["a", a],
      ]),
      { density: 0.7, alpha: 1 },
    );
    assert.equal(compeftStats(c).kept, 7);
    assert.deepEqual(Array.from(c.tensors[0]!.positions), [0, 1, 2, 3, 4, 5]);
    assert.deepEqual(Array.from(c.tensors[0]!.negative), [0, 1, 0, 1, 0, 1]);
    assert.deepEqual(Array.from(c.tensors[1]!.positions), [0]);
    assert.deepEqual(Array.from(c.tensors[1]!.negative), [1]);
  });

  test("zero entries are never kept", () => {
    const x = new Float32Array(10);
    x[2] = 3;
    x[7] = -1;
    x[9] = 0.5;
    const c = compeft(new Map([["w", x]]), { density: 0.5, alpha: 1 });
    assert.deepEqual(Array.from(c.tensors[0]!.positions), [2, 7, 9]);
    const all0 = compeft(new Map([["w", new Float32Array(8)]]), { density: 0.5, alpha: 1 });
    assert.equal(compeftStats(all0).kept, 0);
    assert.equal(all0.scale, 0);
  });

  test("tensor inputs keep shape; reconstruct in the source dtype", () => {
    const h = Uint16Array.from([0.5, -0.25, 2, 0.125, -3, 1], floatToHalf);
    const c = compeft(new Map([["w", tensor("float16", [2, 3], h)]]), { density: 0.5, alpha: 1 });
    assert.deepEqual(c.tensors[0]!.shape, [2, 3]);
    assert.equal(c.tensors[0]!.dtype, "float16");
    const f = reconstruct(c).get("w")!;
    const s = reconstruct(c, "source").get("w")!;
    assert.equal(f.dtype, "float32");
    assert.equal(s.dtype, "float16");
    assert.deepEqual(s.shape, [2, 3]);
    assert.deepEqual(Array.from(s.data as Uint16Array), Array.from(f.data as Float32Array, floatToHalf));
  });

  test("invalid options and inputs raise typed errors naming the problem", () => {
    const m = new Map([["w", gaussian(10, 8)]]);
    for (const density of [0, -0.1, 1.5, NaN]) {
      assert.throws(() => compeft(m, { density, alpha: 1 }), (e: Error & { code?: string }) => e.code === "PEFT_ERR_CONFIG" && /density/.test(e.message));
    }
    for (const alpha of [0, -1, Infinity]) {
      assert.throws(() => compeft(m, { density: 0.5, alpha }), (e: Error & { code?: string }) => e.code === "PEFT_ERR_CONFIG" && /alpha/.test(e.message));
    }
    assert.throws(() => compeft(m, { density: 0.5, alpha: 1, baseline: () => NaN }), { code: "PEFT_ERR_CONFIG" });
    const bad = gaussian(10, 9);
    bad[4] = Infinity;
    assert.throws(() => compeft(new Map([["layer.w", bad]]), { density: 0.5, alpha: 1 }), (e: Error & { code?: string; index?: number }) => {
      assert.equal(e.code, "PEFT_ERR_NON_FINITE");
      assert.equal(e.index, 4);
      assert.match(e.message, /layer\.w/);
      return true;
    });
    assert.throws(() => compeft(new Map([["i", i64([3], [1, 2, 3])]]), { density: 0.5, alpha: 1 }), { code: "PEFT_ERR_CONFIG" });
    assert.throws(() => compeft(new Map([["one", f32([1], [2])]]), { density: 0.5, alpha: 1 }), { code: "PEFT_ERR_CONFIG" });
  });
});

describe("selection helpers", () => {
  test("topKIndices equals a brute-force sort, including duplicates and signed zeros", () => {
    const r = rng(10);
    const x = Float32Array.from({ length: 5000 }, () => {
      const u = r();
      return u < 0.1 ? 0 : u < 0.15 ? -0 : u < 0.4 ? Math.round((r() - 0.5) * 20) / 4 : (r() - 0.5) * 1e-3;
    });
    for (const k of [1, 7, 100, 1234, 4500, 5000]) {
      const order = Array.from(x.keys()).sort((a, b) => Math.abs(x[b]!) - Math.abs(x[a]!) || a - b);
      const expected = order.slice(0, k).filter((i) => x[i] !== 0).sort((a, b) => a - b);
      assert.deepEqual(Array.from(topKIndices(x, k)), expected, `k=${k}`);
    }
  });

  test("keepCount", () => {
    assert.equal(keepCount(0.1, 10), 1);
    assert.equal(keepCount(0.3, 10), 3);
    assert.equal(keepCount(0.29, 100), 29);
    assert.equal(keepCount(0.015, 100), 1);
    assert.equal(keepCount(0.999, 10), 9);
    assert.equal(keepCount(1, 7), 7);
    assert.equal(keepCount(0.5, 0), 0);
  });
});
