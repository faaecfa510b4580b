/**
 * Choosing the next token as transformers' `generate` does: the logits processors (repetition
 * penalty; OpenAI's presence and frequency penalties as vLLM applies them), then, when sampling,
 * the warpers in transformers' order — temperature, top-k, top-p, min-p — and a draw from the
 * softmax; greedy decoding takes the arg-max of the processed scores. Scores are float64.
 */
import { SamplingParamsError } from "../errors.js";
import type { GenerationConfig } from "../io/generation-config.js";
import { Rng } from "../util/rng.js";

/** transformers' generate() semantics; every field optional in requests (defaults: `DEFAULT_SAMPLING`). */
export interface SamplingParams {
  maxNewTokens: number;
  /** 0 means greedy. */
  temperature: number;
  /** Sample (true) or take the arg-max (false). */
  doSample: boolean;
  /** 0 = off */
  topK: number;
  /** 1 = off */
  topP: number;
  /** 0 = off */
  minP: number;
  /** 1 = off (transformers' multiplicative rule over prompt and output tokens) */
  repetitionPenalty: number;
  /** 0 = off (OpenAI: subtracted once from every token already generated) */
  presencePenalty: number;
  /** 0 = off (OpenAI: subtracted per occurrence in the output) */
  frequencyPenalty: number;
  /** Stop on these token ids (the model's eos ids are added unless `ignoreEos`). */
  stopTokenIds: number[];
  /** Stop when the text contains one of these (may span tokens); the stop text is not returned. */
  stopStrings: string[];
  ignoreEos: boolean;
  /** Same seed ⇒ same tokens. */
  seed?: number;
  /** Return each token's logprob and this many top alternatives. */
  logprobs?: number;
}

export const DEFAULT_SAMPLING: Readonly<SamplingParams> = {
  maxNewTokens: 16,
  temperature: 1,
  doSample: false,
  topK: 0,
  topP: 1,
  minP: 0,
  repetitionPenalty: 1,
  presencePenalty: 0,
  frequencyPenalty: 0,
  stopTokenIds: [],
  stopStrings: [],
  ignoreEos: false,
};

/** `p` over `defaults`, checked (a `SamplingParamsError` names the first bad field). */
export function resolveSampling(p: Partial<SamplingParams> = {}, defaults: Readonly<SamplingParams> = DEFAULT_SAMPLING): SamplingParams {
  const r: SamplingParams = { ...defaults, ...Object.fromEntries(Object.entries(p).filter(([, v]) => v !== undefined)) };
  const bad = (field: string, why: string): never => {
    throw new SamplingParamsError(field, (r as unknown as Record<string, unknown>)[field], why);
  };
  if (!Number.isInteger(r.maxNewTokens) || r.maxNewTokens < 1) bad("maxNewTokens", "must be an integer ≥ 1");
  if (!(Number.isFinite(r.temperature) && r.temperature >= 0)) bad("temperature", "must be a finite number ≥ 0");
  if (typeof r.doSample !== "boolean") bad("doSample", "must be true or false");
  if (!Number.isInteger(r.topK) || r.topK < 0) bad("topK", "must be an integer ≥ 0 (0 = off)");
  if (!(r.topP > 0 && r.topP <= 1)) bad("topP", "must be in (0, 1]");
  if (!(r.minP >= 0 && r.minP <= 1)) bad("minP", "must be in [0, 1]");
  if (!(Number.isFinite(r.repetitionPenalty) && r.repetitionPenalty > 0)) bad("repetitionPenalty", "must be a finite number > 0");
  if (!(r.presencePenalty >= -2 && r.presencePenalty <= 2)) bad("presencePenalty", "must be in [-2, 2] (OpenAI's range)");
  if (!(r.frequencyPenalty >= -2 && r.frequencyPenalty <= 2)) bad("frequencyPenalty", "must be in [-2, 2] (OpenAI's range)");
  if (!Array.isArray(r.stopTokenIds) || !r.stopTokenIds.every((t) => Number.isInteger(t) && t >= 0)) bad("stopTokenIds", "must be token ids (integers ≥ 0)");
  if (!Array.isArray(r.stopStrings) || !r.stopStrings.every((s) => typeof s === "string" && s.length > 0)) bad("stopStrings", "must be non-empty strings");
  if (typeof r.ignoreEos !== "boolean") bad("ignoreEos", "must be true or false");
  if (r.seed !== undefined && !(Number.isSafeInteger(r.seed) && r.seed >= 0)) bad("seed", "must be an integer ≥ 0");
  if (r.logprobs !== undefined && !(Number.isInteger(r.logprobs) && r.logprobs >= 0 && r.logprobs <= 20)) bad("logprobs", "must be an integer in [0, 20]");
  return r;
}

