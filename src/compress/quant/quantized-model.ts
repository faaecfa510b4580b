/**
 * QLoRA-style quantised base models: `quantizeModel(model, { kind: "nf4", blockSize: 64,
 * doubleQuant: true })` stores every frozen linear weight block-wise quantised (as bitsandbytes'
 * `Linear4bit` / `Linear8bitLt` replace `nn.Linear`) and returns a `LoadedModel` whose graphs
 * dequantise those weights inside the graph (see `onnx-graph.ts`). Adapters, `PeftModel` and the
 * `Trainer` work on it unchanged: LoRA tensors are graph inputs, the dequantised weights are
 * constants, so gradients flow only to the adapter.
 *
 * What is quantised: the `.weight` of every linear module the model builder emits, except the
 * output modules (`lm_head`, `classifier`: transformers keeps them in full precision,
 * `llm_int8_skip_modules`) and any module in `skipModules`. Biases, norms and embeddings keep
 * their dtype. `get(name)` of a quantised weight returns `dequantize(q)` (float32), the exact
 * values the graph computes, so merging and DoRA norms see the same weights as the graph.
 */
import { ConfigError } from "../../errors.js";
import { Graph } from "../../graph/graph.js";
import type { Value } from "../../graph/types.js";
import { ModelContext, type WeightSource } from "../../models/context.js";
import type { LoadedModel } from "../../models/load.js";
import { BYTES_PER_ELEMENT, numel, type DType, type Tensor } from "../../tensor.js";
import { emitDequantize } from "./onnx-graph.js";
import {
  DEFAULT_BLOCK_SIZE,
  dequantize,
  quantize,
  quantizedByteSize,
  QUANT_KINDS,
  type QuantizedTensor,
  type QuantKind,
  type QuantScheme,
} from "./quantize.js";

export interface QuantizeModelOptions extends QuantScheme {
  /**
   * Linear modules kept in full precision, by module name or name suffix after a dot
   * (`"classifier"` matches `classifier` and `x.classifier`). Default: the model's output modules.
   */
  readonly skipModules?: readonly string[];
}

/** The resolved quantisation of a model. */
export interface ModelQuantization {
  readonly kind: QuantKind;
  readonly blockSize: number;
  readonly doubleQuant: boolean;
  readonly skipModules: readonly string[];
}

/** A weight source whose linear weights are stored quantised and dequantised inside graphs. */
export class QuantizedWeights implements WeightSource {
  constructor(
    /** Where every other parameter comes from. */
    readonly base: WeightSource,
    /** Parameter name → quantised weight. */
    readonly quantized: ReadonlyMap<string, QuantizedTensor>,
  ) {}

  has(name: string): boolean {
    return this.quantized.has(name) || this.base.has(name);
  }

  /** A quantised weight comes back dequantised (float32, the values the graph uses). */
  get(name: string): Tensor {
    const q = this.quantized.get(name);
    return q ? dequantize(q, name) : this.base.get(name);
  }

  info(name: string): { readonly dtype: DType; readonly shape: readonly number[] } {
    const q = this.quantized.get(name);
    return q ? { dtype: "float32", shape: q.shape } : this.base.info(name);
  }

  keys(): string[] {
    return this.base.keys();
  }

  emitParam(name: string, g: Graph, dtype: DType): Value | null {
    const q = this.quantized.get(name);
    return q ? emitDequantize(g, q, name, dtype) : null;
  }
}

export type QuantizedModel = LoadedModel & { readonly weights: QuantizedWeights; readonly quantization: ModelQuantization };

/** True for a model made by {@link quantizeModel}. */
export function isQuantizedModel(model: LoadedModel): model is QuantizedModel {
  return model.weights instanceof QuantizedWeights && "quantization" in model;
}

/** The linear modules the model's builder emits (a dry run: no weight data is read). */
export function linearModuleNames(model: LoadedModel): string[] {
  const g = new Graph("dry_run");
  const ctx = new ModelContext(g, model.weights, { dryRun: true });
  const inputIds = g.input("input_ids", "int64", ["batch", "seq"]);
  const attentionMask = g.input("attention_mask", "int64", ["batch", "seq"]);
  model.def.build(ctx, model.config, { inputIds, attentionMask });
  return [...new Set(ctx.linearSites.map((s) => s.name))];
}

