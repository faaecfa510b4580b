import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { f32, floatToHalf, tensor, i64 } from "../../tensor.js";
import { ABSMAX_FLOOR } from "./blockwise.js";
import { createDynamicMap, NF4_CODE, FP4_CODE } from "./codebooks.js";
import {
  blockAbsmax,
  codebookFor,
  dequantize,
  int8Codes,
  quantize,
  quantizedByteSize,
  type QuantKind,
  type QuantizedTensor,
} from "./quantize.js";

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
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = scale * Math.sqrt(-2 * Math.log(1 - r())) * Math.cos(2 * Math.PI * r());
  return out;
}

function blockMax(x: Float32Array, blockSize: number): number[] {
  const out: number[] = [];
  for (let s = 0; s < x.length; s += blockSize) {
    let m = 0;
    for (let i = s; i < Math.min(x.length, s + blockSize); i++) m = Math.max(m, Math.abs(x[i]!));
    out.push(m);
  }
  return out;
}

/** The largest error a nearest-code quantiser can make on [−1, 1] with this code book (sorted values). */
function worstCaseError(sorted: readonly number[]): number {
  let e = Math.max(1 - sorted[sorted.length - 1]!, sorted[0]! + 1);
  for (let i = 0; i + 1 < sorted.length; i++) e = Math.max(e, (sorted[i + 1]! - sorted[i]!) / 2);
  return e;
}

const sortedOf = (c: Float32Array): number[] => Array.from(c).sort((a, b) => a - b);

function codeOf(q: QuantizedTensor, i: number): number {
  if (q.kind === "nf4" || q.kind === "fp4") return i & 1 ? q.codes[i >> 1]! & 15 : q.codes[i >> 1]! >> 4;
  return q.codes[i]!;
}

describe("int8 absmax", () => {
  test("error ≤ absmax/254 per element, codes in [−127, 127], block max → ±127", () => {
    const x = gaussian(64 * 20 + 17, 1);
    const q = quantize(x, { kind: "int8", blockSize: 64 });
    const y = dequantize(q).data;
    const am = blockMax(x, 64);
    const codes = int8Codes(q);
    for (let i = 0; i < x.length; i++) {
      const a = am[Math.floor(i / 64)]!;
      assert.ok(Math.abs(x[i]! - y[i]!) <= (a / 254) * (1 + 1e-5), `element ${i}: |${x[i]} − ${y[i]}| > ${a}/254`);
      assert.ok(codes[i]! >= -127 && codes[i]! <= 127);
      if (Math.abs(x[i]!) === a) assert.equal(Math.abs(codes[i]!), 127);
    }
    assert.deepEqual(Array.from(q.scales.kind === "float32" ? q.scales.absmax : []), am.map(Math.fround));
  });

  test("all-zero block gives zero codes and zero output; default block size is 64", () => {
    const x = new Float32Array(200);
    x[150] = 3;
    const q = quantize(x, { kind: "int8" });
    assert.equal(q.blockSize, 64);
    const y = dequantize(q).data;
    assert.deepEqual(Array.from(blockAbsmax(q)), [0, 0, 3, 0]);
    for (let i = 0; i < 200; i++) assert.equal(y[i], i === 150 ? 3 : 0);
  });
});

