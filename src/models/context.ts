/**
 * What a model builder sees while it emits its graph: where parameters come from, which of them
 * are graph inputs (trainable) rather than initializers (frozen), and the hooks through which
 * tuners rewrite layers by their Hugging Face module name (`bert.encoder.layer.0.attention.self.query`).
 */
import { MissingTensorError, ShapeMismatchError, UnsupportedOptionError } from "../errors.js";
import * as G from "../graph/api.js";
import { dense } from "../graph/composite.js";
import type { Graph } from "../graph/graph.js";
import type { Value } from "../graph/types.js";
import { type DType, type Tensor, bf16ToFloat, floatToHalf, toFloat32 as toF32 } from "../tensor.js";
import { sameBytes } from "../util/bytes.js";

/** Named tensors a model reads its weights from (a `Map`, a lazy safetensors file…). */
export interface WeightSource {
  has(name: string): boolean;
  get(name: string): Tensor;
  /** Dtype and shape without reading the data. */
  info(name: string): { readonly dtype: DType; readonly shape: readonly number[] };
  keys(): string[];
  /**
   * Optional: emits parameter `name` into `g` as a constant subgraph instead of an initializer
   * (e.g. a block-wise quantised weight dequantised inside the graph), or returns null to use
   * `get(name)` as usual. The value must have the parameter's shape and dtype `dtype`, and must
   * not depend on any graph input. Not used for overridden or trainable parameters.
   */
  emitParam?(name: string, g: Graph, dtype: DType): Value | null;
}

export function mapSource(m: ReadonlyMap<string, Tensor>, label = "state dict"): WeightSource {
  return {
    has: (n) => m.has(n),
    get: (n) => {
      const t = m.get(n);
      if (!t) throw new MissingTensorError(label, n);
      return t;
    },
    info: (n) => {
      const t = m.get(n);
      if (!t) throw new MissingTensorError(label, n);
      return { dtype: t.dtype, shape: t.shape };
    },
    keys: () => [...m.keys()],
  };
}

/** `base` with some tensors replaced or added (merged adapters, fresh heads). */
export function overlaySource(base: WeightSource, over: ReadonlyMap<string, Tensor>): WeightSource {
  return {
    has: (n) => over.has(n) || base.has(n),
    get: (n) => over.get(n) ?? base.get(n),
    info: (n) => {
      const t = over.get(n);
      return t ? { dtype: t.dtype, shape: t.shape } : base.info(n);
    },
    keys: () => [...new Set([...base.keys(), ...over.keys()])],
  };
}

/** Everything a tuner needs to rewrite one linear layer. */
export interface LinearSite {
  readonly g: Graph;
  /** HF module name, e.g. `transformer.h.0.attn.c_attn`. */
  readonly name: string;
  readonly x: Value;
  /** The stored weight: `[out, in]` for `nn.Linear`, `[in, out]` for GPT-2 `Conv1D` (`fanInFanOut`). */
  readonly weight: Value;
  readonly bias: Value | null;
  readonly fanInFanOut: boolean;
  readonly inFeatures: number;
  readonly outFeatures: number;
  /** The unmodified layer applied to any input. */
  readonly base: (x: Value) => Value;
  readonly ctx: ModelContext;
}

/** A tuner's rewrite of one linear layer; returns the layer's output. */
export type LinearHook = (site: LinearSite) => Value;

/** A 2-D convolution layer of the model (PyTorch `nn.Conv2d`, group 1), as the builder emits it. */
export interface ConvGeometry {
  readonly inChannels: number;
  readonly outChannels: number;
  /** [kh, kw] */
  readonly kernel: readonly [number, number];
  readonly stride: readonly [number, number];
  /** PyTorch's symmetric padding [ph, pw]. */
  readonly padding: readonly [number, number];
  readonly dilation: readonly [number, number];
}

/** Everything a tuner needs to rewrite one convolution layer. */
export interface ConvSite extends ConvGeometry {
  readonly g: Graph;
  /** HF module name, e.g. `conv1`. */
  readonly name: string;
  /** Input [batch, in, H, W]. */
  readonly x: Value;
  /** The stored kernel [out, in, kh, kw]. */
  readonly weight: Value;
  readonly bias: Value | null;
  /** The unmodified layer applied to any input. */
  readonly base: (x: Value) => Value;
  /** The layer's convolution (stride, padding, dilation) with another kernel, no bias. */
  readonly conv: (x: Value, kernel: Value) => Value;
  readonly ctx: ModelContext;
}

