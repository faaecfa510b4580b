/**
 * onnxruntime sessions (onnxruntime-node, or onnxruntime-web in a browser bundle: `src/platform/ort.ts`): created from a graph (or ONNX bytes), cached by graph signature and
 * options, fed with host `Tensor`s. Frozen weights live in the model as initializers; trainable
 * parameters and data are inputs.
 *
 * `runResident` also takes and returns `ResidentValue`s: outputs left where onnxruntime put them
 * (a GPU buffer on the webgpu execution provider with `outputLocation: "device"`), fed back to the
 * next run without a round trip through host memory (onnxruntime's IO binding).
 */
import { sha256Hex } from "../platform/crypto.js";
import { ort, ortDescription, ortProviders } from "../platform/ort.js";
import { DisposedValueError, ExecutionProviderError, OrtSessionError, UnknownOutputError } from "../errors.js";
import { Graph } from "../graph/graph.js";
import { toOnnx } from "../graph/onnx.js";
import type { DType, Tensor } from "../tensor.js";
import { lowerForWebgpu } from "./webgpu-lowering.js";

export type ExecutionProvider = "cpu" | "webgpu";

/**
 * Where a run leaves an output: `cpu` = host memory; `device` = the execution provider's own
 * memory (onnxruntime's `gpu-buffer` on webgpu; host memory on the cpu provider, which has no other).
 */
export type OutputLocation = "cpu" | "device";

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
  /**
   * Output name → where runs leave it (onnxruntime's `preferredOutputLocation`; default `cpu`).
   * `device` outputs are meant for `runResident(…, { keep })`; `run()` downloads them.
   */
  outputLocation?: Readonly<Record<string, OutputLocation>>;
  /**
   * On `webgpu`: rewrite the nodes the WebGPU EP has no kernel for into GPU ops first
   * (`lowerForWebgpu`: SoftmaxCrossEntropyLoss, LogSoftmax, RandomUniformLike, Sign, Size; default true).
   */
  webgpuLowering?: boolean;
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

/** onnxruntime's data location for an output location on an execution provider. */
export function ortDataLocation(ep: ExecutionProvider, location: OutputLocation): "cpu" | "gpu-buffer" {
  return location === "device" && ep === "webgpu" ? "gpu-buffer" : "cpu";
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
  if (o.outputLocation) {
    opts.preferredOutputLocation = Object.fromEntries(Object.entries(o.outputLocation).map(([k, v]) => [k, ortDataLocation(ep, v)]));
  }
  if (o.profilePrefix) {
    opts.enableProfiling = true;
    opts.profileFilePrefix = o.profilePrefix;
  }
  return opts;
}

/** Execution providers this onnxruntime build (onnxruntime-node, or onnxruntime-web in a browser) offers here. */
export function availableProviders(): string[] {
  return ortProviders();
}

/**
 * An output a run left in onnxruntime's memory (see `CompiledGraph.runResident`): on webgpu with
 * `outputLocation: "device"` a GPU buffer, otherwise onnxruntime's host copy. Feed it to a later
 * run as it is (no host round trip), `download()` it, and `dispose()` it after its last use, before
 * releasing the session that made it (on webgpu its buffer belongs to that session's allocator).
 */
export class ResidentValue {
  private value: ort.Tensor | null;
  readonly dtype: DType;
  readonly shape: readonly number[];
  /** `device` when the data lives in the execution provider's memory (a GPU buffer). */
  readonly location: OutputLocation;

  /** Wraps an onnxruntime tensor; `name` (the output it came from) appears in errors. */
  constructor(
    readonly name: string,
    value: ort.Tensor,
  ) {
    if (!ORT_DTYPES.has(value.type)) throw new OrtSessionError(`onnxruntime returned unsupported dtype ${value.type} for '${name}'`);
    this.value = value;
    this.dtype = value.type as DType;
    this.shape = [...value.dims];
    this.location = value.location === "cpu" ? "cpu" : "device";
  }

  get disposed(): boolean {
    return this.value === null;
  }

  /** The onnxruntime tensor, for feeding a run. */
  ortValue(use = "fed to a run"): ort.Tensor {
    if (!this.value) throw new DisposedValueError(this.name, use);
    return this.value;
  }

