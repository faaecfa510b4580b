/**
 * The WebGPU lowering pass: rewrites the nodes that onnxruntime 1.30's WebGPU execution provider
 * has no kernel for (see `webgpu-kernels.ts` and docs/webgpu.md) into ops it runs on the GPU, so
 * their inputs are not copied to the host on every run. Applied by `CompiledGraph.create` when the
 * execution provider is `webgpu` (`SessionOptions.webgpuLowering`); CPU sessions keep the graph as
 * built (there, `SoftmaxCrossEntropyLoss` and `LogSoftmax` are single fused kernels and faster).
 *
 * The pass works on the ONNX ModelProto, after autodiff and export, not on the `Graph`:
 * `CompiledGraph.create` and `SessionCache` also receive ONNX bytes (the cache exports the graph
 * before creating the session), the caller's `Graph` stays untouched (it is append-only and may be
 * exported again for the CPU), and the rewrite sees exactly the nodes onnxruntime will place.
 * Given a `Graph`, its value dtypes are taken from the graph; given bytes, they are inferred.
 *
 * Rewrites, each the same function up to float rounding:
 * - `SoftmaxCrossEntropyLoss` (reduction none, two inputs) → log-sum-exp: m = ReduceMax(x, [1]),
 *   z = x − m, lse = Log(ReduceSum(Exp(z), [1])), log_prob = z − lse, rows = lse − z[label]
 *   (GatherElements), 0 where label = ignore_index. float16 scores are computed in float32.
 * - `LogSoftmax` → z − Log(ReduceSum(Exp(z))) with z = x − ReduceMax(x) over its axis.
 * - `RandomUniformLike(x)` → `RandomUniformLike(Expand(int8 0, Shape(x)))`: the same samples
 *   (they depend on the seed, shape and output dtype only), but the GPU tensor x is no longer
 *   read back to the host just for its shape (Shape reads metadata; Expand(int8) runs on the CPU).
 * - `Sign` → Where(x > 0, 1, Where(x < 0, −1, x − x)) (0 → +0 and NaN → NaN, as onnxruntime's Sign).
 * - `Size` → ReduceProd(Shape(x)).
 */
import onnxProto, { type onnx as OnnxTypes } from "onnx-proto";
import { GraphBuildError, UnsupportedFileTypeError } from "../errors.js";
import { dtypeFromOnnx, onnxDataType } from "../graph/api.js";
import type { Graph } from "../graph/graph.js";
import type { Dim } from "../graph/types.js";
import { liveNodes, nameValues, toModelProto } from "../graph/onnx.js";
import { type DType, floatToHalf } from "../tensor.js";

const { onnx } = onnxProto;
const A = onnx.AttributeProto.AttributeType;

/** The ops the pass rewrites. */
export const WEBGPU_LOWERED_OPS = ["SoftmaxCrossEntropyLoss", "LogSoftmax", "RandomUniformLike", "Sign", "Size"] as const;
export type WebgpuLoweredOp = (typeof WEBGPU_LOWERED_OPS)[number];

export interface WebgpuLoweringOptions {
  /** Which rewrites to apply (default: all of `WEBGPU_LOWERED_OPS`). */
  readonly ops?: readonly WebgpuLoweredOp[];
  /**
   * Write `value_info` (dtype and shape) for the values whose shape is known: every node output
   * of a `Graph`, and the values the rewrites add. For tools that read the bytes, such as
   * `predictWebgpuPlacement` counting copy sizes; sessions do not need it (default false).
   */
  readonly annotate?: boolean;
}

/** A node of a lowerable op that the pass left as it was, and why. */
export interface WebgpuLoweringSkip {
  readonly node: string;
  readonly op: WebgpuLoweredOp;
  readonly reason: string;
}

export interface WebgpuLoweringResult {
  /** The lowered model (given bytes: those bytes themselves when nothing was rewritten). */
  readonly bytes: Uint8Array;
  /** Nodes rewritten, per op. */
  readonly lowered: Readonly<Record<WebgpuLoweredOp, number>>;
  /** Nodes of these ops left unchanged (float64 data, unsupported attributes, unknown dtypes…). */
  readonly skipped: readonly WebgpuLoweringSkip[];
  /** Nodes before and after. */
  readonly nodesBefore: number;
  readonly nodesAfter: number;
}

