/**
 * Models for the benchmarks, built from random weights (no download): GPT-2-shaped decoders of any
 * size, USE-lite with a classification head, and the matmul FLOP count of a training step.
 */
import { parseHfConfig } from "../src/io/hf-config.js";
import { mapSource } from "../src/models/context.js";
import type { LoadedModel } from "../src/models/load.js";
import { MODELS } from "../src/models/registry.js";
import { loadUseLiteModel } from "../src/models/use-lite/classifier.js";
import type { UseLiteConfig } from "../src/models/use-lite/config.js";
import type { PeftModel } from "../src/peft/peft-model.js";
import type { Tensor } from "../src/tensor.js";

export interface Gpt2Shape {
  readonly layers: number;
  readonly hidden: number;
  readonly heads: number;
  readonly vocab: number;
  readonly positions: number;
}

export const GPT2_SMALL: Gpt2Shape = { layers: 12, hidden: 768, heads: 12, vocab: 50257, positions: 1024 };
/** The L4 d256 shape of ORT-NOTES.md. */
export const GPT2_TINY: Gpt2Shape = { layers: 4, hidden: 256, heads: 4, vocab: 8192, positions: 1024 };

/** Deterministic N(0, std²) values (xorshift32 + Box–Muller), GPT-2's initializer_range 0.02 by default. */
function normalTensor(shape: readonly number[], seed: number, std = 0.02, mean = 0): Tensor<"float32"> {
  const n = shape.reduce((a, b) => a * b, 1);
  const data = new Float32Array(n);
  let s = seed >>> 0 || 1;
  const u = () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return ((s >>> 0) + 1) / 4294967297;
  };
  for (let i = 0; i < n; i += 2) {
    const r = Math.sqrt(-2 * Math.log(u()));
    const t = 2 * Math.PI * u();
    data[i] = mean + std * r * Math.cos(t);
    if (i + 1 < n) data[i + 1] = mean + std * r * Math.sin(t);
  }
  return { dtype: "float32", shape: [...shape], data };
}

function filled(shape: readonly number[], v: number): Tensor<"float32"> {
  return { dtype: "float32", shape: [...shape], data: new Float32Array(shape.reduce((a, b) => a * b, 1)).fill(v) };
}

/** The config.json of a GPT-2 of this shape (Hugging Face keys). */
export function gpt2ConfigJson(shape: Gpt2Shape): Record<string, unknown> {
  return {
    model_type: "gpt2",
    n_layer: shape.layers,
    n_embd: shape.hidden,
    n_head: shape.heads,
    vocab_size: shape.vocab,
    n_positions: shape.positions,
    activation_function: "gelu_new",
  };
}

/**
 * A GPT-2 (`GPT2LMHeadModel`) with random weights in transformers' layout (Conv1D weights
 * `[in, out]`, `lm_head.weight` the same tensor as `transformer.wte.weight`).
 */
export function randomGpt2(shape: Gpt2Shape, seed = 1): LoadedModel {
  const d = shape.hidden;
  const config = parseHfConfig(gpt2ConfigJson(shape), "bench:gpt2/config.json");
  const w = new Map<string, Tensor>();
  let k = seed * 1000;
  const ln = (p: string) => {
    w.set(`${p}.weight`, filled([d], 1));
    w.set(`${p}.bias`, filled([d], 0));
  };
  const conv = (p: string, fin: number, fout: number) => {
    w.set(`${p}.weight`, normalTensor([fin, fout], ++k));
    w.set(`${p}.bias`, normalTensor([fout], ++k, 0.01));
  };
  const wte = normalTensor([shape.vocab, d], ++k);
  w.set("transformer.wte.weight", wte);
  w.set("transformer.wpe.weight", normalTensor([shape.positions, d], ++k, 0.01));
  for (let i = 0; i < shape.layers; i++) {
    const p = `transformer.h.${i}`;
    ln(`${p}.ln_1`);
    conv(`${p}.attn.c_attn`, d, 3 * d);
    conv(`${p}.attn.c_proj`, d, d);
    ln(`${p}.ln_2`);
    conv(`${p}.mlp.c_fc`, d, 4 * d);
    conv(`${p}.mlp.c_proj`, 4 * d, d);
  }
  ln("transformer.ln_f");
  w.set("lm_head.weight", wte);
  return { dir: "bench:gpt2", config, def: MODELS.gpt2, weights: mapSource(w, "bench:gpt2") };
}

