/**
 * The op builders: small functions that append one ONNX node (or a few) to the graph their
 * first value belongs to. Numbers are accepted where a scalar of the other operand's dtype is
 * meant (`mul(x, 0.5)`). Composite layers (gelu, layer norms, losses) live in `composite.ts`.
 */
import { GraphBuildError } from "../errors.js";
import type { DType } from "../tensor.js";
import { foldDim, parseDimOrName } from "./dim.js";
import type { Graph } from "./graph.js";
import type { Dim, Value } from "./types.js";

export type Operand = Value | number;

function graphOf(...xs: Operand[]): Graph {
  for (const x of xs) if (typeof x !== "number") return x.graph;
  throw new GraphBuildError("op", "at least one operand must be a graph value");
}

function lift(g: Graph, x: Operand, like: DType): Value {
  return typeof x === "number" ? g.scalar(x, like) : x;
}

function dtypeOf(...xs: Operand[]): DType {
  for (const x of xs) if (typeof x !== "number") return x.dtype;
  return "float32";
}

function binary(op: "Add" | "Sub" | "Mul" | "Div" | "Pow" | "Max" | "Min", a: Operand, b: Operand): Value {
  const g = graphOf(a, b);
  const dt = dtypeOf(a, b);
  return g.op1(op, [lift(g, a, dt), lift(g, b, dt)]);
}

export const add = (a: Operand, b: Operand): Value => binary("Add", a, b);
export const sub = (a: Operand, b: Operand): Value => binary("Sub", a, b);
export const mul = (a: Operand, b: Operand): Value => binary("Mul", a, b);
export const div = (a: Operand, b: Operand): Value => binary("Div", a, b);
export const pow = (a: Operand, b: Operand): Value => binary("Pow", a, b);
export const maximum = (a: Operand, b: Operand): Value => binary("Max", a, b);
export const minimum = (a: Operand, b: Operand): Value => binary("Min", a, b);

export const neg = (x: Value): Value => x.graph.op1("Neg", [x]);
export const sqrt = (x: Value): Value => x.graph.op1("Sqrt", [x]);
export const exp = (x: Value): Value => x.graph.op1("Exp", [x]);
export const log = (x: Value): Value => x.graph.op1("Log", [x]);
export const tanh = (x: Value): Value => x.graph.op1("Tanh", [x]);
/** erf; onnxruntime has no float64 Erf kernel, so float64 inputs are evaluated in float32. */
export const erf = (x: Value): Value =>
  x.dtype === "float64" ? cast(x.graph.op1("Erf", [cast(x, "float32")]), "float64") : x.graph.op1("Erf", [x]);
export const sigmoid = (x: Value): Value => x.graph.op1("Sigmoid", [x]);
export const relu = (x: Value): Value => x.graph.op1("Relu", [x]);
export const abs = (x: Value): Value => x.graph.op1("Abs", [x]);
export const sign = (x: Value): Value => x.graph.op1("Sign", [x]);
export const cos = (x: Value): Value => x.graph.op1("Cos", [x]);
export const sin = (x: Value): Value => x.graph.op1("Sin", [x]);
export const reciprocal = (x: Value): Value => x.graph.op1("Reciprocal", [x]);
export const identity = (x: Value): Value => x.graph.op1("Identity", [x]);

export function matmul(a: Value, b: Value): Value {
  return a.graph.op1("MatMul", [a, b]);
}

/** Gemm: alpha·op(A)·op(B) + beta·C for 2-D A and B. */
export function gemm(
  a: Value,
  b: Value,
  c: Value | null,
  opts: { transA?: boolean; transB?: boolean; alpha?: number; beta?: number } = {},
): Value {
  const attrs: Record<string, number> = {};
  if (opts.transA) attrs.transA = 1;
  if (opts.transB) attrs.transB = 1;
  if (opts.alpha !== undefined) attrs.alpha = opts.alpha;
  if (opts.beta !== undefined) attrs.beta = opts.beta;
  return a.graph.op1("Gemm", c ? [a, b, c] : [a, b], attrs);
}

