/**
 * Pieces shared by the prompt-learning methods (prompt tuning, P-tuning, prefix tuning): PEFT's
 * `PromptLearningConfig` fields, prepending virtual tokens to the input embeddings, and the small
 * host-side linear algebra their prompt encoders need to write what PEFT saves (the encoder's
 * output, `get_prompt_embedding_to_save`).
 */
import { z } from "zod";
import { UnsupportedOptionError } from "../../errors.js";
import * as G from "../../graph/api.js";
import type { Graph } from "../../graph/graph.js";
import type { Value } from "../../graph/types.js";
import type { Tensor } from "../../tensor.js";

/** PEFT's `PromptLearningConfig` fields (besides the common ones). */
export const promptLearningSchema = {
  num_virtual_tokens: z.number().int().positive(),
  token_dim: z.number().int().positive().nullable().optional(),
  num_transformer_submodules: z.number().int().positive().nullable().optional(),
  num_attention_heads: z.number().int().positive().nullable().optional(),
  num_layers: z.number().int().positive().nullable().optional(),
};

export interface PromptLearningFields {
  readonly numVirtualTokens: number;
  readonly tokenDim: number | null;
  readonly numTransformerSubmodules: number;
  readonly numAttentionHeads: number | null;
  readonly numLayers: number | null;
}

/** The parsed prompt-learning fields; encoder-decoder prompts (two submodules) are refused. */
export function promptLearningFields(
  c: { num_virtual_tokens: number; token_dim?: number | null; num_transformer_submodules?: number | null; num_attention_heads?: number | null; num_layers?: number | null },
  file: string,
): PromptLearningFields {
  const subs = c.num_transformer_submodules ?? 1;
  if (subs !== 1) throw new UnsupportedOptionError(file, "num_transformer_submodules", subs, "encoder-decoder prompts are not implemented");
  return {
    numVirtualTokens: c.num_virtual_tokens,
    tokenDim: c.token_dim ?? null,
    numTransformerSubmodules: subs,
    numAttentionHeads: c.num_attention_heads ?? null,
    numLayers: c.num_layers ?? null,
  };
}

export function promptLearningToRaw(c: PromptLearningFields): Record<string, unknown> {
  return {
    num_virtual_tokens: c.numVirtualTokens,
    token_dim: c.tokenDim,
    num_transformer_submodules: c.numTransformerSubmodules,
    num_attention_heads: c.numAttentionHeads,
    num_layers: c.numLayers,
  };
}

/** The embeds hook of prompt-embedding methods: `prompts` [n, D] in front of every row, the mask extended with ones. */
export function prependPrompts(g: Graph, prompts: Value, embeds: Value, mask: Value): { embeds: Value; mask: Value } {
  const n = prompts.shape[0] as number;
  const batch = G.gather(G.shapeOf(embeds), g.ints([0]));
  const shape = G.concat([batch, g.ints([n, embeds.shape[2] as number])], 0);
  const p = G.expand(G.unsqueeze(prompts, [0]), shape);
  const ones = G.expand(g.scalar(1, "int64"), G.concat([batch, g.ints([n])], 0));
  return { embeds: G.concat([p, embeds], 1), mask: G.concat([ones, mask], 1) };
}

// ---------------------------------------------------------------- host-side encoder math (float64)

/** A float32 tensor's values as float64 (the encoders run in float64 on the host). */
export function f64(t: Tensor): Float64Array {
  return Float64Array.from(t.data as ArrayLike<number>);
}

/** y [rows, out] = x [rows, in]·Wᵀ + b for an `nn.Linear` weight W [out, in]. */
export function hostLinear(x: Float64Array, rows: number, w: Tensor, b: Tensor | null): Float64Array {
  const [out, inn] = w.shape as [number, number];
  const wd = f64(w);
  const bd = b ? f64(b) : null;
  const y = new Float64Array(rows * out);
  for (let r = 0; r < rows; r++) {
    for (let o = 0; o < out; o++) {
      let s = bd ? bd[o]! : 0;
      for (let i = 0; i < inn; i++) s += x[r * inn + i]! * wd[o * inn + i]!;
      y[r * out + o] = s;
    }
  }
  return y;
}

export const hostRelu = (x: Float64Array): Float64Array => x.map((v) => (v > 0 ? v : 0));
export const hostTanh = (x: Float64Array): Float64Array => x.map((v) => Math.tanh(v));

/** PyTorch's `nn.Linear` initialisation (Kaiming-uniform with a = √5): weight and bias uniform in ±1/√in. */
export function torchLinearInit(out: number, inn: number, rng: { uniform(): number }): { weight: Tensor; bias: Tensor } {
  const bound = 1 / Math.sqrt(inn);
  const u = (n: number) => Float32Array.from({ length: n }, () => (rng.uniform() * 2 - 1) * bound);
  return { weight: { dtype: "float32", shape: [out, inn], data: u(out * inn) }, bias: { dtype: "float32", shape: [out], data: u(out) } };
}

/** PyTorch's `nn.Embedding` initialisation: N(0, 1). */
export function torchEmbeddingInit(n: number, d: number, rng: { normal(): number }): Tensor {
  return { dtype: "float32", shape: [n, d], data: Float32Array.from({ length: n * d }, () => rng.normal()) };
}

export function float32Tensor(shape: readonly number[], data: Float64Array): Tensor {
  return { dtype: "float32", shape, data: Float32Array.from(data) };
}