  /** A host copy (a GPU buffer is read back; host data is copied, so the result never aliases the value). */
  async download(): Promise<Tensor> {
    return readBack(this.ortValue("downloaded"));
  }

  /** Frees the value (its GPU buffer on webgpu); idempotent. */
  dispose(): void {
    const v = this.value;
    this.value = null;
    v?.dispose();
  }
}

/**
 * Identity sessions on the webgpu provider, one per dtype and rank, that copy a GPU buffer to host
 * memory. onnxruntime-node 1.30 aborts the process in `Tensor.getData()` for a `gpu-buffer`
 * tensor (uncaught native exception, seen with Dawn on Vulkan), while feeding that tensor to a
 * run whose output is located on the host works; so reading back is a run.
 */
const readers = new Map<string, Promise<ort.InferenceSession>>();

function readerFor(dtype: DType, rank: number): Promise<ort.InferenceSession> {
  const key = `${dtype}/${rank}`;
  let s = readers.get(key);
  if (!s) {
    const g = new Graph("read_back");
    const x = g.input("x", dtype, Array.from({ length: rank }, (_, i) => `d${i}`));
    g.output(g.op1("Identity", [x]), "y");
    s = ort.InferenceSession.create(toOnnx(g), { executionProviders: ["webgpu"], graphOptimizationLevel: "disabled" });
    readers.set(key, s);
    s.catch(() => readers.delete(key));
  }
  return s;
}

/** A host copy of an onnxruntime value, wherever it lives; the value stays valid. */
async function readBack(v: ort.Tensor): Promise<Tensor> {
  if (v.location === "cpu") {
    const t = fromOrtTensor(v);
    return { ...t, data: t.data.slice() as Tensor["data"] };
  }
  const reader = await readerFor(v.type as DType, v.dims.length);
  return fromOrtTensor((await reader.run({ x: v })).y!);
}

/** An onnxruntime output as a host tensor: device data is read back and its buffer freed. */
async function toHost(v: ort.Tensor): Promise<Tensor> {
  if (v.location === "cpu") return fromOrtTensor(v);
  try {
    return await readBack(v);
  } finally {
    v.dispose();
  }
}

/** Feeds of `runResident`: host tensors or values kept by an earlier run. */
export type ResidentFeeds = Readonly<Record<string, Tensor | ResidentValue>>;

export interface ResidentRunOptions {
  /** Outputs returned as `ResidentValue`s, left where the run put them. */
  readonly keep?: readonly string[];
  /** Outputs to compute (default: all); must include every `keep` name. */
  readonly outputs?: readonly string[];
}

export interface ResidentResults {
  /** The computed outputs not in `keep`, as host tensors. */
  readonly host: Results;
  /** The `keep` outputs; the caller owns them (dispose each after its last use). */
  readonly kept: ReadonlyMap<string, ResidentValue>;
}

/** One compiled graph: run it with host tensors (`run`) or with values kept in onnxruntime (`runResident`). */
export class CompiledGraph {
  private constructor(
    readonly session: ort.InferenceSession,
    readonly signature: string,
    readonly options: SessionOptions,
  ) {}

  static async create(model: Graph | Uint8Array, options: SessionOptions = {}): Promise<CompiledGraph> {
    const ep = options.ep ?? "cpu";
    const lower = ep === "webgpu" && options.webgpuLowering !== false;
    const bytes = lower ? lowerForWebgpu(model).bytes : model instanceof Uint8Array ? model : toOnnx(model);
    if (ep !== "cpu" && !availableProviders().includes(ep)) {
      throw new ExecutionProviderError(ep, `${ortDescription()} offers: ${availableProviders().join(", ")}`);
    }
    const where = "session option outputLocation";
    if (!(model instanceof Uint8Array) && options.outputLocation) {
      const known = model.outputs.map((o) => o.name);
      const unknown = Object.keys(options.outputLocation).find((n) => !known.includes(n));
      if (unknown !== undefined) throw new UnknownOutputError(unknown, known, where);
    }
    let session: ort.InferenceSession;
    try {
      session = await ort.InferenceSession.create(bytes, sessionOptions(options));
    } catch (cause) {
      // ONNX bytes: onnxruntime checks the output names of preferredOutputLocation itself
      const bad = cause instanceof Error ? /"(.*)" is not a valid output name/.exec(cause.message) : null;
      if (bad) throw new UnknownOutputError(bad[1]!, [], where);
      if (ep !== "cpu") throw new ExecutionProviderError(ep, cause instanceof Error ? cause.message : String(cause));
      throw new OrtSessionError("cannot create a session for the graph", { cause });
    }
    return new CompiledGraph(session, signatureOf(bytes, options), options);
  }