/** 2-D convolution (ONNX `Conv`, NCHW, group 1): x [N, C, H, W], w [M, C, kh, kw], optional bias [M]. */
export function conv2d(
  x: Value,
  w: Value,
  bias: Value | null,
  opts: { strides?: readonly [number, number]; pads?: readonly [number, number, number, number]; dilations?: readonly [number, number] } = {},
): Value {
  const attrs: Record<string, number[]> = {};
  if (opts.strides) attrs.strides = [...opts.strides];
  if (opts.pads) attrs.pads = [...opts.pads];
  if (opts.dilations) attrs.dilations = [...opts.dilations];
  return x.graph.op1("Conv", bias ? [x, w, bias] : [x, w], attrs);
}

/** ONNX `ConvTranspose` (2-D, group 1): x [N, M, H, W], w [M, C, kh, kw] → [N, C, Ho, Wo]. */
export function convTranspose2d(
  x: Value,
  w: Value,
  opts: { strides?: readonly [number, number]; pads?: readonly [number, number, number, number]; dilations?: readonly [number, number]; outputPadding?: readonly [number, number] } = {},
): Value {
  const attrs: Record<string, number[]> = {};
  if (opts.strides) attrs.strides = [...opts.strides];
  if (opts.pads) attrs.pads = [...opts.pads];
  if (opts.dilations) attrs.dilations = [...opts.dilations];
  if (opts.outputPadding) attrs.output_padding = [...opts.outputPadding];
  return x.graph.op1("ConvTranspose", [x, w], attrs);
}

export function softmax(x: Value, axis = -1): Value {
  return x.graph.op1("Softmax", [x], { axis });
}
export function logSoftmax(x: Value, axis = -1): Value {
  return x.graph.op1("LogSoftmax", [x], { axis });
}
/** ONNX LayerNormalization over the last `x.rank - axis` dims. */
export function layerNormalization(x: Value, scale: Value, bias: Value | null, epsilon: number, axis = -1): Value {
  return x.graph.op1("LayerNormalization", bias ? [x, scale, bias] : [x, scale], { axis, epsilon });
}

/**
 * onnxruntime's `MultiHeadAttention` (com.microsoft): `heads` heads of `q` [B, S, N·h] over the
 * cached keys and values `past` ([B, N, P, h] each) followed by the new ones `k`, `v` [B, L, N·h],
 * with the additive `bias` [B|1, N|1, S, P+L] on the scaled scores; output [B, S, N·h].
 */
export function multiHeadAttention(q: Value, k: Value, v: Value, opts: { heads: number; scale: number; bias?: Value; past?: { key: Value; value: Value } }): Value {
  const inputs = [q, k, v];
  const slots = [0, 1, 2];
  if (opts.bias) {
    inputs.push(opts.bias);
    slots.push(5);
  }
  if (opts.past) {
    inputs.push(opts.past.key, opts.past.value);
    slots.push(6, 7);
  }
  return q.graph.op("MultiHeadAttention", inputs, { num_heads: opts.heads, scale: opts.scale }, slots)[0]!;
}

/** onnxruntime's `SkipLayerNormalization`: [layer norm of x + skip, x + skip] in one kernel (x, skip [B, S, H]). */
export function skipLayerNormalization(x: Value, skip: Value, scale: Value, bias: Value | null, epsilon: number): [Value, Value] {
  const out = x.graph.op("SkipLayerNormalization", bias ? [x, skip, scale, bias] : [x, skip, scale], { epsilon });
  return [out[0]!, out[3]!];
}

/** onnxruntime's `FastGelu`: GELU with the tanh approximation (transformers' `gelu_new`) in one kernel. */
export function fastGelu(x: Value): Value {
  return x.graph.op1("FastGelu", [x]);
}

export function reduceSum(x: Value, axes: readonly number[], keepdims = true): Value {
  return x.graph.op1("ReduceSum", [x, x.graph.ints(axes)], { keepdims: keepdims ? 1 : 0 });
}
export function reduceMean(x: Value, axes: readonly number[], keepdims = true): Value {
  return x.graph.op1("ReduceMean", [x], { axes, keepdims: keepdims ? 1 : 0 });
}
export function reduceMax(x: Value, axes: readonly number[], keepdims = true): Value {
  return x.graph.op1("ReduceMax", [x], { axes, keepdims: keepdims ? 1 : 0 });
}
/** Sum of all elements, as a scalar. */
export function sumAll(x: Value): Value {
  return x.graph.op1("ReduceSum", [x], { keepdims: 0 });
}
export function meanAll(x: Value): Value {
  return x.graph.op1("ReduceMean", [x], { keepdims: 0 });
}