/** A tuner's rewrite of one convolution layer; returns the layer's output. */
export type ConvHook = (site: ConvSite) => Value;

/** Rewrites the token embeddings before the encoder (prompt tuning). */
export type EmbedHook = (args: { g: Graph; embeds: Value; mask: Value }) => { embeds: Value; mask: Value };

/**
 * Prefix tuning (PEFT's `past_key_values` of virtual tokens): per attention layer, keys and values
 * [kvHeads, tokens, headDim] (the same for every row) that every query attends to before the
 * sequence's own; the sequence's positions start after them, as after a cache of `tokens`.
 */
export interface PrefixHook {
  readonly tokens: number;
  kv(layer: number): { readonly key: Value; readonly value: Value };
}

export interface ModelHooks {
  /** The hook for a module, or null to keep the base layer. */
  linear?: (name: string) => LinearHook | null;
  /** The hook for a convolution module, or null to keep the base layer. */
  conv?: (name: string) => ConvHook | null;
  embeds?: EmbedHook;
  prefix?: PrefixHook;
}

/**
 * Compute dtypes a model graph can be built in. `float16` is mixed precision (PyTorch autocast /
 * AMP style): frozen weights are converted to float16 on the host once, trainable parameters stay
 * float32 graph inputs (master weights) cast to float16 inside the graph, and the numerically
 * sensitive parts (attention softmax, norm statistics, the loss) run in float32.
 */
export type ComputeDtype = "float32" | "float64" | "float16";

const COMPUTE_DTYPES: readonly DType[] = ["float32", "float64", "float16"];

/** `dtype` as a compute dtype, or an UnsupportedOptionError naming the option. */
export function checkComputeDtype(dtype: DType, where = "model options"): ComputeDtype {
  if (!COMPUTE_DTYPES.includes(dtype)) {
    throw new UnsupportedOptionError(where, "dtype", dtype, "graphs compute in float32, float64 or float16 (bfloat16 weights load into any of them)");
  }
  return dtype as ComputeDtype;
}

/** The dtype of trainable graph inputs for a compute dtype: float32 master weights under float16. */
export function masterDtype(dtype: ComputeDtype): "float32" | "float64" {
  return dtype === "float64" ? "float64" : "float32";
}

export interface ContextOptions {
  /**
   * Compute dtype of the graph (frozen weights are cast on the host when they differ). Default
   * float32. With float16, trainable parameters are float32 inputs cast inside the graph.
   */
  dtype?: DType;
  /** Parameters to expose as graph inputs (trainable) instead of initializers. */
  inputParams?: (name: string) => boolean;
  /** Replacement tensors by name (e.g. `modules_to_save` copies, merged weights). */
  overrides?: ReadonlyMap<string, Tensor>;
  hooks?: ModelHooks;
  /** Training graph: dropout layers are active. */
  training?: boolean;
  /** Base seed of dropout masks. */
  seed?: number;
  /** Build without reading any weight data (every parameter becomes an input): to list modules and shapes. */
  dryRun?: boolean;
  /**
   * Inference graphs only: builders may use onnxruntime's `com.microsoft` contrib kernels
   * (`MultiHeadAttention`, `SkipLayerNormalization`, `FastGelu`) where a model has a fused form
   * (GPT-2 decoding; docs/performance.md). Needs an execution provider that has them (the CPU one).
   */
  contribOps?: ContribOps;
}

/** Which contrib kernels a graph may use (`ContextOptions.contribOps`). */
export interface ContribOps {
  /** `MultiHeadAttention` over the KV cache (models whose key/value heads equal the query heads). */
  readonly attention?: boolean;
  /** `SkipLayerNormalization`: the residual sum and the following layer norm in one kernel. */
  readonly skipLayerNorm?: boolean;
  /** `FastGelu` for the tanh GELU (`gelu_new`). */
  readonly fastGelu?: boolean;
}

/** All of them. */
export const ALL_CONTRIB_OPS: ContribOps = { attention: true, skipLayerNorm: true, fastGelu: true };

/** Frozen tensors from this size up are shared when byte-identical (see `ModelContext.param`). */
const DEDUPE_MIN_BYTES = 1 << 20;

export class ModelContext {
  readonly dtype: ComputeDtype;
  private readonly params = new Map<string, Value>();
  /** Every linear layer the builder emitted, in order (for `all-linear` and inspection). */
  readonly linearSites: { name: string; inFeatures: number; outFeatures: number; fanInFanOut: boolean }[] = [];
  /** Every convolution layer the builder emitted, in order. */
  readonly convSites: ({ name: string } & ConvGeometry)[] = [];
  /** Parameters exposed as graph inputs, with their initial values. */
  readonly inputParams = new Map<string, Tensor>();

