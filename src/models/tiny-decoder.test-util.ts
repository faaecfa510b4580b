/**
 * Test helpers for the Llama-family decoders (llama, qwen2, mistral): tiny random models written
 * in Hugging Face layout (config.json + model.safetensors), and an independent float64 reference
 * forward written with plain loops (embedding → RMSNorm → attention with RoPE, GQA, biases and a
 * sliding window → SwiGLU → lm_head) to check the graphs against.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { saveSafetensors } from "../io/safetensors.js";
import type { Tensor } from "../tensor.js";
import { Rng } from "../util/rng.js";

export interface TinyDecoderSpec {
  readonly modelType: "llama" | "qwen2" | "mistral";
  readonly vocab: number;
  readonly hidden: number;
  readonly layers: number;
  readonly heads: number;
  readonly kvHeads: number;
  readonly headDim: number;
  readonly intermediate: number;
  readonly maxPositions: number;
  readonly ropeTheta: number;
  readonly rmsNormEps: number;
  readonly tied: boolean;
  /** Biases on q/k/v_proj (qwen2), and on every projection (llama `attention_bias`/`mlp_bias`). */
  readonly qkvBias: boolean;
  readonly oBias: boolean;
  readonly mlpBias: boolean;
}

/** A tiny Qwen2: q/k/v biases, GQA (4 heads, 2 kv heads), tied embeddings. */
export const QWEN2: TinyDecoderSpec = {
  modelType: "qwen2",
  vocab: 40,
  hidden: 24,
  layers: 2,
  heads: 4,
  kvHeads: 2,
  headDim: 6,
  intermediate: 32,
  maxPositions: 32,
  ropeTheta: 1000,
  rmsNormEps: 1e-6,
  tied: true,
  qkvBias: true,
  oBias: false,
  mlpBias: false,
};

// head_dim 8 ≠ hidden/heads, one kv head (multi-query), untied
export const MISTRAL: TinyDecoderSpec = { ...QWEN2, modelType: "mistral", kvHeads: 1, headDim: 8, tied: false, qkvBias: false, ropeTheta: 10000 };

export type Weights = Map<string, Tensor<"float32">>;

/** Random weights of a decoder in transformers' names (uniform ±scale; norms around 1). */
export function randomDecoderWeights(s: TinyDecoderSpec, seed: number, scale = 0.25): Weights {
  const rng = new Rng(seed);
  const w: Weights = new Map();
  const put = (name: string, shape: number[], around = 0) => {
    const n = shape.reduce((a, b) => a * b, 1);
    w.set(name, { dtype: "float32", shape, data: Float32Array.from({ length: n }, () => around + (rng.uniform() * 2 - 1) * scale) });
  };
  const H = s.hidden;
  const q = s.heads * s.headDim;
  const kv = s.kvHeads * s.headDim;
  put("model.embed_tokens.weight", [s.vocab, H], 0);
  for (let i = 0; i < s.layers; i++) {
    const p = `model.layers.${i}`;
    put(`${p}.input_layernorm.weight`, [H], 1);
    put(`${p}.post_attention_layernorm.weight`, [H], 1);
    for (const [n, out] of [["q_proj", q], ["k_proj", kv], ["v_proj", kv]] as const) {
      put(`${p}.self_attn.${n}.weight`, [out, H]);
      if (s.qkvBias) put(`${p}.self_attn.${n}.bias`, [out]);
    }
    put(`${p}.self_attn.o_proj.weight`, [H, q]);
    if (s.oBias) put(`${p}.self_attn.o_proj.bias`, [H]);
    put(`${p}.mlp.gate_proj.weight`, [s.intermediate, H]);
    put(`${p}.mlp.up_proj.weight`, [s.intermediate, H]);
    put(`${p}.mlp.down_proj.weight`, [H, s.intermediate]);
    if (s.mlpBias) for (const [n, out] of [["gate_proj", s.intermediate], ["up_proj", s.intermediate], ["down_proj", H]] as const) put(`${p}.mlp.${n}.bias`, [out]);
  }
  put("model.norm.weight", [H], 1);
  if (!s.tied) put("lm_head.weight", [s.vocab, H]);
  return w;
}

/** The config.json keys transformers writes for the spec (plus `extra`, e.g. sliding-window keys). */
export function decoderConfigJson(s: TinyDecoderSpec, extra: Record<string, unknown> = {}): Record<string, unknown> {
  const arch = { llama: "LlamaForCausalLM", qwen2: "Qwen2ForCausalLM", mistral: "MistralForCausalLM" }[s.modelType];
  return {
    architectures: [arch],
    model_type: s.modelType,
    vocab_size: s.vocab,
    hidden_size: s.hidden,
    intermediate_size: s.intermediate,
    num_hidden_layers: s.layers,
    num_attention_heads: s.heads,
    num_key_value_heads: s.kvHeads,
    head_dim: s.headDim,
    hidden_act: "silu",
    max_position_embeddings: s.maxPositions,
    rms_norm_eps: s.rmsNormEps,
    rope_parameters: { rope_theta: s.ropeTheta, rope_type: "default" },
    tie_word_embeddings: s.tied,
    ...(s.modelType === "llama" ? { attention_bias: s.qkvBias, mlp_bias: s.mlpBias } : {}),
    dtype: "float32",
    ...extra,
  };
}