/**
 * The request defaults a model's `generation_config.json` sets (transformers reads the same
 * fields): max_new_tokens, do_sample, temperature, top_k, top_p, min_p, repetition_penalty,
 * stop_strings. Fields the file does not set keep the engine's defaults.
 */
export function samplingDefaultsFrom(c: GenerationConfig): Partial<SamplingParams> {
  const out: Partial<SamplingParams> = {};
  if (c.maxNewTokens !== undefined) out.maxNewTokens = c.maxNewTokens;
  if (c.doSample !== undefined) out.doSample = c.doSample;
  if (c.temperature !== undefined) out.temperature = c.temperature;
  if (c.topK !== undefined) out.topK = c.topK;
  if (c.topP !== undefined && c.topP > 0) out.topP = c.topP;
  if (c.minP !== undefined) out.minP = c.minP;
  if (c.repetitionPenalty !== undefined) out.repetitionPenalty = c.repetitionPenalty;
  if (c.stopStrings !== undefined) out.stopStrings = [...c.stopStrings];
  return out;
}

/** True when the parameters draw tokens at random (otherwise greedy). */
export function isSampling(p: SamplingParams): boolean {
  return p.doSample && p.temperature > 0;
}

/** What the penalties look at: every token of the prompt and the output so far. */
export interface TokenHistory {
  readonly promptIds: readonly number[];
  readonly outputIds: readonly number[];
}

/** The logits processors (penalties) as float64 scores; `logits` is left unchanged. */
export function applyPenalties(logits: Float32Array, p: SamplingParams, h: TokenHistory): Float64Array {
  const s = Float64Array.from(logits);
  if (p.repetitionPenalty !== 1) {
    const seen = new Set<number>([...h.promptIds, ...h.outputIds]);
    for (const t of seen) {
      if (t < 0 || t >= s.length) continue;
      const v = s[t]!;
      s[t] = v < 0 ? v * p.repetitionPenalty : v / p.repetitionPenalty;
    }
  }
  if (p.presencePenalty !== 0 || p.frequencyPenalty !== 0) {
    const counts = new Map<number, number>();
    for (const t of h.outputIds) counts.set(t, (counts.get(t) ?? 0) + 1);
    for (const [t, c] of counts) if (t >= 0 && t < s.length) s[t]! -= c * p.frequencyPenalty + p.presencePenalty;
  }
  return s;
}

function softmax(s: Float64Array): Float64Array {
  let max = -Infinity;
  for (const v of s) if (v > max) max = v;
  const e = new Float64Array(s.length);
  let sum = 0;
  for (let i = 0; i < s.length; i++) {
    const x = s[i]! === -Infinity ? 0 : Math.exp(s[i]! - max);
    e[i] = x;
    sum += x;
  }
  for (let i = 0; i < e.length; i++) e[i]! /= sum;
  return e;
}

/**
 * The warpers, in place: temperature, top-k (ties with the k-th score kept), top-p (drop the
 * lowest tokens whose cumulative probability is ≤ 1 − top_p, keeping at least one), min-p (drop
 * tokens below min_p × the top probability). Removed tokens get −∞.
 */