  constructor(
    readonly g: Graph,
    readonly weights: WeightSource,
    readonly options: ContextOptions = {},
  ) {
    this.dtype = checkComputeDtype(options.dtype ?? "float32");
  }

  /** True when the graph computes in float16 with float32 master weights and float32 islands. */
  get mixedPrecision(): boolean {
    return this.dtype === "float16";
  }

  private seed = 0;
  /** A fresh seed for a dropout layer (distinct per layer, deterministic per graph). */
  nextSeed(): number {
    return (this.options.seed ?? 0) * 1000 + ++this.seed;
  }

  get training(): boolean {
    return this.options.training ?? false;
  }

  has(name: string): boolean {
    return this.options.overrides?.has(name) || this.weights.has(name);
  }

  tensor(name: string): Tensor {
    const t = this.options.overrides?.get(name) ?? this.weights.get(name);
    return castTensor(t, this.dtype);
  }

  /** The parameter `name` as a graph value (initializer, or input when trainable). */
  param(name: string, expectShape?: readonly number[]): Value {
    let v = this.params.get(name);
    if (v) return v;
    if (this.options.dryRun) {
      const over = this.options.overrides?.get(name);
      const info = over ?? this.weights.info(name);
      v = this.g.input(name, this.dtype, info.shape);
      this.params.set(name, v);
      return v;
    }
    if (!this.options.overrides?.has(name) && !this.options.inputParams?.(name)) {
      const emitted = this.weights.emitParam?.(name, this.g, this.dtype) ?? null;
      if (emitted) {
        if (expectShape && (emitted.shape.length !== expectShape.length || emitted.shape.some((d, i) => d !== expectShape[i]))) {
          throw new ShapeMismatchError(name, expectShape, emitted.shape, "model weights do not match config.json");
        }
        this.params.set(name, emitted);
        return emitted;
      }
    }
    const stored = this.options.overrides?.get(name) ?? this.weights.get(name);
    if (expectShape && (stored.shape.length !== expectShape.length || stored.shape.some((d, i) => d !== expectShape[i]))) {
      throw new ShapeMismatchError(name, expectShape, stored.shape, "model weights do not match config.json");
    }
    if (this.options.inputParams?.(name)) {
      // trainable: a master-precision input (float32 under float16 compute), cast in the graph
      const master = castTensor(stored, masterDtype(this.dtype));
      const inp = this.g.input(name, master.dtype, master.shape);
      this.inputParams.set(name, master);
      v = G.cast(inp, this.dtype);
    } else {
      const t = castTensor(stored, this.dtype);
      v = this.sharedInitializer(t) ?? this.g.initializer(name, t);
      if (t.data.byteLength >= DEDUPE_MIN_BYTES) this.largeFrozen.push({ t, v });
    }
    this.params.set(name, v);
    return v;
  }

  /** Large frozen tensors already in the graph (to share identical ones, e.g. tied embeddings). */
  private readonly largeFrozen: { t: Tensor; v: Value }[] = [];

  /**
   * An initializer already holding exactly `t`'s bytes (GPT-2's `lm_head.weight` is
   * `transformer.wte.weight`): one initializer instead of two copies in the model bytes and in
   * onnxruntime. Only large tensors are compared (a byte compare that stops at the first difference).
   */
  private sharedInitializer(t: Tensor): Value | null {
    if (t.data.byteLength < DEDUPE_MIN_BYTES) return null;
    for (const c of this.largeFrozen) {
      if (c.t.dtype !== t.dtype || c.t.shape.length !== t.shape.length || c.t.shape.some((d, i) => d !== t.shape[i])) continue;
      if (c.t.data === t.data || sameBytes(c.t.data, t.data)) return c.v;
    }
    return null;
  }

