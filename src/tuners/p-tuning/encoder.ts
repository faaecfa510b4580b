/**
 * P-tuning's prompt encoder (PEFT `PromptEncoder`): an embedding of the virtual tokens
 * reparameterised by an MLP (Linear → ReLU → Linear → ReLU → Linear, `mlp_head.{0,2,4}`) or by a
 * bidirectional LSTM (`lstm_head`, `encoder_num_layers` layers, gates i, f, g, o as PyTorch)
 * followed by Linear → ReLU → Linear (`mlp_head.{0,2}`). The same math twice: as graph ops (for
 * training; the LSTM unrolled over the virtual tokens) and on the host in float64 (for the
 * `prompt_embeddings` PEFT saves: the encoder's output).
 */
import * as G from "../../graph/api.js";
import { dropout, linear } from "../../graph/composite.js";
import type { Value } from "../../graph/types.js";
import type { Tensor } from "../../tensor.js";
import { f64, hostLinear, hostRelu, torchEmbeddingInit, torchLinearInit } from "../common/prompt-learning.js";

export type EncoderType = "MLP" | "LSTM";

export interface EncoderShape {
  readonly type: EncoderType;
  /** Virtual tokens. */
  readonly n: number;
  /** Token (embedding) width: the encoder's input and output width. */
  readonly dim: number;
  /** `encoder_hidden_size`. */
  readonly hidden: number;
  /** LSTM layers (`encoder_num_layers`); the MLP always has PEFT's three linear layers. */
  readonly layers: number;
}

/** Tensor keys live under `prompt_encoder.` as in PEFT's module tree (without the adapter name). */
export const ENCODER_PREFIX = "prompt_encoder.";
const k = (name: string): string => ENCODER_PREFIX + name;

const lstmKeys = (layer: number, reverse: boolean) => {
  const s = `_l${layer}${reverse ? "_reverse" : ""}`;
  return { wih: k(`lstm_head.weight_ih${s}`), whh: k(`lstm_head.weight_hh${s}`), bih: k(`lstm_head.bias_ih${s}`), bhh: k(`lstm_head.bias_hh${s}`) };
};

/** The encoder's parameters and their shapes, PyTorch layouts (`nn.Linear` [out, in], `nn.LSTM` [4·hidden, in]). */
export function encoderShapes(s: EncoderShape): Map<string, readonly number[]> {
  const m = new Map<string, readonly number[]>([[k("embedding.weight"), [s.n, s.dim]]]);
  const lin = (name: string, out: number, inn: number) => {
    m.set(k(`${name}.weight`), [out, inn]);
    m.set(k(`${name}.bias`), [out]);
  };
  if (s.type === "MLP") {
    lin("mlp_head.0", s.hidden, s.dim);
    lin("mlp_head.2", s.hidden, s.hidden);
    lin("mlp_head.4", s.dim, s.hidden);
  } else {
    for (let l = 0; l < s.layers; l++) {
      for (const rev of [false, true]) {
        const key = lstmKeys(l, rev);
        m.set(key.wih, [4 * s.hidden, l === 0 ? s.dim : 2 * s.hidden]);
        m.set(key.whh, [4 * s.hidden, s.hidden]);
        m.set(key.bih, [4 * s.hidden]);
        m.set(key.bhh, [4 * s.hidden]);
      }
    }
    lin("mlp_head.0", 2 * s.hidden, 2 * s.hidden);
    lin("mlp_head.2", s.dim, 2 * s.hidden);
  }
  return m;
}

/** PyTorch's initialisation: embedding N(0, 1), linear layers Kaiming-uniform, LSTM weights uniform in ±1/√hidden. */
export function initEncoder(s: EncoderShape, rng: { uniform(): number; normal(): number }): Map<string, Tensor> {
  const out = new Map<string, Tensor>();
  for (const [key, shape] of encoderShapes(s)) {
    if (key === k("embedding.weight")) out.set(key, torchEmbeddingInit(s.n, s.dim, rng));
    else if (key.includes("lstm_head.")) {
      const bound = 1 / Math.sqrt(s.hidden);
      const n = shape.reduce((a, b) => a * b, 1);
      out.set(key, { dtype: "float32", shape, data: Float32Array.from({ length: n }, () => (rng.uniform() * 2 - 1) * bound) });
    } else if (key.endsWith(".weight")) {
      const lin = torchLinearInit(shape[0]!, shape[1]!, rng);
      out.set(key, lin.weight);
      out.set(key.replace(/\.weight$/u, ".bias"), lin.bias);
    }
  }
  return out;
}

// ---------------------------------------------------------------- graph form

