import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { createDynamicMap, createNormalMap, normalMapValues, normalQuantile, NF4_CODE, FP4_CODE, codebookBounds } from "./codebooks.js";
import { fmaF32, linspaceF32, roundHalfEven } from "./float32.js";

/** Every value the dynamic-map formula gives, in float64 (no float32 rounding), sorted. */
function dynamicFormula(signed: boolean): number[] {
  const vals: number[] = [0, 1];
  for (let i = 0; i < 7; i++) {
    const intervals = signed ? 2 ** i : 2 ** (i + 1);
    for (let j = 0; j < intervals; j++) {
      const lo = 0.1 + (0.9 * j) / intervals;
      const hi = 0.1 + (0.9 * (j + 1)) / intervals;
      const v = 10 ** (i - 6) * ((lo + hi) / 2);
      vals.push(v);
      if (signed) vals.push(-v);
    }
  }
  return vals.sort((a, b) => a - b);
}

describe("createDynamicMap", () => {
  test("signed map: 256 sorted values matching the formula to float32 precision", () => {
    const m = createDynamicMap(true);
    const ref = dynamicFormula(true);
    assert.equal(m.length, 256);
    for (let i = 0; i < 256; i++) {
      assert.ok(Math.abs(m[i]! - ref[i]!) <= Math.abs(ref[i]!) * 2 ** -21, `entry ${i}: ${m[i]} vs formula ${ref[i]}`);
      if (i > 0) assert.ok(m[i]! > m[i - 1]!, `not strictly increasing at ${i}`);
    }
    assert.equal(m[127], 0);
    assert.equal(m[255], 1);
  });

  test("signed map: exact entries published by bitsandbytes (create_dynamic_map())", () => {
    const m = createDynamicMap(true);
    // float32 values printed from bitsandbytes' map; 137, 220, 234 and 236 depend on the fused
    // multiply-add in torch.linspace, the others on the float32 midpoint/scale arithmetic.
    const published: Record<number, number> = {
      0: -0.992968738079071,
      1: -0.9789062738418579,
      64: -0.09859374910593033,
      126: -5.500000384017767e-7,
      128: 5.500000384017767e-7,
      129: 3.250000190746505e-6,
      137: 0.0003812500217463821,
      138: 0.000493750034365803,
      220: 0.5148437023162842,
      234: 0.7117187976837158,
      236: 0.7398437261581421,
      254: 0.992968738079071,
    };
    for (const [i, v] of Object.entries(published)) assert.equal(m[Number(i)], Math.fround(v), `entry ${i}`);
    // Symmetric around index 127.
    for (let i = 0; i < 127; i++) assert.equal(m[i], -m[254 - i]!, `symmetry at ${i}`);
  });

  test("unsigned map: 0 at index 0, 1 at 255, 254 positive values matching the formula", () => {
    const m = createDynamicMap(false);
    const ref = dynamicFormula(false);
    assert.equal(m.length, 256);
    assert.equal(m[0], 0);
    assert.equal(m[255], 1);
    for (let i = 1; i < 256; i++) {
      assert.ok(m[i]! > 0);
      assert.ok(Math.abs(m[i]! - ref[i]!) <= ref[i]! * 2 ** -21, `entry ${i}: ${m[i]} vs ${ref[i]}`);
    }
  });

  test("fewer total bits pad with zeros; impossible layouts are rejected", () => {
    const m = createDynamicMap(true, 3, 4);
    assert.equal(m.length, 256);
    assert.equal(new Set(m).size, 16); // 14 nonzero + 0 + 1 (0 shared with the padding)
    assert.throws(() => createDynamicMap(true, 9, 8), { code: "PEFT_ERR_QUANT_SCHEME" });
    assert.throws(() => createDynamicMap(true, 7, 9), { code: "PEFT_ERR_QUANT_SCHEME" });
  });
});

/** Φ(x) by composite Simpson integration of the normal density (independent of normalQuantile). */
function normalCdf(x: number): number {
  const steps = 20000;
  const h = x / steps;
  const pdf = (t: number): number => Math.exp(-0.5 * t * t) / Math.sqrt(2 * Math.PI);
  let s = pdf(0) + pdf(x);
  for (let i = 1; i < steps; i++) s += (i % 2 ? 4 : 2) * pdf(i * h);
  return 0.5 + (s * h) / 3;
}