type Attr = OnnxTypes.IAttributeProto;
type NodeProto = OnnxTypes.INodeProto;

const FLOAT: readonly DType[] = ["float32", "float16"];

function num(v: number | { toString(): string } | null | undefined): number | null {
  return v === null || v === undefined ? null : typeof v === "number" ? v : Number(v.toString());
}

function attr(n: NodeProto, name: string): Attr | undefined {
  return n.attribute?.find((a) => a.name === name);
}

function attrInt(n: NodeProto, name: string): number | null {
  return num(attr(n, name)?.i);
}

function attrString(n: NodeProto, name: string): string | null {
  const s = attr(n, name)?.s;
  return s ? new TextDecoder().decode(s) : null;
}

function dtypeOf(code: number | null | undefined): DType | null {
  if (code === null || code === undefined || code === 0) return null;
  try {
    return dtypeFromOnnx(code);
  } catch {
    return null; // a dtype peft-ts has no name for: left unknown
  }
}

const BOOL_OUT = new Set(["Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "And", "Or", "Xor", "Not", "IsNaN", "IsInf"]);
const INT64_OUT = new Set(["Shape", "Size", "ArgMax", "ArgMin", "NonZero"]);

/**
 * Output dtypes of an ai.onnx node from its inputs' dtypes, for models given as bytes (peft-ts
 * exports no value_info). The general ONNX rule (output type = first input's type) with the ops
 * that differ; other domains are left unknown, and a node whose rewrite needs an unknown dtype is
 * skipped rather than guessed.
 */
function outputDtypes(n: NodeProto, ins: readonly (DType | null)[]): (DType | null)[] {
  const op = n.opType ?? "";
  const count = n.output?.length ?? 0;
  if (n.domain && n.domain !== "ai.onnx") return new Array<DType | null>(count).fill(null);
  let d: DType | null = ins[0] ?? null;
  if (BOOL_OUT.has(op)) d = "bool";
  else if (INT64_OUT.has(op)) d = "int64";
  else if (op === "Cast") d = dtypeOf(attrInt(n, "to"));
  else if (op === "CastLike") d = ins[1] ?? null;
  else if (op === "Where") d = ins[1] ?? null;
  else if (op === "RandomUniformLike" || op === "RandomNormalLike" || op === "EyeLike") d = dtypeOf(attrInt(n, "dtype")) ?? d;
  else if (op === "RandomUniform" || op === "RandomNormal") d = dtypeOf(attrInt(n, "dtype")) ?? "float32";
  else if (op === "ConstantOfShape") d = dtypeOf(attr(n, "value")?.t?.dataType) ?? "float32";
  else if (op === "Constant") {
    const a = n.attribute?.[0];
    d = a?.t ? dtypeOf(a.t.dataType) : a?.name === "value_float" || a?.name === "value_floats" ? "float32" : a?.name === "value_int" || a?.name === "value_ints" ? "int64" : null;
  } else if (op === "DequantizeLinear") d = ins[1] ?? null;
  else if (op === "QuantizeLinear") d = ins[2] ?? "uint8";
  else if (op === "MatMulInteger" || op === "ConvInteger") d = "int32";
  else if (op === "DynamicQuantizeLinear") return ["uint8", "float32", "uint8"].slice(0, count) as DType[];
  const out = new Array<DType | null>(count).fill(d);
  if (op === "LayerNormalization") for (let i = 1; i < count; i++) out[i] = "float32";
  if (op === "TopK" && count > 1) out[1] = "int64";
  return out;
}

interface Info {
  readonly dtype: DType | null;
  readonly shape: readonly Dim[] | null;
}

function declaredInfo(vi: OnnxTypes.IValueInfoProto): Info {
  const t = vi.type?.tensorType;
  const dims = t?.shape?.dim;
  return {
    dtype: dtypeOf(t?.elemType),
    shape: dims ? dims.map((d) => (d.dimParam ? d.dimParam : d.dimValue !== null && d.dimValue !== undefined ? num(d.dimValue) : null)) : null,
  };
}

/** Dtype and shape of every value: from the `Graph` when given, otherwise declared (or, for dtypes, inferred). */
function valueInfos(gp: OnnxTypes.IGraphProto, graph: Graph | null): Map<string, Info> {
  const infos = new Map<string, Info>();
  if (graph) {
    const nodes = liveNodes(graph);
    const names = nameValues(graph, nodes);
    for (const v of [...graph.inputs, ...graph.initializers, ...nodes.flatMap((n) => n.outputs)]) infos.set(names.get(v.id)!, { dtype: v.dtype, shape: v.shape });
    return infos;
  }
  const declared = new Map<string, Info>();
  for (const vi of [...(gp.valueInfo ?? []), ...(gp.output ?? []), ...(gp.input ?? [])]) if (vi.name) declared.set(vi.name, declaredInfo(vi));
  for (const t of gp.initializer ?? []) if (t.name) infos.set(t.name, { dtype: dtypeOf(t.dataType), shape: (t.dims ?? []).map((d) => num(d)) });
  for (const vi of gp.input ?? []) if (vi.name && !infos.has(vi.name)) infos.set(vi.name, declared.get(vi.name) ?? { dtype: null, shape: null });
  for (const n of gp.node ?? []) {
    const inferred = outputDtypes(n, (n.input ?? []).map((i) => infos.get(i)?.dtype ?? null));
    (n.output ?? []).forEach((o, j) => o && infos.set(o, declared.get(o) ?? { dtype: inferred[j] ?? null, shape: null }));
  }
  return infos;
}

function broadcastShapes(shapes: readonly (readonly Dim[] | null)[]): Dim[] | null {
  if (shapes.some((x) => x === null)) return null;
  const ss = shapes as (readonly Dim[])[];
  const rank = Math.max(...ss.map((x) => x.length));
  const out: Dim[] = [];
  for (let k = 0; k < rank; k++) {
    const ds = [...new Set(ss.map((x) => (k < rank - x.length ? 1 : x[k - (rank - x.length)]!)).filter((d) => d !== 1))];
    if (ds.length > 1 || ds[0] === null) return null;
    out.push(ds[0] ?? 1);
  }
  return out;
}

/** Dtypes and shapes of the outputs of the nodes the rewrites emit (the op forms used above only). */
function annotateNew(nodes: readonly NodeProto[], infos: Map<string, Info>, consts: ReadonlyMap<string, readonly number[]>): void {
  const shapeSource = new Map<string, string>();
  for (const n of nodes) {
    const ins = (n.input ?? []).map((i) => infos.get(i) ?? { dtype: null, shape: null });
    const x = ins[0]!;
    const rank = x.shape?.length ?? 0;
    const axesOf = (): number[] | null => {
      const a = attr(n, "axes")?.ints ?? (n.input?.[1] ? consts.get(n.input[1]) : null);
      return a ? a.map((v) => ((num(v) ?? 0) + rank) % Math.max(rank, 1)) : null;
    };
    const op = n.opType ?? "";
    let info: Info = { dtype: x.dtype, shape: null };
    if (["Exp", "Log", "Identity", "Neg"].includes(op)) info = x;
    else if (op === "Cast") info = { dtype: dtypeOf(attrInt(n, "to")), shape: x.shape };
    else if (op === "RandomUniformLike") info = { dtype: dtypeOf(attrInt(n, "dtype")) ?? x.dtype, shape: x.shape };
    else if (["Sub", "Where", "Equal", "Less", "Greater"].includes(op)) {
      const dtype = op === "Where" ? ins[1]!.dtype : op === "Sub" ? x.dtype : "bool";
      info = { dtype, shape: broadcastShapes(ins.map((v) => v.shape)) };
    } else if (op.startsWith("Reduce")) {
      const axes = axesOf() ?? [...Array(rank).keys()];
      const keep = (attrInt(n, "keepdims") ?? 1) === 1;
      info = { dtype: x.dtype, shape: x.shape ? x.shape.flatMap((d, i) => (axes.includes(i) ? (keep ? [1] : []) : [d])) : null };
    } else if (op === "Unsqueeze" && x.shape) {
      const at = (consts.get(n.input![1]!) ?? [])[0]!;
      info = { dtype: x.dtype, shape: [...x.shape.slice(0, at), 1, ...x.shape.slice(at)] };
    } else if (op === "Squeeze" && x.shape) info = { dtype: x.dtype, shape: x.shape.filter((_, i) => !(axesOf() ?? []).includes(i)) };
    else if (op === "GatherElements") info = { dtype: x.dtype, shape: ins[1]!.shape };
    else if (op === "Shape") {
      shapeSource.set(n.output![0]!, n.input![0]!);
      info = { dtype: "int64", shape: x.shape ? [x.shape.length] : null };
    } else if (op === "Expand") info = { dtype: x.dtype, shape: infos.get(shapeSource.get(n.input![1]!) ?? "")?.shape ?? null };
    infos.set(n.output![0]!, info);
  }
}

function valueInfoProto(name: string, info: Info): OnnxTypes.IValueInfoProto {
  const dim = (d: Dim) => (d === null ? {} : typeof d === "number" ? { dimValue: d } : { dimParam: d });
  return { name, type: { tensorType: { elemType: onnxDataType(info.dtype!), ...(info.shape ? { shape: { dim: info.shape.map(dim) } } : {}) } } };
}

function rawOf(dtype: DType, values: readonly number[]): Uint8Array {
  switch (dtype) {
    case "float32":
      return new Uint8Array(Float32Array.from(values).buffer);
    case "float16":
      return new Uint8Array(Uint16Array.from(values, floatToHalf).buffer);
    case "int64":
      return new Uint8Array(BigInt64Array.from(values, (v) => BigInt(v)).buffer);
    case "int32":
      return new Uint8Array(Int32Array.from(values).buffer);
    case "int8":
      return new Uint8Array(Int8Array.from(values).buffer);
    default:
      throw new GraphBuildError("webgpu lowering", `no constant of dtype ${dtype}`);
  }
}

const ints = (name: string, values: readonly number[]): Attr => ({ name, type: A.INTS, ints: [...values] });
const int = (name: string, value: number): Attr => ({ name, type: A.INT, i: value });

/** Emits the replacement nodes and constants, with names unique in the model. */
class Emitter {
  readonly inits: OnnxTypes.ITensorProto[] = [];
  /** Values of the int constants, by initializer name (axes, for `annotateNew`). */
  readonly values = new Map<string, readonly number[]>();
  private readonly consts = new Map<string, string>();
  private readonly shapes = new Map<string, string>();
  out: NodeProto[] = [];
  private prefix = "";

  constructor(
    private readonly names: Set<string>,
    readonly opset: number,
  ) {}

  begin(node: NodeProto, k: number): void {
    this.prefix = `${node.name || `${node.opType}_${k}`}/webgpu`;
  }

  fresh(base: string): string {
    let name = `${this.prefix}/${base}`;
    for (let i = 1; this.names.has(name); i++) name = `${this.prefix}/${base}_${i}`;
    this.names.add(name);
    return name;
  }

  /** A constant (one initializer per dtype, shape and values in the model). */
  constant(dtype: DType, values: readonly number[], shape: readonly number[] = []): string {
    const key = `${dtype}:${shape.join("x")}:${values.join(",")}`;
    let name = this.consts.get(key);
    if (!name) {
      name = `webgpu_lowering/const_${this.consts.size}`;
      for (let i = 1; this.names.has(name); i++) name = `webgpu_lowering/const_${this.consts.size}_${i}`;
      this.names.add(name);
      this.consts.set(key, name);
      this.inits.push({ name, dims: [...shape], dataType: onnxDataType(dtype), rawData: rawOf(dtype, values) });
      this.values.set(name, values);
    }
    return name;
  }

  /** One node; `output` names its output (default: a fresh name). */
  node(op: string, inputs: readonly string[], attrs: readonly Attr[] = [], output?: string): string {
    const name = output ?? this.fresh(op.toLowerCase());
    this.out.push({ name: this.fresh(op), opType: op, domain: "", input: [...inputs], output: [name], attribute: [...attrs] });
    return name;
  }

  /** ReduceMax/ReduceProd over `axes` (an attribute before opset 18, an input from 18 on). */
  reduce(op: "ReduceMax" | "ReduceProd", x: string, axes: readonly number[] | null, keepdims: boolean, output?: string): string {
    const keep = int("keepdims", keepdims ? 1 : 0);
    if (axes === null) return this.node(op, [x], [keep], output);
    if (this.opset >= 18) return this.node(op, [x, this.constant("int64", axes, [axes.length])], [keep], output);
    return this.node(op, [x], [ints("axes", axes), keep], output);
  }

  /** ReduceSum (axes as an input since opset 13). */
  reduceSum(x: string, axes: readonly number[]): string {
    return this.node("ReduceSum", [x, this.constant("int64", axes, [axes.length])], [int("keepdims", 1)]);
  }

  /** Shape(x), once per value. */
  shape(x: string): string {
    let s = this.shapes.get(x);
    if (!s) this.shapes.set(x, (s = this.node("Shape", [x])));
    return s;
  }

  cast(x: string, to: DType, output?: string): string {
    return this.node("Cast", [x], [int("to", onnxDataType(to))], output);
  }
}

interface Context {
  readonly em: Emitter;
  readonly dtype: (name: string) => DType | null;
  /** Graph inputs and initializers (already in host memory). */
  readonly hostValues: ReadonlySet<string>;
}

type Rewrite = (n: NodeProto, c: Context) => string | null;

/** m, z = x − m and lse = Log(ReduceSum(Exp(z))) over `axis` (keepdims). */
function logSumExp(em: Emitter, x: string, axis: number): { z: string; lse: string } {
  const m = em.reduce("ReduceMax", x, [axis], true);
  const z = em.node("Sub", [x, m]);
  const lse = em.node("Log", [em.reduceSum(em.node("Exp", [z]), [axis])]);
  return { z, lse };
}

/** The last node of a rewrite, writing the node's output; float16 nodes are computed in float32 and cast back. */
function emitAs(em: Emitter, dtype: DType, output: string, op: string, inputs: readonly string[]): void {
  if (dtype === "float16") em.cast(em.node(op, inputs), "float16", output);
  else em.node(op, inputs, [], output);
}

const lowerSoftmaxCrossEntropy: Rewrite = (n, { em, dtype }) => {
  const [x, labels, weights] = n.input ?? [];
  if (weights) return "has class weights (third input)";
  const reduction = attrString(n, "reduction") ?? "mean";
  if (reduction !== "none") return `reduction '${reduction}' (only 'none' is lowered)`;
  const xt = dtype(x!);
  const lt = dtype(labels!);
  if (!xt || !FLOAT.includes(xt)) return `scores of dtype ${xt ?? "unknown"} (float32/float16 only)`;
  if (lt !== "int64" && lt !== "int32") return `labels of dtype ${lt ?? "unknown"}`;
  const [rowsOut, logProbOut] = n.output ?? [];
  const xc = xt === "float16" ? em.cast(x!, "float32") : x!;
  const { z, lse } = logSumExp(em, xc, 1);
  if (logProbOut) emitAs(em, xt, logProbOut, "Sub", [z, lse]);
  if (rowsOut) {
    const ignore = attrInt(n, "ignore_index");
    const ignored = ignore === null ? null : em.node("Equal", [labels!, em.constant(lt, [ignore])]);
    const safe = ignored ? em.node("Where", [ignored, em.constant(lt, [0]), labels!]) : labels!;
    const picked = em.node("GatherElements", [z, em.node("Unsqueeze", [safe, em.constant("int64", [1], [1])])], [int("axis", 1)]);
    const squeeze = [em.node("Sub", [lse, picked]), em.constant("int64", [1], [1])];
    if (ignored) emitAs(em, xt, rowsOut, "Where", [ignored, em.constant("float32", [0]), em.node("Squeeze", squeeze)]);
    else emitAs(em, xt, rowsOut, "Squeeze", squeeze);
  }
  return null;
};

const lowerLogSoftmax: Rewrite = (n, { em, dtype }) => {
  const x = n.input![0]!;
  const xt = dtype(x);
  if (!xt || !FLOAT.includes(xt)) return `input of dtype ${xt ?? "unknown"} (float32/float16 only)`;
  const xc = xt === "float16" ? em.cast(x, "float32") : x;
  const { z, lse } = logSumExp(em, xc, attrInt(n, "axis") ?? -1);
  emitAs(em, xt, n.output![0]!, "Sub", [z, lse]);
  return null;
};

const lowerSign: Rewrite = (n, { em, dtype }) => {
  const x = n.input![0]!;
  const t = dtype(x);
  if (t !== "float32" && t !== "float16" && t !== "int32") return `input of dtype ${t ?? "unknown"} (float32/float16/int32 only)`;
  const zero = em.constant(t, [0]);
  // x − x: +0 for ±0 and NaN for NaN, the values onnxruntime's Sign gives for them
  const rest = em.node("Where", [em.node("Less", [x, zero]), em.constant(t, [-1]), em.node("Sub", [x, x])]);
  em.node("Where", [em.node("Greater", [x, zero]), em.constant(t, [1]), rest], [], n.output![0]!);
  return null;
};

const lowerSize: Rewrite = (n, { em, hostValues }) => {
  const x = n.input![0]!;
  if (hostValues.has(x)) return "input is a graph input or initializer (already in host memory)";
  em.reduce("ReduceProd", em.shape(x), null, false, n.output![0]!);
  return null;
};

const lowerRandomUniformLike: Rewrite = (n, { em, dtype, hostValues }) => {
  const x = n.input![0]!;
  if (hostValues.has(x)) return "input is a graph input or initializer (already in host memory)";
  const out = dtypeOf(attrInt(n, "dtype")) ?? dtype(x);
  if (!out) return "output dtype unknown (no dtype attribute, input dtype not inferred)";
  const zeros = em.node("Expand", [em.constant("int8", [0]), em.shape(x)]);
  const attrs = (n.attribute ?? []).filter((a) => a.name !== "dtype");
  em.node("RandomUniformLike", [zeros], [...attrs, int("dtype", onnxDataType(out))], n.output![0]!);
  return null;
};

const REWRITES: Record<WebgpuLoweredOp, Rewrite> = {
  SoftmaxCrossEntropyLoss: lowerSoftmaxCrossEntropy,
  LogSoftmax: lowerLogSoftmax,
  RandomUniformLike: lowerRandomUniformLike,
  Sign: lowerSign,
  Size: lowerSize,
};

function decode(bytes: Uint8Array): OnnxTypes.IModelProto {
  try {
    return onnx.ModelProto.decode(bytes);
  } catch (cause) {
    throw new UnsupportedFileTypeError("<ONNX bytes>", `an ONNX ModelProto (protobuf decode failed: ${cause instanceof Error ? cause.message : String(cause)})`);
  }
}

/**
 * Rewrites the nodes onnxruntime 1.30's WebGPU EP has no kernel for (`WEBGPU_LOWERED_OPS`) into
 * ops it runs on the GPU; see the file comment for each rewrite. The model keeps its inputs,
 * outputs and every other node. Nodes it cannot rewrite exactly (float64 data, other reductions,
 * class weights, opset < 13, dtypes it cannot tell) are kept and listed in `skipped`.
 */
export function lowerForWebgpu(model: Graph | Uint8Array, opts: WebgpuLoweringOptions = {}): WebgpuLoweringResult {
  const wanted = new Set<string>(opts.ops ?? WEBGPU_LOWERED_OPS);
  const lowered = Object.fromEntries(WEBGPU_LOWERED_OPS.map((op) => [op, 0])) as Record<WebgpuLoweredOp, number>;
  const isGraph = !(model instanceof Uint8Array);
  const mp = isGraph ? toModelProto(model) : decode(model);
  const encode = () => onnx.ModelProto.encode(onnx.ModelProto.create(mp)).finish();
  const gp = mp.graph;
  if (!gp) throw new UnsupportedFileTypeError("<ONNX bytes>", "an ONNX ModelProto with a graph");
  const nodes = gp.node ?? [];
  const isDefault = (n: NodeProto) => !n.domain || n.domain === "ai.onnx";
  const targets = nodes.filter((n) => isDefault(n) && wanted.has(n.opType ?? ""));
  /** value_info for the node outputs whose dtype is known (`annotate`). */
  const annotateAll = (infos: ReadonlyMap<string, Info>, all: readonly NodeProto[]) => {
    const skip = new Set<string>([...(gp.input ?? []), ...(gp.output ?? []), ...(gp.valueInfo ?? [])].map((v) => v.name ?? ""));
    const known = all.flatMap((n) => n.output ?? []).filter((o) => o && !skip.has(o) && infos.get(o)?.dtype);
    gp.valueInfo = [...(gp.valueInfo ?? []), ...known.map((o) => valueInfoProto(o, infos.get(o)!))];
  };
  const unchanged = (skipped: WebgpuLoweringSkip[]): WebgpuLoweringResult => {
    if (isGraph && opts.annotate) annotateAll(valueInfos(gp, model), nodes);
    return { bytes: isGraph ? encode() : (model as Uint8Array), lowered, skipped, nodesBefore: nodes.length, nodesAfter: nodes.length };
  };
  if (targets.length === 0) return unchanged([]);
  const imp = mp.opsetImport?.find((o) => !o.domain || o.domain === "ai.onnx");
  const opset = num(imp?.version) ?? 1;
  const label = (n: NodeProto, k: number) => n.name || `${n.opType}_${k}`;
  if (opset < 13) {
    return unchanged(targets.map((n) => ({ node: label(n, nodes.indexOf(n)), op: n.opType as WebgpuLoweredOp, reason: `model opset ${opset} < 13` })));
  }
  const infos = valueInfos(gp, isGraph ? model : null);
  const names = new Set<string>();
  for (const v of [...(gp.input ?? []), ...(gp.output ?? []), ...(gp.valueInfo ?? [])]) if (v.name) names.add(v.name);
  for (const t of gp.initializer ?? []) if (t.name) names.add(t.name);
  for (const n of nodes) {
    if (n.name) names.add(n.name);
    for (const o of n.output ?? []) names.add(o);
  }
  const hostValues = new Set<string>([...(gp.input ?? []).map((v) => v.name ?? ""), ...(gp.initializer ?? []).map((t) => t.name ?? "")]);
  const em = new Emitter(names, opset);
  const ctx: Context = { em, dtype: (v) => infos.get(v)?.dtype ?? null, hostValues };
  const skipped: WebgpuLoweringSkip[] = [];
  const out: NodeProto[] = [];
  const added: NodeProto[] = [];
  for (const [k, n] of nodes.entries()) {
    const op = n.opType as WebgpuLoweredOp;
    if (!isDefault(n) || !wanted.has(op)) {
      out.push(n);
      continue;
    }
    em.begin(n, k);
    em.out = [];
    const reason = REWRITES[op](n, ctx);
    if (reason === null) {
      out.push(...em.out);
      added.push(...em.out);
      lowered[op]++;
    } else {
      out.push(n);
      skipped.push({ node: label(n, k), op, reason });
    }
  }
  if (WEBGPU_LOWERED_OPS.every((op) => lowered[op] === 0)) return unchanged(skipped);
  gp.node = out;
  gp.initializer = [...(gp.initializer ?? []), ...em.inits];
  if (opts.annotate) {
    for (const t of em.inits) infos.set(t.name!, { dtype: dtypeOf(t.dataType), shape: (t.dims ?? []).map((d) => num(d)) });
    annotateNew(added, infos, em.values);
    annotateAll(infos, out);
  }
  return { bytes: encode(), lowered, skipped, nodesBefore: nodes.length, nodesAfter: out.length };
}