/** The installed USE-lite with a fresh `numLabels`-way classification head. */
export function useLiteClassifier(numLabels = 2): LoadedModel<UseLiteConfig> {
  return loadUseLiteModel({ numLabels });
}

export interface StepFlops {
  /** Forward matmul FLOPs per token of the frozen model (projections, QKᵀ, AV, output head). */
  readonly forwardPerToken: number;
  /** Forward FLOPs per token of the LoRA factors (x·Aᵀ, ·Bᵀ). */
  readonly loraForwardPerToken: number;
  /**
   * Training FLOPs per token: 2 × forward (forward + input gradients; frozen weights get no
   * weight gradient) + 3 × LoRA forward (forward, input gradient and the A/B gradients).
   */
  readonly trainPerToken: number;
}

function stepFlops(forwardPerToken: number, loraForwardPerToken: number): StepFlops {
  return { forwardPerToken, loraForwardPerToken, trainPerToken: 2 * forwardPerToken + 3 * loraForwardPerToken };
}

/** GPT-2 at sequence length `seq`, LoRA rank `r` on `c_attn` of every layer. */
export function gpt2Flops(shape: Gpt2Shape, seq: number, r: number): StepFlops {
  const d = shape.hidden;
  const perLayer = 2 * (d * 3 * d + d * d + d * 4 * d + 4 * d * d) + 2 * 2 * seq * d; // projections + QKᵀ + AV
  const forward = shape.layers * perLayer + 2 * d * shape.vocab;
  const lora = shape.layers * 2 * r * (d + 3 * d);
  return stepFlops(forward, lora);
}

/**
 * USE-lite at sequence length `seq`: per layer q/k/v (d → d) and output (d → hidden) projections,
 * the residual projection where the width changes (256 → 512), QKᵀ and AV, the feed-forward
 * (hidden → intermediate → hidden), then pooler and classifier once per sentence (divided by `seq`
 * to count per token). LoRA rank `r` on `loraModules` of q, k, v, o.
 */
export function useLiteFlops(c: UseLiteConfig, seq: number, r: number, numLabels: number, loraModules: readonly ("q" | "k" | "v" | "o")[]): StepFlops {
  let forward = 0;
  let lora = 0;
  for (let i = 0; i < c.numLayers; i++) {
    const d = i === 0 ? c.embeddingSize : c.hiddenSize;
    forward += 2 * (3 * d * d + d * c.hiddenSize) + 2 * 2 * seq * d + 2 * 2 * c.hiddenSize * c.intermediateSize;
    if (d !== c.hiddenSize) forward += 2 * d * c.hiddenSize;
    for (const m of loraModules) lora += 2 * r * (d + (m === "o" ? c.hiddenSize : d));
  }
  forward += (2 * c.hiddenSize * c.hiddenSize + 2 * c.hiddenSize * numLabels) / seq;
  return stepFlops(forward, lora);
}

/** xorshift32 values in [-scale, scale). */
export function randomValues(n: number, seed: number, scale: number): Float32Array {
  const out = new Float32Array(n);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    out[i] = ((s >>> 0) / 2 ** 31 - 1) * scale;
  }
  return out;
}

/** Adds adapter `name` and gives its B factors random values (fresh LoRA has B = 0, which would hide mix-ups). */
export function addRandomLora(pm: PeftModel, name: string, config: Record<string, unknown>, seed: number): void {
  const a = pm.addAdapter(name, config, { seed });
  const upd = new Map<string, Tensor>();
  let k = 0;
  for (const [key, t] of a.tensors) {
    if (key.includes("lora_B")) upd.set(key, { dtype: "float32", shape: t.shape, data: randomValues(t.data.length, seed * 1009 + ++k, 0.05) });
  }
  pm.updateAdapterTensors(name, upd);
}