export function gather(data: Value, indices: Value, axis = 0): Value {
  return data.graph.op1("Gather", [data, indices], { axis });
}
export function gatherElements(data: Value, indices: Value, axis: number): Value {
  return data.graph.op1("GatherElements", [data, indices], { axis });
}
export function scatterElementsAdd(data: Value, indices: Value, updates: Value, axis: number): Value {
  return data.graph.op1("ScatterElements", [data, indices, updates], { axis, reduction: "add" });
}
export function scatterNDAdd(data: Value, indices: Value, updates: Value): Value {
  return data.graph.op1("ScatterND", [data, indices, updates], { reduction: "add" });
}

/** Reshape with ONNX semantics: 0 copies the input dim, -1 is inferred. */
export function reshape(x: Value, shape: readonly number[] | Value): Value {
  const s = Array.isArray(shape) ? x.graph.ints(shape as number[]) : (shape as Value);
  return x.graph.op1("Reshape", [x, s]);
}
export function transpose(x: Value, perm: readonly number[]): Value {
  return x.graph.op1("Transpose", [x], { perm });
}
export function concat(xs: readonly Value[], axis: number): Value {
  if (xs.length === 0) throw new GraphBuildError("Concat", "no inputs");
  return xs[0]!.graph.op1("Concat", xs, { axis });
}
/** Slice with constant starts/ends (use a large number such as `Number.MAX_SAFE_INTEGER` for "to the end"). */
export function slice(x: Value, starts: readonly number[], ends: readonly number[], axes: readonly number[], steps?: readonly number[]): Value {
  const g = x.graph;
  const ins = [x, g.ints(starts), g.ints(ends), g.ints(axes)];
  if (steps) ins.push(g.ints(steps));
  return g.op1("Slice", ins);
}
export function split(x: Value, sizes: readonly number[], axis: number): Value[] {
  return x.graph.op("Split", [x, x.graph.ints(sizes)], { axis });
}
export function squeeze(x: Value, axes: readonly number[]): Value {
  return x.graph.op1("Squeeze", [x, x.graph.ints(axes)]);
}
export function unsqueeze(x: Value, axes: readonly number[]): Value {
  return x.graph.op1("Unsqueeze", [x, x.graph.ints(axes)]);
}
/** Broadcast `x` to a shape given as a runtime int64 tensor (e.g. `shapeOf(y)`). */
export function expand(x: Value, shape: Value): Value {
  return x.graph.op1("Expand", [x, shape]);
}
export function where(cond: Value, a: Operand, b: Operand): Value {
  const g = cond.graph;
  const dt = dtypeOf(a, b);
  return g.op1("Where", [cond, lift(g, a, dt), lift(g, b, dt)]);
}
export function equal(a: Operand, b: Operand): Value {
  const g = graphOf(a, b);
  const dt = dtypeOf(a, b);
  return g.op1("Equal", [lift(g, a, dt), lift(g, b, dt)]);
}
export function less(a: Operand, b: Operand): Value {
  const g = graphOf(a, b);
  const dt = dtypeOf(a, b);
  return g.op1("Less", [lift(g, a, dt), lift(g, b, dt)]);
}
export function greater(a: Operand, b: Operand): Value {
  const g = graphOf(a, b);
  const dt = dtypeOf(a, b);
  return g.op1("Greater", [lift(g, a, dt), lift(g, b, dt)]);
}
export function not(x: Value): Value {
  return x.graph.op1("Not", [x]);
}
export function and(a: Value, b: Value): Value {
  return a.graph.op1("And", [a, b]);
}
export function cast(x: Value, to: DType): Value {
  if (x.dtype === to) return x;
  return x.graph.op1("Cast", [x], { to: onnxDataType(to) });
}
export function cumsum(x: Value, axis: number, opts: { exclusive?: boolean; reverse?: boolean } = {}): Value {
  const g = x.graph;
  return g.op1("CumSum", [x, g.constant({ dtype: "int64", shape: [], data: BigInt64Array.of(BigInt(axis)) })], {
    exclusive: opts.exclusive ? 1 : 0,
    reverse: opts.reverse ? 1 : 0,
  });
}
export function range(start: Value, limit: Value, delta: Value): Value {
  return start.graph.op1("Range", [start, limit, delta]);
}
/** The runtime shape of `x` as an int64 vector. */
export function shapeOf(x: Value): Value {
  return x.graph.op1("Shape", [x]);
}

