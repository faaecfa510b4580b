/**
 * Layers built from primitive ops, so their gradients come from the primitives' rules:
 * activations, RMSNorm, losses, dropout.
 */
import { GraphBuildError } from "../errors.js";
import * as G from "./api.js";
import type { Value } from "./types.js";

/** GELU with the exact erf form (transformers `gelu`). */
export function gelu(x: Value): Value {
  return G.mul(G.mul(x, 0.5), G.add(G.erf(G.mul(x, Math.SQRT1_2)), 1));
}

/**
 * GELU, tanh approximation (transformers `gelu_new`, `gelu_pytorch_tanh`):
 * 0.5·x·(1 + tanh(a)) with a = √(2/π)·(x + 0.044715·x³), computed as x·σ(2a) (the same function:
 * 0.5·(1 + tanh(a)) = σ(2a)). The gradient is the closed form
 * σ(2a)·(1 + x·(2a)′·(1 − σ(2a))), (2a)′ = c₀ + 3·c₁·x²: 8 elementwise passes in the backward
 * graph instead of the 15 that differentiating the forward ops gives.
 */
export function geluTanh(x: Value): Value {
  const c0 = 2 * Math.sqrt(2 / Math.PI);
  const c1 = c0 * 0.044715;
  // float16: the cubic term overflows for |x| ≳ 40 (x = 100: (2a)′·x ≈ 2·10⁵ > 65504), and
  // ∞·(1 − σ) = ∞·0 is NaN in the gradient. Beyond |x| = 10, σ(2a) is 0 or 1 in float16 anyway
  // (|2a| > 87), so the polynomial is evaluated on x clipped to [−10, 10]: the same values and
  // gradient, without the overflow. float32/float64 graphs are unchanged.
  const xp = isHalf(x) ? G.minimum(G.maximum(x, -10), 10) : x;
  const x2 = G.mul(xp, xp);
  const s = G.sigmoid(G.mul(G.add(G.mul(x2, c1), c0), xp));
  return x.graph.customGradient(G.mul(x, s), [x], (dy) => {
    const xdz = G.mul(G.add(G.mul(x2, 3 * c1), c0), xp);
    return [G.mul(dy, G.mul(s, G.add(G.mul(xdz, G.sub(1, s)), 1)))];
  });
}

/** SiLU / swish: x·σ(x). */
export function silu(x: Value): Value {
  return G.mul(x, G.sigmoid(x));
}

/** Activation by name: transformers' `hidden_act` names and their normalised forms (`gelu_tanh`). */
export function activation(name: string, x: Value): Value {
  switch (name) {
    case "gelu":
    case "gelu_python":
      return gelu(x);
    case "gelu_tanh":
    case "gelu_new":
    case "gelu_pytorch_tanh":
    case "gelu_fast":
      return geluTanh(x);
    case "quick_gelu":
      return G.mul(x, G.sigmoid(G.mul(x, 1.702)));
    case "silu":
    case "swish":
      return silu(x);
    case "relu":
      return G.relu(x);
    case "tanh":
      return G.tanh(x);
    case "sigmoid":
      return G.sigmoid(x);
    default:
      throw new GraphBuildError("activation", `unknown activation '${name}'`);
  }
}

/** float16 / bfloat16: the dtypes whose statistics and losses are computed in float32. */
export function isHalf(x: Value): boolean {
  return x.dtype === "float16" || x.dtype === "bfloat16";
}

/**
 * Llama RMSNorm: x / sqrt(mean(x²) + eps) · weight. A float16 input is normalised in float32 and
 * cast back before the weight is applied, as transformers' `LlamaRMSNorm` does (x² of a float16
 * activation above 256 would overflow).
 */
export function rmsNorm(x: Value, weight: Value, eps: number): Value {
  const xs = isHalf(x) ? G.cast(x, "float32") : x;
  const ms = G.reduceMean(G.mul(xs, xs), [-1]);
  const normed = G.mul(xs, G.reciprocal(G.sqrt(G.add(ms, eps))));
  return G.mul(G.cast(normed, x.dtype), weight);
}

/** y = x·Wᵀ + b for a PyTorch `nn.Linear` weight W of shape [out, in]. */
export function linear(x: Value, weight: Value, bias: Value | null): Value {
  return dense(x, weight, bias, { transB: true });
}

