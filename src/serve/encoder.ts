/**
 * The encoder side of a server (USE-lite, BERT): sentence embeddings and classification, for the
 * base model and for adapters. An adapter with a trained classification head (the run folders
 * `peft train` writes: `modules_to_save: ["classifier"]`) gets a base with a head of its size,
 * as `from_pretrained(num_labels=…)` does; embeddings ignore the head. Each (adapter, task) has
 * one compiled session, built on first use and released when the adapter leaves memory.
 */
import { join } from "node:path";
import { RequestAbortedError, UnsupportedTaskError } from "../errors.js";
import * as G from "../graph/api.js";
import { SafetensorsFile } from "../io/safetensors.js";
import type { Value } from "../graph/types.js";
import { overlaySource } from "../models/context.js";
import type { LoadedModel } from "../models/load.js";
import type { ModelDef } from "../models/model-def.js";
import { USE_LITE_MODEL_TYPE, type UseLiteConfig } from "../models/use-lite/config.js";
import { buildUseLiteEncoder } from "../models/use-lite/model.js";
import { PeftModel } from "../peft/peft-model.js";
import { readRun } from "../runs/evaluate.js";
import { RUN_FILES } from "../runs/run-dir.js";
import { CompiledGraph } from "../runtime/session.js";
import type { Tensor } from "../tensor.js";
import type { AdapterHost } from "./adapters.js";
import type { ServedModel } from "./model-host.js";

/** Rows of one encoder run. */
const BATCH = 16;

/** A request's inputs: texts, or token-id sequences (for models without a tokenizer). */
export type EncoderInput = { readonly kind: "text"; readonly texts: readonly string[] } | { readonly kind: "ids"; readonly ids: readonly (readonly number[])[] };

export interface EncoderOutput<T> {
  readonly rows: T[];
  /** Tokens read (the usage count). */
  readonly tokens: number;
}

export interface Classification {
  readonly label: string;
  readonly probs: number[];
}

/**
 * The model definition whose `logits` are sentence embeddings: USE-lite's own (normalised)
 * sentence embedding; for other encoders the attention-masked mean of the last hidden states,
 * L2-normalised (sentence-transformers' mean pooling, as vLLM's default for BERT embeddings).
 */
function embeddingDef(def: ModelDef): ModelDef {
  return {
    ...def,
    build(ctx, cfg, inputs) {
      if (cfg.modelType === USE_LITE_MODEL_TYPE) {
        const o = buildUseLiteEncoder(ctx, cfg as UseLiteConfig, { inputIds: inputs.inputIds, attentionMask: inputs.attentionMask });
        return { logits: o.sentenceEmbedding, hidden: o.lastHiddenState, attentionMask: o.attentionMask };
      }
      const o = def.build(ctx, cfg, inputs);
      const mask = G.unsqueeze(G.cast(o.attentionMask, "float32"), [2]);
      const hidden: Value = G.cast(o.hidden, "float32");
      const mean = G.div(G.reduceSum(G.mul(hidden, mask), [1], false), G.maximum(G.reduceSum(mask, [1], false), 1e-9));
      const norm = G.sqrt(G.maximum(G.reduceSum(G.mul(mean, mean), [-1], true), 1e-24));
      return { logits: G.div(mean, norm), hidden: o.hidden, attentionMask: o.attentionMask };
    },
  };
}

/** Rows of the classification head an adapter folder trains (null: it has none). */
function headRows(dir: string): number | null {
  const f = SafetensorsFile.open(join(dir, RUN_FILES.adapterWeights));
  try {
    const key = f.keys().find((k) => /(^|\.)classifier\.(modules_to_save\.[^.]+\.)?weight$/u.test(k));
    return key ? f.info(key).shape[0]! : null;
  } finally {
    f.close();
  }
}

interface Variant {
  readonly pm: PeftModel;
  session: Promise<CompiledGraph> | null;
}

interface EncoderAdapter {
  readonly dir: string;
  readonly rows: number | null;
  readonly labels: string[] | null;
  readonly embed: Variant;
  cls: Variant | null;
}

export class EncoderService implements AdapterHost {
  private readonly adapters = new Map<string, EncoderAdapter>();
  private readonly baseEmbed: Variant;
  private baseCls: Variant | null = null;
  private readonly baseRows: number | null;

  constructor(private readonly model: ServedModel) {
    this.baseEmbed = { pm: this.peft({ ...model.loaded, def: embeddingDef(model.loaded.def) }), session: null };
    this.baseRows = model.loaded.weights.has("classifier.weight") ? model.loaded.weights.info("classifier.weight").shape[0]! : null;
  }

  /** A PeftModel over `m` whose sessions use the server's options. */
  private peft(m: LoadedModel): PeftModel {
    const pm = new PeftModel(m);
    pm.sessionOptions = this.model.sessionOptions;
    return pm;
  }

  /** The base model with a classification head of `rows` labels (zeros when the base has none: an adapter supplies it). */
  private withHead(rows: number): LoadedModel {
    const base = this.model.loaded;
    if (this.baseRows === rows) return base;
    const hidden = base.config.hiddenSize;
    const head = new Map<string, Tensor>([
      ["classifier.weight", { dtype: "float32", shape: [rows, hidden], data: new Float32Array(rows * hidden) }],
      ["classifier.bias", { dtype: "float32", shape: [rows], data: new Float32Array(rows) }],
    ]);
    return { ...base, weights: overlaySource(base.weights, head) };
  }

  load(dir: string, id: string): void {
    const rows = headRows(dir);
    const base = rows !== null ? this.withHead(rows) : this.model.loaded;
    const embed = this.peft({ ...base, def: embeddingDef(base.def) });
    embed.loadAdapter(dir, id, { activate: true });
    this.adapters.set(id, { dir, rows, labels: readRun(dir)?.labelNames ?? null, embed: { pm: embed, session: null }, cls: null });
  }