describe("code-book schemes", () => {
  const cases: { kind: QuantKind; blockSize: number; data: (n: number) => Float32Array }[] = [
    { kind: "dynamic", blockSize: 256, data: (n) => gaussian(n, 2) },
    { kind: "dynamic-unsigned", blockSize: 128, data: (n) => gaussian(n, 3).map(Math.abs) },
    { kind: "nf4", blockSize: 64, data: (n) => gaussian(n, 4, 0.02) },
    { kind: "fp4", blockSize: 32, data: (n) => gaussian(n, 5) },
  ];
  for (const c of cases) {
    test(`${c.kind}: nearest code per element and error ≤ worst code-book gap × absmax`, () => {
      const x = c.data(c.blockSize * 9 + 13);
      const q = quantize(x, { kind: c.kind, blockSize: c.blockSize });
      const y = dequantize(q).data;
      const code = codebookFor(c.kind)!;
      const bound = worstCaseError(sortedOf(code));
      const am = blockMax(x, c.blockSize);
      for (let i = 0; i < x.length; i++) {
        const a = am[Math.floor(i / c.blockSize)]!;
        const v = x[i]! / a;
        const chosen = Math.abs(v - code[codeOf(q, i)]!);
        for (let k = 0; k < code.length; k++) {
          assert.ok(chosen <= Math.abs(v - code[k]!) + 1e-6, `element ${i}: code ${codeOf(q, i)} is not the nearest (code ${k} is)`);
        }
        assert.ok(Math.abs(x[i]! - y[i]!) <= bound * a * (1 + 1e-5) + 1e-12, `element ${i}: error above ${bound}·absmax`);
      }
    });
  }

  test("NF4 packs two codes per byte, even element in the high nibble, odd tail padded with the zero code", () => {
    const x = new Float32Array(64 + 3);
    x[0] = 2; // +absmax → code 15
    x[1] = -2; // −absmax → code 0
    x[2] = 0; // → code 7
    x[3] = 0.16093020141124725 * 2; // exactly code 9
    x[64] = -1;
    x[65] = 0.5;
    x[66] = 1;
    const q = quantize(x, { kind: "nf4", blockSize: 64 });
    assert.equal(q.codes.length, 34);
    assert.equal(q.codes[0], 0xf0);
    assert.equal(q.codes[1], 0x79);
    assert.equal(q.codes[33]! & 0x0f, 7); // padding nibble
    assert.equal(q.codes[33]! >> 4, 15); // x[66] = 1 is its block's absmax
    assert.equal(dequantize(q).data[3], Math.fround(NF4_CODE[9]! * 2));
  });

  test("FP4 reproduces representable values exactly and keeps the sign bit", () => {
    const x = Float32Array.from(FP4_CODE, (v) => v * 6);
    const q = quantize(x, { kind: "fp4", blockSize: 32 });
    const y = dequantize(q).data;
    for (let i = 0; i < x.length; i++) assert.ok(y[i] === x[i], `element ${i}: ${y[i]} vs ${x[i]}`); // −0 === 0
    assert.equal(q.codes[0], 0x01); // codes 0 and 1
    assert.equal(q.codes[5], 0xab); // codes 10 and 11
  });

  test("ties go to the lower code (value exactly on a float32 boundary)", () => {
    const m = createDynamicMap(true);
    const mid = Math.fround(Math.fround(m[200]! + m[201]!) / 2);
    const x = new Float32Array(64);
    x[0] = 1;
    x[1] = mid;
    const q = quantize(x, { kind: "dynamic", blockSize: 64 });
    assert.equal(q.codes[1], 200);
    assert.equal(q.codes[0], 255);
  });
});

