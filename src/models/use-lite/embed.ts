/** Sentence embeddings with USE-lite on onnxruntime: the peft-ts counterpart of `@energetic-ai/embeddings`' `embed()`. */
import { ConfigError } from "../../errors.js";
import { Graph } from "../../graph/graph.js";
import { CompiledGraph, type SessionOptions } from "../../runtime/session.js";
import type { Tensor } from "../../tensor.js";
import { mapSource, ModelContext, type ContextOptions } from "../context.js";
import { loadUseLite, type UseLiteModel } from "./convert.js";
import { buildUseLiteEncoder } from "./model.js";

export interface EmbedOptions {
  /** onnxruntime intra-op threads (default: onnxruntime's choice). */
  readonly threads?: number;
  /** Sentences per run (default 64). */
  readonly batchSize?: number;
  /** Model folder (converted or TF.js); default the installed package. Ignored when `model` is given. */
  readonly dir?: string;
  /** An already loaded model. */
  readonly model?: UseLiteModel;
  /** Context options (tuner hooks, weight overrides), e.g. to embed with an adapter applied. */
  readonly context?: ContextOptions;
}

/** The graph that maps `input_ids` / `attention_mask` to `sentence_embedding` [batch, hidden]. */
export function buildUseLiteEmbeddingGraph(model: UseLiteModel, context: ContextOptions = {}): Graph {
  const g = new Graph("use_lite");
  const ctx = new ModelContext(g, mapSource(model.weights, model.dir), context);
  g.output(buildUseLiteEncoder(ctx, model.config).sentenceEmbedding, "sentence_embedding");
  return g;
}

/** A compiled USE-lite embedding session; reuse it for many calls, then `release()`. */
export class UseLiteEmbedder {
  private constructor(
    readonly model: UseLiteModel,
    private readonly session: CompiledGraph,
    private readonly batchSize: number,
  ) {}

  static async create(opts: EmbedOptions = {}): Promise<UseLiteEmbedder> {
    const batchSize = opts.batchSize ?? 64;
    if (!Number.isInteger(batchSize) || batchSize < 1) throw new ConfigError("embed options", "batchSize", `must be a positive integer, got ${batchSize}`);
    const model = opts.model ?? loadUseLite(opts.dir);
    const session: SessionOptions = opts.threads === undefined ? {} : { threads: opts.threads };
    const cg = await CompiledGraph.create(buildUseLiteEmbeddingGraph(model, opts.context), session);
    return new UseLiteEmbedder(model, cg, batchSize);
  }

  /** One L2-normalised embedding (length hidden_size, 512) per text, in input order. */
  async embed(texts: readonly string[]): Promise<number[][]> {
    const out: number[][] = [];
    for (let s = 0; s < texts.length; s += this.batchSize) {
      const batch = this.model.tokenizer.encodeBatch(texts.slice(s, s + this.batchSize), { maxLength: this.model.config.maxPositionEmbeddings });
      const res = await this.session.run({ input_ids: batch.inputIds, attention_mask: batch.attentionMask });
      const e: Tensor = res["sentence_embedding"]!;
      const h = e.shape[1]!;
      const data = e.data as Float32Array;
      for (let b = 0; b < e.shape[0]!; b++) out.push(Array.from(data.subarray(b * h, (b + 1) * h)));
    }
    return out;
  }

  async release(): Promise<void> {
    await this.session.release();
  }
}

/**
 * Embeds `texts` with USE-lite (512-d, L2-normalised, as `@energetic-ai/embeddings`). An empty
 * text embeds as the TF graph embeds an empty sentence inside a batch.
 */
export async function embedSentences(texts: readonly string[], opts: EmbedOptions = {}): Promise<number[][]> {
  const embedder = await UseLiteEmbedder.create(opts);
  try {
    return await embedder.embed(texts);
  } finally {
    await embedder.release();
  }
}