function skipped(module: string, skip: readonly string[]): boolean {
  return skip.some((s) => module === s || module.endsWith(`.${s}`));
}

/**
 * Quantises the frozen linear weights of `model` (see the module comment). The result shares
 * the other parameters with `model`; the original weights are not modified.
 */
export function quantizeModel(model: LoadedModel, options: QuantizeModelOptions): QuantizedModel {
  if (model.weights instanceof QuantizedWeights) {
    throw new ConfigError("quantizeModel", "model", "is already quantised; quantise the original (unquantised) model instead");
  }
  if (!QUANT_KINDS.includes(options.kind)) {
    throw new ConfigError("quantizeModel", "kind", `unknown quantisation '${String(options.kind)}'; use one of ${QUANT_KINDS.join(", ")}`);
  }
  if (options.kind === "dynamic-unsigned") {
    throw new ConfigError("quantizeModel", "kind", "'dynamic-unsigned' holds only values ≥ 0 and cannot store weights; use 'dynamic', 'int8' or 'nf4'");
  }
  const skipModules = [...(options.skipModules ?? model.def.outputModules)];
  const scheme: QuantScheme = {
    kind: options.kind,
    blockSize: options.blockSize ?? DEFAULT_BLOCK_SIZE[options.kind],
    doubleQuant: options.doubleQuant ?? false,
  };
  const quantized = new Map<string, QuantizedTensor>();
  for (const module of linearModuleNames(model)) {
    if (skipped(module, skipModules)) continue;
    const name = `${module}.weight`;
    if (!model.weights.has(name)) continue;
    quantized.set(name, quantize(model.weights.get(name), scheme, name));
  }
  return {
    ...model,
    weights: new QuantizedWeights(model.weights, quantized),
    quantization: { kind: scheme.kind, blockSize: scheme.blockSize!, doubleQuant: scheme.doubleQuant!, skipModules },
  };
}

/** Storage of a model's parameters, quantised or not (tied parameters counted once). */
export interface ModelSizeReport {
  /** Parameters stored quantised, and their bytes (codes + block scales). */
  readonly quantizedParams: number;
  readonly quantizedBytes: number;
  readonly quantizedTensors: number;
  /** Every other parameter, in its own dtype. */
  readonly otherParams: number;
  readonly otherBytes: number;
  readonly totalParams: number;
  readonly totalBytes: number;
  /** All parameters as float32, for comparison. */
  readonly float32Bytes: number;
  /** Average bits per quantised parameter (NaN when none). */
  readonly bitsPerQuantizedParam: number;
}

/** Bytes the model's parameters occupy as stored (quantised weights in their packed form). */
export function modelSizeReport(model: LoadedModel): ModelSizeReport {
  const tied = new Set(model.def.tiedWeights(model.config).map(([a]) => a));
  const q = model.weights instanceof QuantizedWeights ? model.weights.quantized : new Map<string, QuantizedTensor>();
  let quantizedParams = 0;
  let quantizedBytes = 0;
  let otherParams = 0;
  let otherBytes = 0;
  for (const k of model.weights.keys()) {
    if (tied.has(k)) continue;
    const qt = q.get(k);
    if (qt) {
      quantizedParams += numel(qt.shape);
      quantizedBytes += quantizedByteSize(qt).total;
    } else {
      const info = model.weights.info(k);
      const n = numel(info.shape);
      otherParams += n;
      otherBytes += n * BYTES_PER_ELEMENT[info.dtype];
    }
  }
  const totalParams = quantizedParams + otherParams;
  return {
    quantizedParams,
    quantizedBytes,
    quantizedTensors: q.size,
    otherParams,
    otherBytes,
    totalParams,
    totalBytes: quantizedBytes + otherBytes,
    float32Bytes: 4 * totalParams,
    bitsPerQuantizedParam: quantizedParams === 0 ? NaN : (8 * quantizedBytes) / quantizedParams,
  };
}