  /**
   * A linear layer by HF module name: `${name}.weight` + `.bias` (`bias` true: required, false:
   * none, absent: if present), rewritten by a tuner hook if any.
   */
  linear(name: string, x: Value, opts: { fanInFanOut?: boolean; bias?: boolean } = {}): Value {
    const fanInFanOut = opts.fanInFanOut ?? false;
    const weight = this.param(`${name}.weight`);
    const bias = opts.bias === true || (opts.bias === undefined && this.has(`${name}.bias`)) ? this.param(`${name}.bias`) : null;
    const [d0, d1] = weight.shape as [number, number];
    const inFeatures = fanInFanOut ? d0 : d1;
    const outFeatures = fanInFanOut ? d1 : d0;
    // one Gemm with the bias accumulated; the stored layout is used as is (transB for [out, in])
    const base = (inp: Value): Value => dense(inp, weight, bias, { transB: !fanInFanOut });
    this.linearSites.push({ name, inFeatures, outFeatures, fanInFanOut });
    const hook = this.options.hooks?.linear?.(name);
    return this.g.withScope(name, () =>
      hook ? hook({ g: this.g, name, x, weight, bias, fanInFanOut, inFeatures, outFeatures, base, ctx: this }) : base(x),
    );
  }

  /**
   * A 2-D convolution by HF module name (`nn.Conv2d`, group 1): `${name}.weight` [out, in, kh, kw]
   * and `.bias` when present, rewritten by a tuner hook if any.
   */
  conv2d(name: string, x: Value, opts: { stride?: readonly [number, number]; padding?: readonly [number, number]; dilation?: readonly [number, number] } = {}): Value {
    const weight = this.param(`${name}.weight`);
    const bias = this.has(`${name}.bias`) ? this.param(`${name}.bias`) : null;
    const [outChannels, inChannels, kh, kw] = weight.shape as [number, number, number, number];
    const stride = opts.stride ?? [1, 1];
    const padding = opts.padding ?? [0, 0];
    const dilation = opts.dilation ?? [1, 1];
    const geo: ConvGeometry = { inChannels, outChannels, kernel: [kh, kw], stride, padding, dilation };
    const conv = (inp: Value, kernel: Value, b: Value | null = null): Value =>
      G.conv2d(inp, kernel, b, { strides: stride, pads: [padding[0], padding[1], padding[0], padding[1]], dilations: dilation });
    const base = (inp: Value): Value => conv(inp, weight, bias);
    this.convSites.push({ name, ...geo });
    const hook = this.options.hooks?.conv?.(name);
    return this.g.withScope(name, () =>
      hook ? hook({ g: this.g, name, x, weight, bias, base, conv: (inp, k) => conv(inp, k), ctx: this, ...geo }) : base(x),
    );
  }

  /** The prefix-tuning hook, or null (architectures that take one: `prefixed` in attention.ts). */
  get prefix(): PrefixHook | null {
    return this.options.hooks?.prefix ?? null;
  }

  /** Prompt-tuning style rewrite of the input embeddings. */
  embeds(embeds: Value, mask: Value): { embeds: Value; mask: Value } {
    const h = this.options.hooks?.embeds;
    return h ? h({ g: this.g, embeds, mask }) : { embeds, mask };
  }
}

/**
 * Cast a float tensor to a float dtype on the host (other dtypes pass through). float16 and
 * bfloat16 values are exact in float32, so every conversion rounds once: a float16 tensor read for
 * a float16 graph is used as stored, and bfloat16 → float16 rounds the bfloat16 value directly.
 * float64 → float16 goes through float32 (`floatToHalf` takes its input as float32), which can
 * differ from one direct rounding by one float16 ulp in rare halfway cases.
 */
export function castTensor(t: Tensor, dtype: DType): Tensor {
  if (t.dtype === dtype) return t;
  const isFloat = t.dtype === "float32" || t.dtype === "float64" || t.dtype === "float16" || t.dtype === "bfloat16";
  if (!isFloat) return t;
  if (dtype === "float64") return { dtype, shape: t.shape, data: t.dtype === "float32" ? Float64Array.from(t.data as Float32Array) : Float64Array.from(toF32(t)) };
  if (dtype === "float32") return { dtype, shape: t.shape, data: t.dtype === "float64" ? Float32Array.from(t.data as Float64Array) : toF32(t) };
  if (dtype === "float16") return { dtype, shape: t.shape, data: toHalfBits(t) };
  return t;
}

/** float32/float64/bfloat16 values as float16 bits (a plain loop: ~15× faster than `Uint16Array.from` with a map function). */
function toHalfBits(t: Tensor): Uint16Array {
  const out = new Uint16Array(t.data.length);
  if (t.dtype === "bfloat16") {
    const src = t.data as Uint16Array;
    for (let i = 0; i < src.length; i++) out[i] = floatToHalf(bf16ToFloat(src[i]!));
  } else {
    const src = t.data as Float32Array | Float64Array;
    for (let i = 0; i < src.length; i++) out[i] = floatToHalf(src[i]!);
  }
  return out;
}
