/**
 * Incremental decoding: one graph per (model, adapter-pool layout) that appends any number of
 * tokens per row to a KV cache and returns the logits of each row's last new token. A prompt
 * (or a chunk of it) and a single decoding step are the same graph with a different `seq`, so
 * prefill and decode share one session. Adapters come from an `AdapterPool` (one per row);
 * putting other adapters into the pool only changes the fed arrays, never the graph.
 */
import { UnsupportedOptionError } from "../errors.js";
import * as G from "../graph/api.js";
import { Graph } from "../graph/graph.js";
import type { LlamaFamilyConfig } from "../io/hf-config.js";
import { KvCache } from "../models/attention.js";
import { type ContribOps, ModelContext } from "../models/context.js";
import { logitsInFloat32 } from "../models/forward.js";
import { ropeTables } from "../models/llama.js";
import { type AdapterPool, type ModuleShape, type PoolLayout, poolHooks } from "../peft/adapter-pool.js";
import type { PeftModel } from "../peft/peft-model.js";
import { CompiledGraph, type SessionOptions } from "../runtime/session.js";
import type { Tensor } from "../tensor.js";
import { KvArena, type KvShape } from "./kv-arena.js";

/** Architectures the decoder builds (causal LMs whose builder takes a `KvCache`). */
const CAUSAL_LMS: ReadonlySet<string> = new Set(["gpt2", "llama", "qwen2", "mistral"]);
/** Those with rotary position tables: fed per run, as many rows as the cache has positions. */
const ROTARY: ReadonlySet<string> = new Set(["llama", "qwen2", "mistral"]);

/** The cache geometry and limits of a model. */
export interface ModelGeometry extends KvShape {
  readonly vocabSize: number;
  readonly hiddenSize: number;
  readonly maxPositions: number;
}

export function modelGeometry(model: PeftModel): ModelGeometry {
  const cfg = model.base.config as { modelType: string; numLayers: number; numHeads: number; headDim: number; vocabSize: number; hiddenSize: number; maxPositionEmbeddings: number; numKeyValueHeads?: number };
  if (!CAUSAL_LMS.has(cfg.modelType) || model.base.def.task !== "causal-lm") {
    throw new UnsupportedOptionError("config.json", "model_type", cfg.modelType, `generation needs a causal language model (${[...CAUSAL_LMS].join(", ")})`);
  }
  return {
    layers: cfg.numLayers,
    kvHeads: cfg.numKeyValueHeads ?? cfg.numHeads,
    headDim: cfg.headDim,
    vocabSize: cfg.vocabSize,
    hiddenSize: cfg.hiddenSize,
    maxPositions: cfg.maxPositionEmbeddings,
  };
}

/** The linear module `name` of the model, as the pool needs it. */
export function moduleShapes(model: PeftModel): (name: string) => ModuleShape {
  const byName = new Map(model.info.linearModules.map((m) => [m.name, m]));
  return (name) => {
    const m = byName.get(name);
    if (!m) throw new UnsupportedOptionError("adapter", "target module", name, "the base model has no such linear layer");
    return m;
  };
}

/**
 * The generation graph: inputs `input_ids`, `position_ids`, `past_length`, `new_length`, caches,
 * pool, and for rotary models `rope_cos` / `rope_sin` [positions, headDim] (the tables are fed, so
 * a 131k-position config does not put 131k-row constants into the graph); outputs `logits`
 * [batch, vocab], `key.<i>`, `value.<i>`.
 */
export function buildGenerationGraph(model: PeftModel, layout: PoolLayout, opts: { contribOps?: ContribOps } = {}): Graph {
  const geo = modelGeometry(model);
  const g = new Graph(`${model.info.modelType}_generate`);
  const inputIds = g.input("input_ids", "int64", ["batch", "seq"]);
  const positionIds = g.input("position_ids", "int64", ["batch", "seq"]);
  const kvCache = new KvCache(g, geo.kvHeads, geo.headDim, "float32", inputIds);
  const attentionMask = G.cast(kvCache.realTokens, "int64");
  const hooks = poolHooks(g, layout);
  const ctx = new ModelContext(g, model.weights, { hooks, ...(opts.contribOps ? { contribOps: opts.contribOps } : {}) });
  const rotaryTables = ROTARY.has(model.info.modelType)
    ? { cos: g.input("rope_cos", "float32", ["positions", geo.headDim]), sin: g.input("rope_sin", "float32", ["positions", geo.headDim]) }
    : undefined;
  const inputs = { inputIds, attentionMask, positionIds, kvCache, logitsIndex: G.sub(kvCache.newLength, 1), ...(rotaryTables ? { rotaryTables } : {}) };
  const out = logitsInFloat32(model.base.def.build(ctx, model.base.config as never, inputs));
  g.output(G.reshape(out.logits, [0, -1]), "logits");
  return g;
}

/** One row of a run: tokens appended to a cache slot. */
export interface StepRow {
  /** Cache slot (rows of one run occupy consecutive slots, in order). */
  readonly slot: number;
  /** Token ids to append (at least one). */
  readonly ids: readonly number[];
  /** Per token: the row of the pool's prompt-tuning table it stands for, or −1 for `ids[i]` (default all −1). */
  readonly virtual?: readonly number[];
  /** Pool slot of the row's adapter (0: base model). */
  readonly adapterSlot: number;
}

export class Decoder {
  readonly cache: KvArena;
  readonly geometry: ModelGeometry;
  private runs = 0;
  private rope: { positions: number; cos: Float32Array; sin: Float32Array } | null = null;

  private constructor(
    readonly model: PeftModel,
    readonly pool: AdapterPool,
    private readonly session: CompiledGraph,
    cache: KvArena | null,
  ) {
    this.geometry = modelGeometry(model);
    this.cache = cache ?? new KvArena(this.geometry);
  }

