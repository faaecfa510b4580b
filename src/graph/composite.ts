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

/** GELU, tanh approximation (transformers `gelu_new`, `gelu_pytorch_tanh`). */
export function geluTanh(x: Value): Value {
  const inner = G.mul(G.add(x, G.mul(G.pow(x, 3), 0.044715)), Math.sqrt(2 / Math.PI));
  return G.mul(G.mul(x, 0.5), G.add(G.tanh(inner), 1));
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

/** Llama RMSNorm: x / sqrt(mean(x²) + eps) · weight. */
export function rmsNorm(x: Value, weight: Value, eps: number): Value {
  const ms = G.reduceMean(G.mul(x, x), [-1]);
  return G.mul(G.mul(x, G.reciprocal(G.sqrt(G.add(ms, eps)))), weight);
}

/** y = x·Wᵀ + b for a PyTorch `nn.Linear` weight W of shape [out, in]. */
export function linear(x: Value, weight: Value, bias: Value | null): Value {
  const y = G.matmul(x, G.transpose(weight, [1, 0]));
  return bias ? G.add(y, bias) : y;
}

/**
 * Mean cross-entropy over rows of `logits` [N, C] with integer `labels` [N]; rows whose label
 * equals `ignoreIndex` count neither in the sum nor in the mean (PyTorch semantics).
 */
export function crossEntropy(logits: Value, labels: Value, ignoreIndex = -100): Value {
  if (logits.rank !== 2 || labels.rank !== 1) throw new GraphBuildError("crossEntropy", "expects logits [N, C] and labels [N]");
  const lp = G.logSoftmax(logits, -1);
  const valid = G.not(G.equal(labels, ignoreIndex));
  const safe = G.where(valid, labels, 0);
  const picked = G.squeeze(G.gatherElements(lp, G.unsqueeze(safe, [1]), 1), [1]);
  const w = G.cast(valid, logits.dtype);
  const total = G.sumAll(G.mul(picked, w));
  const count = G.maximum(G.sumAll(w), 1);
  return G.neg(G.div(total, count));
}

/** Inverted dropout with keep probability 1−p (training graphs only). */
export function dropout(x: Value, p: number, seed: number): Value {
  if (p <= 0) return x;
  if (p >= 1) throw new GraphBuildError("dropout", `p must be < 1, got ${p}`);
  const keep = G.less(G.randomUniformLike(x, seed), 1 - p);
  return G.where(keep, G.div(x, 1 - p), 0);
}