  /** Some output is located in device memory (webgpu with `outputLocation: "device"`). */
  private get hasDeviceOutputs(): boolean {
    const ep = this.options.ep ?? "cpu";
    return Object.values(this.options.outputLocation ?? {}).some((l) => ortDataLocation(ep, l) !== "cpu");
  }

  get inputNames(): readonly string[] {
    return this.session.inputNames;
  }
  get outputNames(): readonly string[] {
    return this.session.outputNames;
  }

  /** Run with named inputs; returns the requested outputs (all by default) as host tensors. */
  async run(feeds: Feeds, outputs?: readonly string[]): Promise<Results> {
    return (await this.runResident(feeds, outputs ? { outputs } : {})).host;
  }

  /**
   * Run with host tensors and/or resident values as inputs. Outputs named in `keep` come back as
   * `ResidentValue`s without a copy to host memory (on webgpu: when the session's
   * `outputLocation` puts them on the device); the others as host tensors. The fed resident values
   * stay valid (the caller disposes them).
   */
  async runResident(feeds: ResidentFeeds, options: ResidentRunOptions = {}): Promise<ResidentResults> {
    const names = this.session.outputNames;
    const wanted = options.outputs ?? names;
    const keep = new Set(options.keep ?? []);
    for (const n of wanted) if (!names.includes(n)) throw new UnknownOutputError(n, names, "run outputs");
    for (const n of keep) {
      if (!names.includes(n)) throw new UnknownOutputError(n, names, "runResident keep");
      if (!wanted.includes(n)) throw new UnknownOutputError(n, wanted, "runResident keep (not among the requested outputs)");
    }
    const ortFeeds: Record<string, ort.Tensor> = {};
    for (const name of this.session.inputNames) {
      const t = feeds[name];
      if (!t) throw new OrtSessionError(`missing input '${name}' (inputs: ${this.session.inputNames.join(", ")})`);
      ortFeeds[name] = t instanceof ResidentValue ? t.ortValue(`fed to input '${name}'`) : toOrtTensor(t);
    }
    // onnxruntime-node 1.30 applies preferredOutputLocation by position in the list of fetched
    // outputs, not by name (fetching ["total"] of outputs [next_state → gpu-buffer, total] returns
    // total as a gpu-buffer): with device-located outputs, fetch them all in session order.
    const positional = this.hasDeviceOutputs && options.outputs !== undefined;
    let res: ort.InferenceSession.ReturnType;
    try {
      res = options.outputs && !positional ? await this.session.run(ortFeeds, [...options.outputs]) : await this.session.run(ortFeeds);
    } catch (cause) {
      throw new OrtSessionError("run failed", { cause });
    }
    if (positional) {
      const picked: Record<string, ort.Tensor> = {};
      for (const [k, v] of Object.entries(res)) {
        if (wanted.includes(k)) picked[k] = v;
        else v.dispose();
      }
      res = picked;
    }
    const host: Results = {};
    const kept = new Map<string, ResidentValue>();
    try {
      for (const [k, v] of Object.entries(res)) {
        if (keep.has(k)) kept.set(k, new ResidentValue(k, v));
        else host[k] = await toHost(v);
      }
    } catch (e) {
      for (const v of Object.values(res)) v.dispose();
      throw e;
    }
    return { host, kept };
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
  // output locations sorted by name: the same placement in another key order is the same session
  const { outputLocation, ...rest } = options;
  return sha256Hex(bytes, JSON.stringify(outputLocation ? { ...rest, outputLocation: Object.entries(outputLocation).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)) } : rest));
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
