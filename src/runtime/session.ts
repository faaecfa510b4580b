/**
 * onnxruntime-node sessions: created from a graph (or ONNX bytes), cached by graph signature and
 * options, fed with host `Tensor`s. Frozen weights live in the model as initializers; trainable
 * parameters and data are inputs.
 */
import { createHash } from "node:crypto";
import * as ort from "onnxruntime-node";
import { ExecutionProviderError, OrtSessionError } from "../errors.js";
import type { Graph } from "../graph/graph.js";
import { toOnnx } from "../graph/onnx.js";
import type { DType, Tensor } from "../tensor.js";

export type ExecutionProvider = "cpu" | "webgpu";

export interface SessionOptions {
  /** Execution provider (default `cpu`). */
  ep?: ExecutionProvider;
  /** Intra-op threads (default: onnxruntime's choice, all cores). */
  threads?: number;
  /** Graph optimisation level (default `all`). */
  optimization?: "disabled" | "basic" | "extended" | "all";
  /** Write an onnxruntime profile (chrome trace JSON) with this file prefix. */
  profilePrefix?: string;
  /** Let idle worker threads spin (default false: several sessions in one process slow each other when spinning). */
  spinning?: boolean;
  /**
   * Largest constant onnxruntime may fold at session creation. Small values keep quantised base
   * weights quantised in memory (dequantised per run) instead of folded back to float32.
   */
  constantFoldingMaxBytes?: number;
  /** Keep the onnxruntime CPU memory arena (default true). */
  memoryArena?: boolean;
  /**
   * onnxruntime's memory pattern: after the first runs, one pre-planned block holds every
   * intermediate tensor. Default false: with the arena on, a training step then keeps both the
   * arena's chunks and the block (GPT-2-small LoRA step, batch 8 × 128: peak RSS 4.8 GB with it,
   * 3.5–3.7 GB without; USE-lite 412 → 313 MB), and step times were the same within noise
   * (docs/performance.md).
   */
  memoryPattern?: boolean;
  /**
   * Let kernels pre-pack constant weights into their own layout (default true). Off, every
   * product packs its weight again on each run: GPT-2-small LoRA step peak RSS 3.2 → 2.4 GB, but
   * about 30 % slower (docs/performance.md).
   */
  prepacking?: boolean;
}

export type Feeds = Record<string, Tensor>;
export type Results = Record<string, Tensor>;

const ORT_DTYPES: ReadonlySet<string> = new Set(["float32", "float64", "float16", "int64", "int32", "int16", "int8", "uint8", "bool"]);

export function toOrtTensor(t: Tensor): ort.Tensor {
  if (!ORT_DTYPES.has(t.dtype)) throw new OrtSessionError(`dtype ${t.dtype} cannot be fed to onnxruntime; convert it first`);
  const data = t.dtype === "bool" ? Uint8Array.from(t.data as Uint8Array) : t.data;
  return new ort.Tensor(t.dtype as ort.Tensor.Type, data as ort.Tensor.DataType, [...t.shape]);
}

export function fromOrtTensor(t: ort.Tensor): Tensor {
  const dtype = t.type as DType;
  if (!ORT_DTYPES.has(dtype)) throw new OrtSessionError(`onnxruntime returned unsupported dtype ${t.type}`);
  const data = t.type === "bool" ? Uint8Array.from(t.data as unknown as ArrayLike<number>) : t.data;
  return { dtype, shape: [...t.dims], data: data as Tensor["data"] };
}

function sessionOptions(o: SessionOptions): ort.InferenceSession.SessionOptions {
  const ep = o.ep ?? "cpu";
  const opts: ort.InferenceSession.SessionOptions = {
    executionProviders: [ep],
    graphOptimizationLevel: o.optimization ?? "all",
    enableCpuMemArena: o.memoryArena ?? true,
    enableMemPattern: o.memoryPattern ?? false,
    extra: {
      session: { intra_op: { allow_spinning: o.spinning ? "1" : "0" }, ...(o.prepacking === false ? { disable_prepacking: "1" } : {}) },
      ...(o.constantFoldingMaxBytes !== undefined
        ? { optimization: { constant_folding_max_output_size_in_bytes: String(o.constantFoldingMaxBytes) } }
        : {}),
    },
  };
  if (o.threads !== undefined) opts.intraOpNumThreads = o.threads;
  if (o.profilePrefix) {
    opts.enableProfiling = true;
    opts.profileFilePrefix = o.profilePrefix;
  }
  return opts;
}