describe("edge cases", () => {
  test("length not a multiple of the block size: the last block has its own absmax", () => {
    const x = gaussian(64 * 3 + 5, 7);
    for (let i = 192; i < 197; i++) x[i] = (i - 190) * 0.001;
    for (const kind of ["int8", "dynamic", "nf4"] as const) {
      const q = quantize(x, { kind, blockSize: 64 });
      const am = blockAbsmax(q);
      assert.equal(am.length, 4);
      assert.equal(am[3], Math.fround(0.006));
      const y = dequantize(q).data;
      // 0.006 is the partial block's absmax: exact through code 1.0, within float32 rounding of absmax/127 for int8.
      if (kind === "int8") assert.ok(Math.abs(y[196]! - 0.006) <= 0.006 * 2 ** -22);
      else assert.equal(y[196], Math.fround(0.006));
    }
  });

  test("all-zero blocks dequantise to zero (full block stores 0, partial block stores 1e-38 as bitsandbytes)", () => {
    const x = new Float32Array(64 + 10);
    for (const kind of ["dynamic", "nf4", "fp4", "dynamic-unsigned"] as const) {
      const q = quantize(x, { kind, blockSize: 64 });
      assert.deepEqual(Array.from(blockAbsmax(q)), [0, ABSMAX_FLOOR]);
      assert.ok(dequantize(q).data.every((v) => v === 0), kind);
    }
  });

  test("a block with one outlier: the outlier is exact for +1 codes, the rest within the bound", () => {
    const x = gaussian(128, 8, 0.01);
    x[70] = 50;
    for (const kind of ["dynamic", "nf4", "int8"] as const) {
      const q = quantize(x, { kind, blockSize: 64 });
      const y = dequantize(q).data;
      if (kind === "int8") assert.ok(Math.abs(y[70]! - 50) <= 50 * 2 ** -22);
      else assert.equal(y[70], 50, kind);
      const bound = kind === "int8" ? 50 / 254 : worstCaseError(sortedOf(codebookFor(kind)!)) * 50;
      for (let i = 64; i < 128; i++) assert.ok(Math.abs(y[i]! - x[i]!) <= bound * (1 + 1e-5));
      // The first block has no outlier and keeps its fine resolution.
      const am0 = blockMax(x, 64)[0]!;
      for (let i = 0; i < 64; i++) assert.ok(Math.abs(y[i]! - x[i]!) <= am0 * 0.16);
    }
  });

  test("a negative outlier at −absmax maps to the most negative dynamic code (−0.99296875)", () => {
    const x = new Float32Array(64);
    x[5] = -4;
    const q = quantize(x, { kind: "dynamic", blockSize: 64 });
    assert.equal(q.codes[5], 0);
    assert.equal(dequantize(q).data[5], Math.fround(createDynamicMap(true)[0]! * 4));
  });

  test("empty tensor", () => {
    const q = quantize(new Float32Array(0), { kind: "nf4" });
    assert.equal(q.codes.length, 0);
    assert.equal(dequantize(q).data.length, 0);
  });

  test("tensor input keeps shape and source dtype; float16 data is read as float", () => {
    const h = Uint16Array.from([1, -2, 0.5, 4, 0, -1], floatToHalf);
    const q = quantize(tensor("float16", [2, 3], h), { kind: "int8", blockSize: 64 });
    assert.equal(q.sourceDtype, "float16");
    const y = dequantize(q);
    assert.deepEqual(y.shape, [2, 3]);
    assert.equal(y.data[3], 4);
  });
});

describe("errors", () => {
  test("block sizes outside bitsandbytes' set are rejected with the allowed list", () => {
    for (const [kind, bs] of [["int8", 48], ["dynamic", 8192], ["dynamic", 32], ["nf4", 16], ["fp4", 100]] as const) {
      assert.throws(() => quantize(new Float32Array(10), { kind, blockSize: bs }), (e: Error & { code?: string }) => {
        assert.equal(e.code, "PEFT_ERR_QUANT_SCHEME");
        assert.match(e.message, /blockSize/);
        assert.match(e.message, /4096/);
        return true;
      });
    }
    assert.equal(quantize(new Float32Array(10), { kind: "nf4", blockSize: 32 }).blockSize, 32);
  });

  test("unknown kind, non-float dtype, NaN, negative for unsigned map", () => {
    assert.throws(() => quantize(new Float32Array(4), { kind: "int4" as QuantKind }), { code: "PEFT_ERR_QUANT_SCHEME" });
    assert.throws(() => quantize(i64([2], [1, 2]), { kind: "int8" }, "w"), (e: Error & { code?: string }) => {
      assert.equal(e.code, "PEFT_ERR_QUANT_SCHEME");
      assert.match(e.message, /int64/);
      return true;
    });
    const bad = { dtype: "float32" as const, shape: [3], data: new Float32Array(2) };
    assert.throws(() => quantize(bad, { kind: "int8" }, "w"), { code: "PEFT_ERR_SHAPE_MISMATCH" });
    assert.throws(() => quantize(f32([3], [1, NaN, 2]), { kind: "nf4" }, "w"), (e: Error & { code?: string; index?: number }) => {
      assert.equal(e.code, "PEFT_ERR_NON_FINITE");
      assert.equal(e.index, 1);
      assert.match(e.message, /'w'/);
      return true;
    });
    assert.throws(() => quantize(f32([2], [1, -0.5]), { kind: "dynamic-unsigned" }), { code: "PEFT_ERR_QUANT_RANGE" });
  });

  test("dequantize rejects inconsistent quantised tensors", () => {
    const q = quantize(gaussian(100, 9), { kind: "nf4", blockSize: 64 });
    assert.throws(() => dequantize({ ...q, codes: q.codes.subarray(1) }, "w"), { code: "PEFT_ERR_QUANTIZED_TENSOR" });
    assert.throws(() => dequantize({ ...q, shape: [101] }), { code: "PEFT_ERR_QUANTIZED_TENSOR" });
    assert.throws(() => dequantize({ ...q, scales: { kind: "float32", absmax: new Float32Array(1) } }), { code: "PEFT_ERR_QUANTIZED_TENSOR" });
    assert.throws(() => dequantize({ ...q, blockSize: 48 }), { code: "PEFT_ERR_QUANTIZED_TENSOR" });
  });
});

