/**
 * The bitsandbytes code books: the 8-bit dynamic map (`create_dynamic_map`), the NormalFloat
 * map (`create_normal_map`, whose 16 non-padding values are NF4) and FP4 (`get_4bit_type("fp4")`).
 * Every value is the float32 that bitsandbytes produces, bit for bit.
 */
import { QuantSchemeError } from "../../errors.js";
import { linspaceF32 } from "./float32.js";

/** `10 ** e` for the exponents the dynamic map uses, as correctly rounded float64 literals (as Python computes them). */
const POW10: Record<number, number> = {
  [-7]: 1e-7, [-6]: 1e-6, [-5]: 1e-5, [-4]: 1e-4, [-3]: 1e-3, [-2]: 1e-2, [-1]: 1e-1, [0]: 1,
};

function pow10(e: number): number {
  return POW10[e] ?? Number(`1e${e}`);
}

/**
 * bitsandbytes' dynamic quantisation map (Dettmers 2015, "8-Bit Approximations for Parallelism
 * in Deep Learning"): for each decade 10^(i−6), i = 0…6, the midpoints of an even split of
 * [0.1, 1] (2^i intervals signed, 2^(i+1) unsigned), scaled to that decade; plus 0 and 1, sorted.
 * Signed: 127 negative values (the most negative is −0.99296875, not −1), 0 at index 127, 1 at 255.
 * Unsigned: 254 positive values, 0 at index 0, 1 at index 255.
 *
 * `maxExponentBits`/`totalBits` generalise the map exactly as bitsandbytes does (defaults 7 and 8;
 * fewer total bits pad the 256-entry map with zeros).
 */
export function createDynamicMap(signed = true, maxExponentBits = 7, totalBits = 8): Float32Array {
  if (!Number.isInteger(totalBits) || totalBits < 2 || totalBits > 8) {
    throw new QuantSchemeError("dynamic", "totalBits", totalBits, "must be an integer in [2, 8]");
  }
  const nonSignBits = totalBits - 1;
  if (!Number.isInteger(maxExponentBits) || maxExponentBits < 1 || maxExponentBits > nonSignBits) {
    throw new QuantSchemeError("dynamic", "maxExponentBits", maxExponentBits, `must be an integer in [1, ${nonSignBits}]`);
  }
  const data: number[] = [];
  const pushDecade = (decade: number, items: number): void => {
    const b = linspaceF32(0.1, 1, items);
    const scale = Math.fround(pow10(decade));
    for (let j = 0; j + 1 < b.length; j++) {
      const mean = Math.fround(Math.fround(b[j]! + b[j + 1]!) / 2);
      data.push(Math.fround(scale * mean));
      if (signed) data.push(Math.fround(-scale * mean));
    }
  };
  const additional = 2 ** (nonSignBits - maxExponentBits) - 1;
  for (let i = 0; i < maxExponentBits; i++) {
    const items = signed ? 2 ** (i + nonSignBits - maxExponentBits) + 1 : 2 ** (i + nonSignBits - maxExponentBits + 1) + 1;
    pushDecade(-(maxExponentBits - 1) + i, items);
  }
  // bitsandbytes reuses its loop variable here, whose value after the loop is maxExponentBits − 1,
  // so the extra items land in the top decade (10^0).
  if (additional > 0) pushDecade(0, additional + 1);
  data.push(0, 1);
  if (data.length !== 2 ** totalBits) {
    throw new QuantSchemeError(
      "dynamic",
      "maxExponentBits",
      maxExponentBits,
      `gives ${data.length} values for ${totalBits} bits but bitsandbytes requires exactly ${2 ** totalBits}; choose a layout create_dynamic_map accepts (the default is 7 exponent bits, 8 total)`,
    );
  }
  while (data.length < 256) data.push(0);
  data.sort((a, b) => a - b);
  return Float32Array.from(data);
}

/**
 * Φ⁻¹(p), the standard normal quantile (`scipy.stats.norm.ppf`), to float64 precision: Newton
 * steps on Φ(x) − ½ = φ(x)·Σ x^(2n+1)/(2n+1)!!, a series of positive terms (no cancellation).
 */