  /** Builds and compiles the graph for `pool.layout`; `cache` carries an existing cache over (a new layout, same model). */
  /**
   * `contribOps`: onnxruntime's contrib kernels in the graph (`ContextOptions.contribOps`), on the
   * CPU execution provider only (the one they are measured and tested on); default none.
   */
  static async create(model: PeftModel, pool: AdapterPool, opts: { sessionOptions?: SessionOptions; cache?: KvArena; contribOps?: ContribOps } = {}): Promise<Decoder> {
    const ep = opts.sessionOptions?.ep ?? "cpu";
    if (opts.contribOps && Object.values(opts.contribOps).some(Boolean) && ep !== "cpu") {
      throw new UnsupportedOptionError("Decoder options", "contribOps", opts.contribOps, `onnxruntime contrib kernels are used on the CPU execution provider only, not ${ep}; leave contribOps out for standard ONNX ops`);
    }
    const graph = buildGenerationGraph(model, pool.layout, opts.contribOps ? { contribOps: opts.contribOps } : {});
    const session = await CompiledGraph.create(graph, opts.sessionOptions ?? {});
    return new Decoder(model, pool, session, opts.cache ?? null);
  }

  get steps(): number {
    return this.runs;
  }

  /**
   * Appends each row's tokens to its slot and returns the logits of its last token
   * (`vocabSize` floats per row). Rows must occupy consecutive slots starting at `rows[0].slot`.
   */
  async step(rows: readonly StepRow[], maxCapacity?: number): Promise<Float32Array[]> {
    const B = rows.length;
    const s0 = rows[0]!.slot;
    rows.forEach((r, i) => {
      if (r.slot !== s0 + i) throw new RangeError(`rows of a step must occupy consecutive slots (row ${i} has slot ${r.slot}, expected ${s0 + i})`);
      if (r.ids.length === 0) throw new RangeError(`row ${i} of a step has no tokens`);
    });
    const S = Math.max(...rows.map((r) => r.ids.length));
    const longest = Math.max(...rows.map((r) => this.cache.lengths[r.slot] ?? 0));
    this.cache.ensure(s0 + B, longest + S, maxCapacity);
    const ids = new BigInt64Array(B * S);
    const pos = new BigInt64Array(B * S);
    const virt = new BigInt64Array(B * S).fill(-1n);
    const pastLength = new BigInt64Array(B);
    const newLength = new BigInt64Array(B);
    const adapterIndex = new BigInt64Array(B);
    rows.forEach((r, b) => {
      const past = this.cache.lengths[r.slot]!;
      pastLength[b] = BigInt(past);
      newLength[b] = BigInt(r.ids.length);
      adapterIndex[b] = BigInt(r.adapterSlot);
      r.ids.forEach((id, t) => {
        ids[b * S + t] = BigInt(id);
        pos[b * S + t] = BigInt(past + t);
        const v = r.virtual?.[t] ?? -1;
        if (v >= 0) virt[b * S + t] = BigInt(v);
      });
    });
    const { layers, kvHeads, headDim } = this.geometry;
    const cap = this.cache.capacity;
    const feeds: Record<string, Tensor> = {
      input_ids: { dtype: "int64", shape: [B, S], data: ids },
      position_ids: { dtype: "int64", shape: [B, S], data: pos },
      past_length: { dtype: "int64", shape: [B], data: pastLength },
      new_length: { dtype: "int64", shape: [B], data: newLength },
      ...this.pool.feeds(),
    };
    const names = this.session.inputNames;
    if (names.includes("adapter_index")) feeds.adapter_index = { dtype: "int64", shape: [B], data: adapterIndex };
    if (names.includes("virtual_index")) feeds.virtual_index = { dtype: "int64", shape: [B, S], data: virt };
    if (names.includes("rope_cos")) {
      const t = this.ropeTables(cap);
      feeds.rope_cos = { dtype: "float32", shape: [t.positions, headDim], data: t.cos };
      feeds.rope_sin = { dtype: "float32", shape: [t.positions, headDim], data: t.sin };
    }
    for (let l = 0; l < layers; l++) {
      feeds[`past_key.${l}`] = { dtype: "float32", shape: [B, kvHeads, cap, headDim], data: this.cache.view(l, "key", s0, s0 + B) };
      feeds[`past_value.${l}`] = { dtype: "float32", shape: [B, kvHeads, cap, headDim], data: this.cache.view(l, "value", s0, s0 + B) };
    }
    const out = await this.session.run(feeds);
    this.runs++;
    for (let l = 0; l < layers; l++) {
      const k = out[`key.${l}`]!.data as Float32Array;
      const v = out[`value.${l}`]!.data as Float32Array;
      rows.forEach((r, b) => {
        this.cache.write(l, "key", r.slot, k, b, S, r.ids.length);
        this.cache.write(l, "value", r.slot, v, b, S, r.ids.length);
      });
    }
    for (const r of rows) this.cache.advance(r.slot, r.ids.length);
    const logits = out.logits!.data as Float32Array;
    const V = this.geometry.vocabSize;
    return rows.map((_, b) => logits.slice(b * V, (b + 1) * V));
  }

  /** Rotary tables covering positions 0…`positions`−1 (the cache capacity), recomputed only when the cache grows. */
  private ropeTables(positions: number): { positions: number; cos: Float32Array; sin: Float32Array } {
    if (!this.rope || this.rope.positions < positions) {
      const t = ropeTables(this.model.base.config as LlamaFamilyConfig, "float32", positions);
      this.rope = { positions, cos: Float32Array.from(t.cos), sin: Float32Array.from(t.sin) };
    }
    return this.rope;
  }

  async release(): Promise<void> {
    await this.session.release();
  }
}
