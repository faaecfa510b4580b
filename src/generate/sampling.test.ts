import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { SamplingParamsError } from "../errors.js";
import { Rng } from "../util/rng.js";
import { applyPenalties, nextToken, resolveSampling, samplingDistribution } from "./sampling.js";

const L = Float32Array.of(1, 2, 3, 4);
const none = { promptIds: [], outputIds: [] };
const sample = (p: Parameters<typeof resolveSampling>[0]) => resolveSampling({ doSample: true, ...p });

/** softmax of `xs` with −∞ for removed entries. */
function softmax(xs: number[]): number[] {
  const m = Math.max(...xs);
  const e = xs.map((x) => (x === -Infinity ? 0 : Math.exp(x - m)));
  const s = e.reduce((a, b) => a + b, 0);
  return e.map((x) => x / s);
}

function close(got: Float64Array, want: number[], tol = 1e-12): void {
  assert.equal(got.length, want.length);
  want.forEach((w, i) => assert.ok(Math.abs(got[i]! - w) <= tol, `p[${i}] = ${got[i]}, want ${w}`));
}

describe("sampling as transformers' generate", () => {
  test("temperature divides the logits", () => {
    close(samplingDistribution(L, sample({ temperature: 2 }), none), softmax([0.5, 1, 1.5, 2]));
  });

  test("top-k keeps the k highest scores (ties with the k-th kept)", () => {
    close(samplingDistribution(L, sample({ topK: 2 }), none), softmax([-Infinity, -Infinity, 3, 4]));
    close(samplingDistribution(Float32Array.of(1, 3, 3, 4), sample({ topK: 2 }), none), softmax([-Infinity, 3, 3, 4]));
  });

  test("top-p drops the least likely tokens whose cumulative mass is ≤ 1 − top_p", () => {
    // probabilities 0.032, 0.087, 0.237, 0.644; ascending cumulative 0.032, 0.119, 0.356, 1
    close(samplingDistribution(L, sample({ topP: 0.7 }), none), softmax([-Infinity, -Infinity, 3, 4]));
    close(samplingDistribution(L, sample({ topP: 0.5 }), none), [0, 0, 0, 1]);
    close(samplingDistribution(L, sample({ topP: 0.9 }), none), softmax([-Infinity, 2, 3, 4]));
  });

  test("min-p drops tokens below min_p × the top probability", () => {
    close(samplingDistribution(L, sample({ minP: 0.2 }), none), softmax([-Infinity, -Infinity, 3, 4])); // threshold 0.129
    close(samplingDistribution(L, sample({ minP: 0.1 }), none), softmax([-Infinity, 2, 3, 4])); // threshold 0.064
  });

  test("warpers compose in transformers' order: temperature, then top-k, then top-p", () => {
    // T = 0.5: scores 2, 4, 6, 8 → probabilities 0.0021, 0.0158, 0.117, 0.865; top-k 3 drops token 0; top-p 0.8 keeps token 3 only
    close(samplingDistribution(L, sample({ temperature: 0.5, topK: 3, topP: 0.8 }), none), [0, 0, 0, 1]);
    close(samplingDistribution(L, sample({ temperature: 0.5, topK: 3, topP: 0.9 }), none), softmax([-Infinity, -Infinity, 6, 8]));
  });

  test("repetition penalty (transformers: negative scores × p, positive ÷ p, over prompt and output) and presence/frequency penalties (output only)", () => {
    const rep = applyPenalties(Float32Array.of(-1, 2, 3, 4), resolveSampling({ repetitionPenalty: 2 }), { promptIds: [0], outputIds: [3, 3] });
    close(rep, [-2, 2, 3, 2]);
    const pf = applyPenalties(Float32Array.of(1, 2, 3, 4), resolveSampling({ presencePenalty: 0.5, frequencyPenalty: 0.25 }), { promptIds: [3], outputIds: [1, 1, 2] });
    close(pf, [1, 1, 2.25, 4]);
    // greedy takes the arg-max after the penalties
    assert.equal(nextToken(Float32Array.of(1, 2, 3, 4), resolveSampling({ repetitionPenalty: 3 }), { promptIds: [3], outputIds: [] }, null), 2);
  });

  test("draws follow the distribution, and the same seed gives the same draws", () => {
    const p = sample({ temperature: 1.3, topK: 3 });
    const want = samplingDistribution(L, p, none);
    const rng = new Rng(11);
    const counts = [0, 0, 0, 0];
    const n = 20000;
    const draws: number[] = [];
    for (let i = 0; i < n; i++) {
      const t = nextToken(L, p, none, rng);
      counts[t]!++;
      if (i < 50) draws.push(t);
    }
    counts.forEach((c, i) => assert.ok(Math.abs(c / n - want[i]!) < 0.012, `token ${i}: ${c / n} vs ${want[i]}`));
    assert.equal(counts[0], 0);
    const again = new Rng(11);
    assert.deepEqual(Array.from({ length: 50 }, () => nextToken(L, p, none, again)), draws);
  });

  test("greedy when doSample is false or the temperature is 0", () => {
    assert.equal(nextToken(L, resolveSampling({ temperature: 5 }), none, new Rng(1)), 3);
    assert.equal(nextToken(L, resolveSampling({ doSample: true, temperature: 0 }), none, new Rng(1)), 3);
  });

  test("out-of-range parameters are SamplingParamsError naming the field", () => {
    for (const [field, value] of [["topP", 1.5], ["temperature", -1], ["topK", 1.5], ["minP", 2], ["repetitionPenalty", 0], ["presencePenalty", 3], ["maxNewTokens", 0], ["logprobs", 21], ["seed", -1]] as const) {
      assert.throws(() => resolveSampling({ [field]: value }), (e: unknown) => e instanceof SamplingParamsError && e.field === field && e.code === "PEFT_ERR_SAMPLING_PARAMS");
    }
  });
});