export function normalQuantile(p: number): number {
  if (!(p > 0 && p < 1)) {
    throw new QuantSchemeError("normal map", "quantile", p, "must be strictly between 0 and 1");
  }
  if (p < 0.5) return -normalQuantile(1 - p);
  const target = p - 0.5; // exact for p in [0.5, 1)
  let x = 0;
  for (let iter = 0; iter < 200; iter++) {
    const pdf = Math.exp(-0.5 * x * x) / Math.sqrt(2 * Math.PI);
    let term = x;
    let sum = x;
    const x2 = x * x;
    for (let n = 1; n < 2000 && term > sum * 1e-18; n++) {
      term *= x2 / (2 * n + 1);
      sum += term;
    }
    const step = (target - pdf * sum) / pdf;
    x += step;
    if (Math.abs(step) <= Math.abs(x) * 1e-17) break;
  }
  return x;
}

/**
 * bitsandbytes' `create_normal_map(offset, use_extra_value)`: normal quantiles at evenly spaced
 * probabilities from `offset` down to ½ (9 positive and 8 negative with the extra value, else
 * 8 and 8), zero padding to 256 entries, sorted and divided by the largest. The default gives
 * the QLoRA NF4 values ({@link NF4_CODE}) at indices 0–6, a run of zeros, and 248–255;
 * {@link normalMapValues} gives the compact 16-value list.
 */
export function createNormalMap(offset = 0.9677083, useExtraValue = true): Float32Array {
  if (!(offset > 0.5 && offset < 1)) {
    throw new QuantSchemeError("normal map", "offset", offset, "must be in (0.5, 1)");
  }
  const pos = linspaceF32(offset, 0.5, useExtraValue ? 9 : 8);
  const neg = linspaceF32(offset, 0.5, 8);
  const values: number[] = [];
  for (let i = 0; i + 1 < pos.length; i++) values.push(Math.fround(normalQuantile(pos[i]!)));
  for (let i = 0; i + 1 < neg.length; i++) values.push(Math.fround(-normalQuantile(neg[i]!)));
  const padding = 256 - values.length;
  for (let i = 0; i < padding; i++) values.push(0);
  values.sort((a, b) => a - b);
  const max = values[values.length - 1]!;
  return Float32Array.from(values, (v) => Math.fround(v / max));
}

/** The distinct values of a zero-padded 256-entry map (such as {@link createNormalMap}'s), sorted. */
export function normalMapValues(map: Float32Array): Float32Array {
  return Float32Array.from(new Set(map)).sort();
}

/**
 * NF4, the QLoRA NormalFloat code book (`get_4bit_type("nf4")`, equal to the distinct values of
 * `create_normal_map()`), indexed by the 4-bit code.
 */
export const NF4_CODE: Float32Array = Float32Array.from([
  -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
  -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
  0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
  0.7229568362236023, 1.0,
]);

/**
 * FP4 (1 sign, 2 exponent, 1 mantissa bit, bias 2), indexed by the 4-bit code: bit 3 is the
 * sign, bits 0–2 give 0, 0.0625, 8, 12, 4, 6, 2, 3, all divided by 12 in float32
 * (`get_4bit_type("fp4")`). Code 8 is −0.
 */
export const FP4_CODE: Float32Array = Float32Array.from(
  [0, 0.0625, 8, 12, 4, 6, 2, 3, -0, -0.0625, -8, -12, -4, -6, -2, -3],
  (v) => Math.fround(v / 12),
);

/**
 * The decision boundaries of a sorted code book: (c[i] + c[i+1]) / 2 in float32, as the
 * reference kernel computes them. A value goes to code i when bounds[i−1] < x ≤ bounds[i].
 */
export function codebookBounds(sorted: Float32Array): Float32Array {
  const out = new Float32Array(Math.max(0, sorted.length - 1));
  for (let i = 0; i < out.length; i++) out[i] = Math.fround(Math.fround(sorted[i]! + sorted[i + 1]!) / 2);
  return out;
}