describe("NF4 / normal map", () => {
  test("NF4_CODE is the distinct values of create_normal_map()", () => {
    assert.deepEqual(Array.from(normalMapValues(createNormalMap())), Array.from(NF4_CODE));
    assert.equal(NF4_CODE.length, 16);
    assert.equal(NF4_CODE[0], -1);
    assert.equal(NF4_CODE[7], 0);
    assert.equal(NF4_CODE[15], 1);
  });

  test("NF4 values are normal quantiles at evenly spaced probabilities (independent integration)", () => {
    const offset = 0.9677083;
    const qmax = normalQuantile(offset);
    const pos = [offset, ...Array.from({ length: 7 }, (_, k) => offset - ((offset - 0.5) * (k + 1)) / 8)];
    const neg = Array.from({ length: 7 }, (_, k) => offset - ((offset - 0.5) * k) / 7);
    // Positive codes 15…8 ↔ pos[0…7]; negative codes 0…6 ↔ −quantile(neg[0…6]).
    for (let k = 0; k < 8; k++) assert.ok(Math.abs(normalCdf(NF4_CODE[15 - k]! * qmax) - pos[k]!) < 2e-7, `code ${15 - k}`);
    for (let k = 0; k < 7; k++) assert.ok(Math.abs(normalCdf(-NF4_CODE[k]! * qmax) - neg[k]!) < 2e-7, `code ${k}`);
  });

  test("normalQuantile agrees with integration and is odd", () => {
    for (const p of [0.6, 0.75, 0.9, 0.975, 0.999]) {
      const x = normalQuantile(p);
      assert.ok(Math.abs(normalCdf(x) - p) < 1e-10, `p=${p}`);
      assert.ok(Math.abs(normalQuantile(1 - p) + x) < 1e-12);
    }
    assert.throws(() => normalQuantile(1), { code: "PEFT_ERR_QUANT_SCHEME" });
  });

  test("symmetric normal map (use_extra_value=false) has 7 + 7 mirrored nonzero values", () => {
    const v = normalMapValues(createNormalMap(0.9677083, false));
    assert.equal(v.length, 15);
    for (let i = 0; i < 7; i++) assert.equal(v[i], -v[14 - i]!);
  });
});

describe("FP4 code book", () => {
  test("bit layout: sign bit 3, magnitudes 0, 0.0625, 8, 12, 4, 6, 2, 3 over 12", () => {
    const mags = [0, 0.0625, 8, 12, 4, 6, 2, 3];
    for (let c = 0; c < 8; c++) {
      assert.equal(FP4_CODE[c], Math.fround(mags[c]! / 12));
      assert.equal(FP4_CODE[c + 8], -FP4_CODE[c]!);
    }
    assert.equal(Math.max(...FP4_CODE), 1);
  });
});

describe("float32 helpers", () => {
  test("fmaF32 rounds once: a tie after float64 rounding is resolved by the exact sum", () => {
    const a = Math.fround(2 ** 5 * (1 + 2 ** -23));
    const b = Math.fround(1 - 2 ** -23);
    const c = Math.fround(2 ** 29 + 2 ** 6);
    // Exact a·b + c = c + 2^5 − 2^-41: just below the midpoint of c and c + 2^6, so it rounds to c,
    // while rounding the float64 sum (exactly the midpoint) would give the even neighbour c + 2^6.
    assert.equal(fmaF32(a, b, c), c);
    assert.equal(Math.fround(a * b + c), c + 2 ** 6);
    assert.equal(fmaF32(1.5, 2, 0.25), 3.25);
  });

  test("linspaceF32 hits both end points and is symmetric in construction", () => {
    const l = linspaceF32(0.1, 1, 9);
    assert.equal(l[0], Math.fround(0.1));
    assert.equal(l[8], 1);
    for (let i = 1; i < 9; i++) assert.ok(l[i]! > l[i - 1]!);
    assert.deepEqual(Array.from(linspaceF32(2, 2, 1)), [2]);
  });

  test("roundHalfEven", () => {
    assert.deepEqual([2.5, 3.5, -2.5, -1.5, 1.4, -0.6].map(roundHalfEven), [2, 4, -2, -2, 1, -1]);
  });

  test("codebookBounds are float32 midpoints", () => {
    const b = codebookBounds(NF4_CODE);
    assert.equal(b.length, 15);
    for (let i = 0; i < 15; i++) assert.equal(b[i], Math.fround(Math.fround(NF4_CODE[i]! + NF4_CODE[i + 1]!) / 2));
  });
});