/** Writes `dir/config.json` and `dir/model.safetensors`; returns `dir`. */
export function writeHfModel(dir: string, config: Record<string, unknown>, weights: Weights): string {
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, "config.json"), `${JSON.stringify(config, null, 2)}\n`);
  saveSafetensors(join(dir, "model.safetensors"), weights);
  return dir;
}

/**
 * Reference logits [batch, seq, vocab] in float64. `windows[i]` is layer i's sliding window
 * (null: full causal attention); keys with `mask` 0 are never attended to.
 */
export function referenceDecoderLogits(
  s: TinyDecoderSpec,
  w: Weights,
  ids: readonly (readonly number[])[],
  mask: readonly (readonly number[])[],
  windows: readonly (number | null)[],
): Float64Array {
  const get = (n: string): Float64Array => Float64Array.from(w.get(n)!.data);
  const has = (n: string) => w.has(n);
  const H = s.hidden;
  const hd = s.headDim;
  const B = ids.length;
  const S = ids[0]!.length;
  const out = new Float64Array(B * S * s.vocab);
  // y[o] = Σ_i W[o, i]·x[i] + b[o]
  const linear = (x: Float64Array, name: string, outF: number, inF: number): Float64Array => {
    const W = get(`${name}.weight`);
    const b = has(`${name}.bias`) ? get(`${name}.bias`) : null;
    const y = new Float64Array(outF);
    for (let o = 0; o < outF; o++) {
      let acc = b ? b[o]! : 0;
      for (let i = 0; i < inF; i++) acc += W[o * inF + i]! * x[i]!;
      y[o] = acc;
    }
    return y;
  };
  const rms = (x: Float64Array, name: string): Float64Array => {
    const g = get(name);
    let ss = 0;
    for (let i = 0; i < H; i++) ss += x[i]! * x[i]!;
    const r = 1 / Math.sqrt(ss / H + s.rmsNormEps);
    return Float64Array.from(x, (v, i) => g[i]! * v * r);
  };
  const rope = (v: Float64Array, heads: number, pos: number): void => {
    for (let h = 0; h < heads; h++) {
      for (let i = 0; i < hd / 2; i++) {
        const ang = pos / s.ropeTheta ** ((2 * i) / hd);
        const a = v[h * hd + i]!;
        const b = v[h * hd + i + hd / 2]!;
        v[h * hd + i] = a * Math.cos(ang) - b * Math.sin(ang);
        v[h * hd + i + hd / 2] = b * Math.cos(ang) + a * Math.sin(ang);
      }
    }
  };
  const emb = get("model.embed_tokens.weight");
  const head = s.tied ? emb : get("lm_head.weight");
  for (let b = 0; b < B; b++) {
    let xs = ids[b]!.map((t) => emb.slice(t * H, (t + 1) * H));
    for (let l = 0; l < s.layers; l++) {
      const p = `model.layers.${l}`;
      const hs = xs.map((x) => rms(x, `${p}.input_layernorm.weight`));
      const qs = hs.map((h, pos) => {
        const q = linear(h, `${p}.self_attn.q_proj`, s.heads * hd, H);
        rope(q, s.heads, pos);
        return q;
      });
      const ks = hs.map((h, pos) => {
        const k = linear(h, `${p}.self_attn.k_proj`, s.kvHeads * hd, H);
        rope(k, s.kvHeads, pos);
        return k;
      });
      const vs = hs.map((h) => linear(h, `${p}.self_attn.v_proj`, s.kvHeads * hd, H));
      const win = windows[l] ?? null;
      xs = xs.map((x, i) => {
        const o = new Float64Array(s.heads * hd);
        for (let h = 0; h < s.heads; h++) {
          const kh = Math.floor(h / (s.heads / s.kvHeads));
          const visible: number[] = [];
          for (let j = 0; j <= i; j++) if (mask[b]![j] === 1 && (win === null || i - j < win)) visible.push(j);
          const scores = visible.map((j) => {
            let d = 0;
            for (let e = 0; e < hd; e++) d += qs[i]![h * hd + e]! * ks[j]![kh * hd + e]!;
            return d / Math.sqrt(hd);
          });
          const m = Math.max(...scores);
          const ex = scores.map((v) => Math.exp(v - m));
          const z = ex.reduce((a, c) => a + c, 0);
          visible.forEach((j, n) => {
            for (let e = 0; e < hd; e++) o[h * hd + e] = o[h * hd + e]! + (ex[n]! / z) * vs[j]![kh * hd + e]!;
          });
        }
        const a = linear(o, `${p}.self_attn.o_proj`, H, s.heads * hd);
        const r = Float64Array.from(x, (v, e) => v + a[e]!);
        const n2 = rms(r, `${p}.post_attention_layernorm.weight`);
        const gate = linear(n2, `${p}.mlp.gate_proj`, s.intermediate, H);
        const up = linear(n2, `${p}.mlp.up_proj`, s.intermediate, H);
        const act = Float64Array.from(gate, (g, e) => (g / (1 + Math.exp(-g))) * up[e]!);
        const d = linear(act, `${p}.mlp.down_proj`, H, s.intermediate);
        return Float64Array.from(r, (v, e) => v + d[e]!);
      });
    }
    xs.forEach((x, i) => {
      const n = rms(x, "model.norm.weight");
      for (let v = 0; v < s.vocab; v++) {
        let acc = 0;
        for (let e = 0; e < H; e++) acc += head[v * H + e]! * n[e]!;
        out[(b * S + i) * s.vocab + v] = acc;
      }
    });
  }
  return out;
}