const shapeTensors = new WeakMap<Graph, Map<string, Value>>();

function cached(g: Graph, key: string, make: () => Value | null): Value | null {
  let cache = shapeTensors.get(g);
  if (!cache) shapeTensors.set(g, (cache = new Map()));
  let v = cache.get(key);
  if (!v) {
    const made = make();
    if (!made) return null;
    cache.set(key, (v = made));
  }
  return v;
}

/** A symbolic dim (`"batch"`, `"batch*seq"`, `"(seq+4)*batch"`) as int64 [1], read off the graph inputs' shapes. */
function symbolicDim(g: Graph, d: string): Value | null {
  return cached(g, `dim:${d}`, () => {
    const e = parseDimOrName(d)!;
    if (e.kind === "sym") {
      for (const inp of g.inputs) {
        const j = inp.shape.indexOf(e.name);
        if (j >= 0) return slice(shapeOf(inp), [j], [j + 1], [0]);
      }
      return null;
    }
    return foldDim<Value>(e, { num: (n) => g.ints([n]), sym: (name) => symbolicDim(g, name), add, mul });
  });
}

/**
 * The shape of `x` as an int64 vector, built as cheaply as the static shape allows: a constant
 * when every dim is a number; from the graph inputs' shapes when the dims are named (dims with
 * equal names have equal sizes at run time), cached per graph, so backward graphs neither
 * recompute the same shape for every reshape nor keep a large activation alive just to read its
 * shape; `Shape(x)` otherwise. `last` replaces the last dim.
 */
export function shapeTensor(x: Value, last?: number): Value {
  const g = x.graph;
  const dims = last === undefined ? [...x.shape] : [...x.shape.slice(0, -1), last];
  if (dims.every((d): d is number => typeof d === "number")) return g.ints(dims);
  const named = dims.some((d) => d === null)
    ? null
    : cached(g, `shape:${JSON.stringify(dims)}`, () => {
        const parts = dims.map((d) => (typeof d === "number" ? g.ints([d]) : symbolicDim(g, d!)));
        return parts.every((p) => p !== null) ? concat(parts as Value[], 0) : null;
      });
  if (named) return named;
  return last === undefined ? shapeOf(x) : concat([slice(shapeOf(x), [0], [-1], [0]), g.ints([last])], 0);
}

export function pad(x: Value, pads: readonly number[], value = 0): Value {
  const g = x.graph;
  return g.op1("Pad", [x, g.ints(pads), g.scalar(value, x.dtype)]);
}
/** Zeros with the runtime shape and dtype of `x`. */
export function zerosLike(x: Value): Value {
  return expand(x.graph.scalar(0, x.dtype), shapeTensor(x));
}
/** Uniform [0, 1) samples with the shape of `x`, of dtype `dtype` (default: x's). */
export function randomUniformLike(x: Value, seed: number, dtype: DType = x.dtype): Value {
  return x.graph.op1("RandomUniformLike", [x], { seed, dtype: onnxDataType(dtype) });
}

/** ONNX TensorProto.DataType codes. */
export const ONNX_DTYPE: Record<DType, number> = {
  float32: 1,
  uint8: 2,
  int8: 3,
  int16: 5,
  int32: 6,
  int64: 7,
  bool: 9,
  float16: 10,
  float64: 11,
  bfloat16: 16,
};

export function onnxDataType(d: DType): number {
  return ONNX_DTYPE[d];
}

export function dtypeFromOnnx(code: number): DType {
  for (const [k, v] of Object.entries(ONNX_DTYPE)) if (v === code) return k as DType;
  throw new GraphBuildError("Cast", `unsupported ONNX data type ${code}`);
}

/** True when the dims are statically known numbers. */
export function isStatic(shape: readonly Dim[]): shape is number[] {
  return shape.every((d) => typeof d === "number");
}

/** Number of elements of `x` as an int64 scalar. */
export function size(x: Value): Value {
  return x.graph.op1("Size", [x]);
}