/** The virtual-token embeddings [n, dim] the encoder produces, as graph ops over `param`. */
export function encoderGraph(s: EncoderShape, param: (key: string) => Value, drop: { p: number; seed: () => number } | null): Value {
  const e = param(k("embedding.weight"));
  const lin = (x: Value, name: string) => linear(x, param(k(`${name}.weight`)), param(k(`${name}.bias`)));
  if (s.type === "MLP") return lin(G.relu(lin(G.relu(lin(e, "mlp_head.0")), "mlp_head.2")), "mlp_head.4");
  let x = e;
  for (let l = 0; l < s.layers; l++) {
    // PyTorch applies the LSTM's dropout to every layer's output but the last, in training
    if (l > 0 && drop && drop.p > 0) x = dropout(x, drop.p, drop.seed());
    x = G.concat([lstmDirection(s, x, l, false, param), lstmDirection(s, x, l, true, param)], 1);
  }
  return lin(G.relu(lin(x, "mlp_head.0")), "mlp_head.2");
}

/** One direction of one LSTM layer over x [n, in], unrolled: hidden states [n, hidden] in time order. */
function lstmDirection(s: EncoderShape, x: Value, layer: number, reverse: boolean, param: (key: string) => Value): Value {
  const key = lstmKeys(layer, reverse);
  const h = s.hidden;
  // input contributions of every step at once: x·W_ihᵀ + b_ih + b_hh  [n, 4h]
  const pre = G.add(linear(x, param(key.wih), param(key.bih)), param(key.bhh));
  const whh = param(key.whh);
  let hPrev: Value | null = null;
  let cPrev: Value | null = null;
  const outs: Value[] = new Array<Value>(s.n);
  for (let i = 0; i < s.n; i++) {
    const t = reverse ? s.n - 1 - i : i;
    let gates = G.slice(pre, [t], [t + 1], [0]); // [1, 4h]
    if (hPrev) gates = G.add(gates, linear(hPrev, whh, null));
    const [gi, gf, gg, go] = G.split(gates, [h, h, h, h], 1);
    const ig = G.mul(G.sigmoid(gi!), G.tanh(gg!));
    const c: Value = cPrev ? G.add(G.mul(G.sigmoid(gf!), cPrev), ig) : ig;
    const hh: Value = G.mul(G.sigmoid(go!), G.tanh(c));
    outs[t] = hh;
    hPrev = hh;
    cPrev = c;
  }
  return G.concat(outs, 0);
}

// ---------------------------------------------------------------- host form

const sigmoid = (v: number): number => 1 / (1 + Math.exp(-v));

/** The encoder's output [n, dim] from its tensors, in float64 on the host (PEFT saves this as `prompt_embeddings`). */
export function encoderOutput(s: EncoderShape, tensors: ReadonlyMap<string, Tensor>): Float64Array {
  const t = (name: string) => tensors.get(k(name))!;
  const lin = (x: Float64Array, rows: number, name: string) => hostLinear(x, rows, t(`${name}.weight`), t(`${name}.bias`));
  const e = f64(t("embedding.weight"));
  if (s.type === "MLP") return lin(hostRelu(lin(hostRelu(lin(e, s.n, "mlp_head.0")), s.n, "mlp_head.2")), s.n, "mlp_head.4");
  let x = e;
  for (let l = 0; l < s.layers; l++) {
    const fwd = hostLstmDirection(s, x, l, false, tensors);
    const bwd = hostLstmDirection(s, x, l, true, tensors);
    const h = s.hidden;
    const next = new Float64Array(s.n * 2 * h);
    for (let i = 0; i < s.n; i++) {
      next.set(fwd.subarray(i * h, (i + 1) * h), i * 2 * h);
      next.set(bwd.subarray(i * h, (i + 1) * h), i * 2 * h + h);
    }
    x = next;
  }
  return lin(hostRelu(lin(x, s.n, "mlp_head.0")), s.n, "mlp_head.2");
}

function hostLstmDirection(s: EncoderShape, x: Float64Array, layer: number, reverse: boolean, tensors: ReadonlyMap<string, Tensor>): Float64Array {
  const key = lstmKeys(layer, reverse);
  const h = s.hidden;
  const pre = hostLinear(x, s.n, tensors.get(key.wih)!, tensors.get(key.bih)!);
  const bhh = f64(tensors.get(key.bhh)!);
  const whh = f64(tensors.get(key.whh)!);
  const out = new Float64Array(s.n * h);
  let hPrev = new Float64Array(h);
  let cPrev = new Float64Array(h);
  for (let i = 0; i < s.n; i++) {
    const t = reverse ? s.n - 1 - i : i;
    const gates = new Float64Array(4 * h);
    for (let r = 0; r < 4 * h; r++) {
      let v = pre[t * 4 * h + r]! + bhh[r]!;
      for (let j = 0; j < h; j++) v += whh[r * h + j]! * hPrev[j]!;
      gates[r] = v;
    }
    const hn = new Float64Array(h);
    const cn = new Float64Array(h);
    for (let j = 0; j < h; j++) {
      const ig = sigmoid(gates[j]!);
      const fg = sigmoid(gates[h + j]!);
      const gg = Math.tanh(gates[2 * h + j]!);
      const og = sigmoid(gates[3 * h + j]!);
      cn[j] = fg * cPrev[j]! + ig * gg;
      hn[j] = og * Math.tanh(cn[j]!);
    }
    out.set(hn, t * h);
    hPrev = hn;
    cPrev = cn;
  }
  return out;
}