export function applyWarpers(s: Float64Array, p: SamplingParams): Float64Array {
  if (p.temperature !== 1 && p.temperature > 0) for (let i = 0; i < s.length; i++) s[i]! /= p.temperature;
  if (p.topK > 0 && p.topK < s.length) {
    const thr = kthLargest(s, p.topK);
    for (let i = 0; i < s.length; i++) if (s[i]! < thr) s[i] = -Infinity;
  }
  if (p.topP < 1) {
    const probs = softmax(s);
    // Tokens below eps = (1 − top_p)/V are removed whatever the others are: all tokens at or below
    // them weigh at most V·eps = 1 − top_p together. Only the rest is sorted (cumulated from the
    // removed mass), which is the same result as sorting the whole vocabulary.
    const eps = (1 - p.topP) / s.length;
    let cum = 0;
    const cand: number[] = [];
    for (let i = 0; i < s.length; i++) {
      if (probs[i]! < eps) {
        cum += probs[i]!;
        s[i] = -Infinity;
      } else cand.push(i);
    }
    cand.sort((a, b) => probs[a]! - probs[b]! || b - a); // ascending, as transformers sorts
    for (let j = 0; j < cand.length - 1; j++) {
      cum += probs[cand[j]!]!;
      if (cum <= 1 - p.topP) s[cand[j]!] = -Infinity;
      else break;
    }
  }
  if (p.minP > 0) {
    const probs = softmax(s);
    let top = 0;
    for (const v of probs) if (v > top) top = v;
    const best = argmax(s);
    for (let i = 0; i < s.length; i++) if (i !== best && probs[i]! < p.minP * top) s[i] = -Infinity;
  }
  return s;
}

/** The k-th largest value of `s` (quickselect on a copy). */
function kthLargest(s: Float64Array, k: number): number {
  const a = Float64Array.from(s);
  let lo = 0;
  let hi = a.length - 1;
  const want = k - 1; // index in descending order
  while (lo < hi) {
    const pivot = a[(lo + hi) >> 1]!;
    let i = lo;
    let j = hi;
    while (i <= j) {
      while (a[i]! > pivot) i++;
      while (a[j]! < pivot) j--;
      if (i <= j) {
        const t = a[i]!;
        a[i] = a[j]!;
        a[j] = t;
        i++;
        j--;
      }
    }
    if (want <= j) hi = j;
    else if (want >= i) lo = i;
    else break;
  }
  return a[want]!;
}

/** The processed distribution sampling draws from (after penalties and warpers). */
export function samplingDistribution(logits: Float32Array, p: SamplingParams, h: TokenHistory): Float64Array {
  return softmax(applyWarpers(applyPenalties(logits, p, h), p));
}

function argmax(s: Float64Array): number {
  let best = 0;
  for (let i = 1; i < s.length; i++) if (s[i]! > s[best]!) best = i;
  return best;
}

/** Picks the next token: arg-max of the penalised scores, or a draw from `samplingDistribution` with `rng`. */
export function nextToken(logits: Float32Array, p: SamplingParams, h: TokenHistory, rng: Rng | null): number {
  if (!isSampling(p) || !rng) return argmax(applyPenalties(logits, p, h));
  const probs = samplingDistribution(logits, p, h);
  const u = rng.uniform();
  let cum = 0;
  let last = 0;
  for (let i = 0; i < probs.length; i++) {
    if (probs[i]! <= 0) continue;
    last = i;
    cum += probs[i]!;
    if (u < cum) return i;
  }
  return last; // rounding left u above the total
}

/** log-softmax of the raw logits (vLLM's default: logprobs of the model's distribution). */
export function logSoftmax(logits: Float32Array): Float64Array {
  let max = -Infinity;
  for (const v of logits) if (v > max) max = v;
  let sum = 0;
  for (const v of logits) sum += Math.exp(v - max);
  const lse = max + Math.log(sum);
  return Float64Array.from(logits, (v) => v - lse);
}

/** The `n` most likely tokens of `lp` with their logprobs (ties: lower id first). */
export function topLogprobs(lp: Float64Array, n: number): { tokenId: number; logprob: number }[] {
  if (n === 0) return [];
  const thr = kthLargest(lp, Math.min(n, lp.length));
  const ids: number[] = [];
  for (let i = 0; i < lp.length; i++) if (lp[i]! >= thr) ids.push(i);
  return ids
    .sort((a, b) => lp[b]! - lp[a]! || a - b)
    .slice(0, n)
    .map((i) => ({ tokenId: i, logprob: lp[i]! }));
}

/** A request's random stream: seeded when `seed` is given, otherwise from a random seed. */
export function samplerRng(seed: number | undefined): Rng {
  return new Rng(seed ?? Math.floor(Math.random() * 2 ** 52));
}