/**
 * alpha·x·op(W) (+ c) over the last axis of x, for a 2-D weight W ([in, out], or [out, in] with
 * `transB`), as one Gemm on x viewed as [rows, in]: the bias or residual `c` (broadcastable to
 * [rows, out]) is accumulated by the Gemm instead of a separate pass, and onnxruntime pre-packs a
 * constant W in either layout, so no transposed copy of W is made for the backward product.
 */
export function dense(x: Value, weight: Value, c: Value | null, opts: { transB: boolean; alpha?: number }): Value {
  if (weight.rank !== 2) throw new GraphBuildError("dense", `weight must be 2-D, got rank ${weight.rank}`);
  if (x.rank < 2) throw new GraphBuildError("dense", `input must have rank ≥ 2, got ${x.rank}`);
  const inF = weight.shape[opts.transB ? 1 : 0];
  const outF = weight.shape[opts.transB ? 0 : 1];
  if (typeof inF !== "number" || typeof outF !== "number") throw new GraphBuildError("dense", "the weight's dims must be static");
  const gemmOpts = { transB: opts.transB, ...(opts.alpha !== undefined && opts.alpha !== 1 ? { alpha: opts.alpha } : {}) };
  if (x.rank === 2) return G.gemm(x, weight, c && c.rank > 2 ? G.reshape(c, [-1, outF]) : c, gemmOpts);
  const c2 = c && c.rank > 2 ? G.reshape(c, [-1, outF]) : c;
  const y = G.gemm(G.reshape(x, [-1, inF]), weight, c2, gemmOpts);
  return G.reshape(y, G.shapeTensor(x, outF));
}

/**
 * Mean cross-entropy over rows of `logits` [N, C] with integer `labels` [N]; rows whose label
 * equals `ignoreIndex` count neither in the sum nor in the mean (PyTorch semantics; 0 when every
 * row is ignored). One ONNX `SoftmaxCrossEntropyLoss` node (reduction "none") gives the per-row
 * losses; its gradient is softmax − one-hot, formed in three passes over [N, C].
 */
export function crossEntropy(logits: Value, labels: Value, ignoreIndex = -100): Value {
  if (logits.rank !== 2 || labels.rank !== 1) throw new GraphBuildError("crossEntropy", "expects logits [N, C] and labels [N]");
  const [rows] = logits.graph.op("SoftmaxCrossEntropyLoss", [logits, labels], { reduction: "none", ignore_index: ignoreIndex });
  const count = G.maximum(G.sumAll(G.cast(G.not(G.equal(labels, ignoreIndex)), logits.dtype)), 1);
  return G.div(G.sumAll(rows!), count);
}

/**
 * Causal-LM loss without copying the logits: position t of `logits` [B, T, V] is scored against
 * `labels` [B, S] at t − prefix + 1 (T = prefix + S), i.e. transformers' shift
 * `logits[:, prefix:-1]` vs `labels[:, 1:]`, with the labels shifted instead: they are padded with
 * `ignoreIndex` to T positions (the prefix and the last position count nowhere). Same value and
 * gradient as slicing the logits, minus a [B, T−1, V] copy forward and its Pad backward.
 */
export function nextTokenCrossEntropy(logits: Value, labels: Value, prefix = 0, ignoreIndex = -100): Value {
  if (logits.rank !== 3 || labels.rank !== 2) throw new GraphBuildError("nextTokenCrossEntropy", "expects logits [B, T, V] and labels [B, S]");
  const vocab = logits.shape[2];
  if (typeof vocab !== "number") throw new GraphBuildError("nextTokenCrossEntropy", "vocabulary size must be static");
  const shifted = G.pad(G.slice(labels, [1], [Number.MAX_SAFE_INTEGER], [1]), [0, prefix, 0, 1], ignoreIndex);
  return crossEntropy(G.reshape(logits, [-1, vocab]), G.reshape(shifted, [-1]), ignoreIndex);
}

/** Inverted dropout with keep probability 1−p (training graphs only). */
export function dropout(x: Value, p: number, seed: number): Value {
  if (p <= 0) return x;
  if (p >= 1) throw new GraphBuildError("dropout", `p must be < 1, got ${p}`);
  // float16 inputs draw float32 uniforms: float16 has only 2¹⁰ steps in [0.5, 1)
  const keep = G.less(G.randomUniformLike(x, seed, isHalf(x) ? "float32" : x.dtype), 1 - p);
  return G.where(keep, G.div(x, 1 - p), 0);
}