describe("double quantisation", () => {
  test("nested absmax: offset = mean, 256-block dynamic map, bounded scale and element error", () => {
    const n = 64 * 700 + 30; // 701 blocks → 3 nested blocks, the last partial
    const x = gaussian(n, 10, 0.05);
    const plain = quantize(x, { kind: "nf4", blockSize: 64 });
    const q = quantize(x, { kind: "nf4", blockSize: 64, doubleQuant: true });
    assert.deepEqual(q.codes, plain.codes); // codes come from the exact absmax
    assert.equal(q.scales.kind, "nested");
    if (q.scales.kind !== "nested" || plain.scales.kind !== "float32") return;
    const exact = plain.scales.absmax;
    const mean = exact.reduce((s, v) => s + v, 0) / exact.length;
    assert.ok(Math.abs(q.scales.offset - mean) <= mean * 1e-6);
    assert.equal(q.scales.blockSize, 256);
    assert.equal(q.scales.absmax.length, 3);
    const eff = blockAbsmax(q);
    const dynErr = worstCaseError(sortedOf(createDynamicMap(true)));
    for (let b = 0; b < exact.length; b++) {
      const nested = q.scales.absmax[Math.floor(b / 256)]!;
      assert.ok(Math.abs(eff[b]! - exact[b]!) <= dynErr * nested + 1e-7, `block ${b}`);
    }
    const y = dequantize(q).data;
    const yp = dequantize(plain).data;
    const codeErr = worstCaseError(sortedOf(NF4_CODE));
    for (let i = 0; i < n; i++) {
      const b = Math.floor(i / 64);
      const scaleErr = Math.abs(eff[b]! - exact[b]!);
      assert.ok(Math.abs(y[i]! - x[i]!) <= codeErr * exact[b]! + scaleErr + 1e-7, `element ${i}`);
      assert.ok(Math.abs(y[i]! - yp[i]!) <= scaleErr * (1 + 1e-6) + 1e-9);
    }
    const sz = quantizedByteSize(q);
    assert.equal(sz.scales, 701 + 3 * 4 + 4);
    assert.ok(sz.bitsPerElement < quantizedByteSize(plain).bitsPerElement);
  });

  test("dynamic map nests with its own block size; int8 nests in blocks of 256", () => {
    const x = gaussian(4096 * 3, 11);
    const qd = quantize(x, { kind: "dynamic", blockSize: 64, doubleQuant: true });
    assert.equal(qd.scales.kind === "nested" && qd.scales.blockSize, 64);
    const qi = quantize(x, { kind: "int8", blockSize: 64, doubleQuant: true });
    assert.equal(qi.scales.kind === "nested" && qi.scales.blockSize, 256);
    const y = dequantize(qi).data;
    let maxErr = 0;
    for (let i = 0; i < x.length; i++) maxErr = Math.max(maxErr, Math.abs(y[i]! - x[i]!));
    assert.ok(maxErr < 0.1, `int8 + nested max error ${maxErr}`);
  });
});

describe("byte accounting", () => {
  test("bits per element per scheme", () => {
    const x = gaussian(64 * 64, 12);
    const bits = (kind: QuantKind, blockSize: number): number => quantizedByteSize(quantize(x, { kind, blockSize })).bitsPerElement;
    assert.equal(bits("nf4", 64), 4 + 32 / 64);
    assert.equal(bits("fp4", 32), 4 + 32 / 32);
    assert.equal(bits("int8", 64), 8 + 32 / 64);
    assert.equal(bits("dynamic", 4096), 8 + 32 / 4096);
    const sz = quantizedByteSize(quantize(x, { kind: "nf4", blockSize: 64 }));
    assert.equal(sz.codes, 2048);
    assert.equal(sz.scales, 64 * 4);
    assert.equal(sz.float32Bytes, 4 * 4096);
  });
});