/** Execution providers this onnxruntime-node build lists for this platform. */
export function availableProviders(): string[] {
  const backends = (ort as unknown as { listSupportedBackends?: () => { name: string }[] }).listSupportedBackends;
  return backends ? backends().map((b) => b.name) : ["cpu"];
}

/** One compiled graph: run it with host tensors. */
export class CompiledGraph {
  private constructor(
    readonly session: ort.InferenceSession,
    readonly signature: string,
    readonly options: SessionOptions,
  ) {}

  static async create(model: Graph | Uint8Array, options: SessionOptions = {}): Promise<CompiledGraph> {
    const bytes = model instanceof Uint8Array ? model : toOnnx(model);
    const ep = options.ep ?? "cpu";
    if (ep !== "cpu" && !availableProviders().includes(ep)) {
      throw new ExecutionProviderError(ep, `onnxruntime-node ${ort.env.versions.node} on ${process.platform}/${process.arch} offers: ${availableProviders().join(", ")}`);
    }
    let session: ort.InferenceSession;
    try {
      session = await ort.InferenceSession.create(bytes, sessionOptions(options));
    } catch (cause) {
      if (ep !== "cpu") throw new ExecutionProviderError(ep, cause instanceof Error ? cause.message : String(cause));
      throw new OrtSessionError("cannot create a session for the graph", { cause });
    }
    return new CompiledGraph(session, signatureOf(bytes, options), options);
  }

  get inputNames(): readonly string[] {
    return this.session.inputNames;
  }
  get outputNames(): readonly string[] {
    return this.session.outputNames;
  }

  /** Run with named inputs; returns the requested outputs (all by default) as host tensors. */
  async run(feeds: Feeds, outputs?: readonly string[]): Promise<Results> {
    const ortFeeds: Record<string, ort.Tensor> = {};
    for (const name of this.session.inputNames) {
      const t = feeds[name];
      if (!t) throw new OrtSessionError(`missing input '${name}' (inputs: ${this.session.inputNames.join(", ")})`);
      ortFeeds[name] = toOrtTensor(t);
    }
    let res: ort.InferenceSession.ReturnType;
    try {
      res = outputs ? await this.session.run(ortFeeds, [...outputs]) : await this.session.run(ortFeeds);
    } catch (cause) {
      throw new OrtSessionError("run failed", { cause });
    }
    const out: Results = {};
    for (const [k, v] of Object.entries(res)) out[k] = fromOrtTensor(v);
    return out;
  }

  /** Stop profiling and return the profile file name (when `profilePrefix` was set). */
  endProfiling(): void {
    this.session.endProfiling();
  }

  private released = false;

  /** Free the session (idempotent). */
  async release(): Promise<void> {
    if (this.released) return;
    this.released = true;
    await this.session.release();
  }
}

export function signatureOf(bytes: Uint8Array, options: SessionOptions): string {
  const h = createHash("sha256");
  h.update(bytes);
  h.update(JSON.stringify(options));
  return h.digest("hex");
}

/**
 * Sessions keyed by graph signature (hash of the ONNX bytes and the options): building the same
 * graph twice reuses the session instead of re-optimising it.
 */
export class SessionCache {
  private readonly sessions = new Map<string, Promise<CompiledGraph>>();
  constructor(readonly maxEntries = 16) {}

  get size(): number {
    return this.sessions.size;
  }

  async get(model: Graph | Uint8Array, options: SessionOptions = {}): Promise<CompiledGraph> {
    const bytes = model instanceof Uint8Array ? model : toOnnx(model);
    const key = signatureOf(bytes, options);
    let s = this.sessions.get(key);
    if (!s) {
      s = CompiledGraph.create(bytes, options);
      this.sessions.set(key, s);
      s.catch(() => this.sessions.delete(key));
      while (this.sessions.size > this.maxEntries) {
        const oldest = this.sessions.keys().next().value as string;
        const victim = this.sessions.get(oldest);
        this.sessions.delete(oldest);
        void victim?.then((c) => c.release()).catch(() => undefined);
      }
    } else {
      // refresh LRU position
      this.sessions.delete(key);
      this.sessions.set(key, s);
    }
    return s;
  }

  async clear(): Promise<void> {
    const all = [...this.sessions.values()];
    this.sessions.clear();
    await Promise.all(all.map(async (p) => (await p).release().catch(() => undefined)));
  }
}

/** The process-wide session cache. */
export const sessionCache = new SessionCache();