  unload(id: string): void {
    const a = this.adapters.get(id);
    if (!a) return;
    this.adapters.delete(id);
    void release(a.embed);
    if (a.cls) void release(a.cls);
  }

  private adapter(id: string): EncoderAdapter {
    const a = this.adapters.get(id);
    if (!a) throw new UnsupportedTaskError(id, "this request", "the adapter is not loaded");
    return a;
  }

  /** One L2-normalised embedding per input, and the number of tokens read. */
  async embed(id: string | null, input: EncoderInput, signal: AbortSignal): Promise<EncoderOutput<number[]>> {
    const v = id === null ? this.baseEmbed : this.adapter(id).embed;
    return await this.run(v, input, signal);
  }

  /** Softmax probabilities and the arg-max label per input; `model` names the request's model for errors. */
  async classify(id: string | null, model: string, input: EncoderInput, signal: AbortSignal): Promise<EncoderOutput<Classification>> {
    let v: Variant;
    let labels: readonly string[];
    if (id === null) {
      if (this.baseRows === null) throw new UnsupportedTaskError(model, "/classify", "the base model has no classification head; name an adapter trained with one (a peft train run folder)");
      this.baseCls ??= { pm: this.peft(this.model.loaded), session: null };
      v = this.baseCls;
      labels = this.model.loaded.config.modelType === USE_LITE_MODEL_TYPE ? [] : (this.model.loaded.config as { labels: readonly string[] }).labels;
    } else {
      const a = this.adapter(id);
      if (a.rows === null && this.baseRows === null) throw new UnsupportedTaskError(model, "/classify", "the adapter has no trained classification head (modules_to_save: classifier)");
      if (!a.cls) {
        const pm = this.peft(this.withHead(a.rows ?? this.baseRows!));
        pm.loadAdapter(a.dir, id, { activate: true });
        a.cls = { pm, session: null };
      }
      v = a.cls;
      labels = a.labels ?? (this.model.loaded.config.modelType === USE_LITE_MODEL_TYPE ? [] : (this.model.loaded.config as { labels: readonly string[] }).labels);
    }
    const { rows, tokens } = await this.run(v, input, signal);
    const classes = rows.map((row) => {
      const m = Math.max(...row);
      const e = row.map((x) => Math.exp(x - m));
      const s = e.reduce((a, b) => a + b, 0);
      const probs = e.map((x) => x / s);
      const best = probs.indexOf(Math.max(...probs));
      return { label: labels[best] ?? `LABEL_${best}`, probs };
    });
    return { rows: classes, tokens };
  }

  private async run(v: Variant, input: EncoderInput, signal: AbortSignal): Promise<EncoderOutput<number[]>> {
    v.session ??= (() => {
      const built = v.pm.buildGraph();
      built.graph.output(built.outputs.logits, "logits");
      const s = CompiledGraph.create(built.graph, v.pm.sessionOptions);
      s.catch(() => (v.session = null));
      return s;
    })();
    const session = await v.session;
    const rows = this.tokenize(input);
    const tokens = rows.reduce((n, r) => n + r.length, 0);
    const out: number[][] = [];
    for (let s = 0; s < rows.length; s += BATCH) {
      // onnxruntime-node runs a session on this thread: let I/O (other requests, disconnects) in between batches
      if (s > 0) await new Promise((r) => setImmediate(r));
      if (signal.aborted) throw new RequestAbortedError("an encoder request");
      const chunk = rows.slice(s, s + BATCH);
      const width = Math.max(1, ...chunk.map((r) => r.length));
      const ids = new BigInt64Array(chunk.length * width);
      const mask = new BigInt64Array(chunk.length * width);
      chunk.forEach((r, i) => {
        for (let j = 0; j < r.length; j++) {
          ids[i * width + j] = BigInt(r[j]!);
          mask[i * width + j] = 1n;
        }
      });
      const shape = [chunk.length, width];
      const res = await session.run({ input_ids: { dtype: "int64", shape, data: ids }, attention_mask: { dtype: "int64", shape, data: mask } }, ["logits"]);
      const t = res.logits!;
      const h = t.shape[1]!;
      const data = t.data as Float32Array;
      for (let b = 0; b < chunk.length; b++) out.push(Array.from(data.subarray(b * h, (b + 1) * h)));
    }
    return { rows: out, tokens };
  }

  /** Token ids per input, truncated to the model's positions. */
  private tokenize(input: EncoderInput): number[][] {
    const max = this.model.maxPositions;
    if (input.kind === "ids") return input.ids.map((r) => r.slice(0, max));
    const tok = this.model.tokenizer;
    if (tok === null) throw new UnsupportedTaskError(this.model.id, "text inputs", "the model folder has no tokenizer.json; send token ids (input: [[1, 2, 3]])");
    if (tok.kind === "use-lite") return input.texts.map((t) => tok.tok.encode(t).slice(0, max));
    return input.texts.map((t) => tok.tok.encode(t, { truncation: true, maxLength: max }).ids);
  }

  async dispose(): Promise<void> {
    const all = [this.baseEmbed, ...(this.baseCls ? [this.baseCls] : []), ...[...this.adapters.values()].flatMap((a) => [a.embed, ...(a.cls ? [a.cls] : [])])];
    this.adapters.clear();
    await Promise.all(all.map(release));
  }
}

async function release(v: Variant): Promise<void> {
  const s = v.session;
  v.session = null;
  if (s) await (await s).release().catch(() => undefined);
  await v.pm.dispose();
}
