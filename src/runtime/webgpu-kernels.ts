/**
 * Which ONNX nodes onnxruntime's WebGPU execution provider runs, predicted without a GPU.
 *
 * The kernel table is onnxruntime 1.30's WebGPU registry as our graphs meet it. Source read:
 * `onnxruntime/core/providers/webgpu/webgpu_execution_provider.cc` (registrations, opset ranges)
 * and `webgpu_supported_types.h` / the kernels' `TypeConstraint`s, at fs-eire/onnxruntime commit
 * 0e58206a6daf6ee290b9a76072e40efb14dc750e (the newest copy found: same int64-gated registry as
 * 1.30; microsoft/onnxruntime's stored copies were older), and the CPU fallback rule of
 * `core/framework/fallback_cpu_capability.cc` (microsoft/onnxruntime 039e489f). Every (op, dtype)
 * entry at opset 17 was then checked against the onnxruntime-node 1.30.0 binary itself: one
 * session per probe graph on Dawn/Vulkan (Mesa lavapipe), reading its verbose "Node placements"
 * log. Where the two disagreed the binary won (noted per entry).
 *
 * Facts that shape the table:
 * - Number kernels take float32, float16, int32 (and uint32, which peft-ts never emits). int64 is
 *   only registered when the EP option `enableInt64` is on, and onnxruntime-node 1.30 rejects
 *   that option ("WebGPU EP has an unrecognized option"), so int64 arithmetic, comparisons,
 *   Concat, Slice, Where, Range, Cast-from-int64 and Shape-of-int64 all run on the CPU.
 * - float64 has no WebGPU kernel at all.
 * - Shape/axes/pads/starts inputs (Reshape, Unsqueeze, Slice, Pad, Expand, Split, ReduceSum,
 *   CumSum, Tile, Range) are read from host memory; Shape writes its output to host memory.
 * - A node with a kernel still goes to the CPU when every input is a host tensor, a graph input
 *   or an initializer of ≤ 100 elements (`GetCpuPreferredNodes`), traced forward from the
 *   consumers of WebGPU kernels' host outputs (Shape) through nodes moved this way. 1.30 logs
 *   these moves but keeps the nodes on the GPU (probed), so the predictor applies the rule only
 *   on request (`cpuPreferredFallback`); it never traces through nodes without a WebGPU kernel.
 */
import onnxProto, { type onnx as OnnxTypes } from "onnx-proto";
import { ConfigError, GraphBuildError, UnsupportedFileTypeError } from "../errors.js";
import { dtypeFromOnnx } from "../graph/api.js";
import type { Graph } from "../graph/graph.js";
import { liveNodes, nameValues } from "../graph/onnx.js";
import { OPS } from "../graph/ops/index.js";
import type { OpName } from "../graph/ops/names.js";
import { OPSET } from "../graph/opset.js";
import type { Dim } from "../graph/types.js";
import { BYTES_PER_ELEMENT, type DType } from "../tensor.js";

const { onnx } = onnxProto;

/** Where the kernel table comes from (see the file comment). */
export const WEBGPU_KERNEL_SOURCE = {
  onnxruntime: "1.30.0",
  source: "fs-eire/onnxruntime@0e58206a6daf6ee290b9a76072e40efb14dc750e onnxruntime/core/providers/webgpu",
  fallbackRule: "microsoft/onnxruntime@039e489f3ff5cc427030dc58e43af78696cf74e7 onnxruntime/core/framework/fallback_cpu_capability.cc",
  verified: "each entry at opset 17 probed on the onnxruntime-node 1.30.0 binary (Dawn/Vulkan, lavapipe)",
} as const;

/** One registered kernel family: an op over opset ranges, with its type constraints. */
export interface WebgpuKernel {
  readonly op: string;
  /** `""` (ai.onnx) or `"com.microsoft"`. */
  readonly domain: string;
  /** Inclusive opset ranges `[since, until]`, `until` null for open-ended. */
  readonly versions: readonly (readonly [number, number | null])[];
  /** Allowed tensor types per type parameter. */
  readonly types: Readonly<Record<string, readonly DType[]>>;
  /** The type parameter of each input (null: not constrained); the last one repeats for variadic inputs. */
  readonly inputs: readonly (string | null)[];
  /** The type parameter of each output when it is constrained separately (Cast's T2). */
  readonly outputs?: readonly (string | null)[];
  /** Inputs the kernel reads from host memory (shapes, axes, pads). */
  readonly hostInputs?: readonly number[];
  /** Outputs the kernel writes to host memory. */
  readonly hostOutputs?: readonly number[];
  readonly note?: string;
}

const F: readonly DType[] = ["float32", "float16"];
const N: readonly DType[] = ["float32", "float16", "int32"];
const I: readonly DType[] = ["int32", "int64"];
const B: readonly DType[] = ["bool"];
type Ranges = readonly (readonly [number, number | null])[];

function kernel(op: string, versions: Ranges, types: Record<string, readonly DType[]>, inputs: (string | null)[], extra: Partial<WebgpuKernel> = {}): WebgpuKernel {
  return { op, domain: "", versions, types, inputs, ...extra };
}
const unary = (ops: string[], versions: Ranges, t: readonly DType[] = F): WebgpuKernel[] => ops.map((op) => kernel(op, versions, { T: t }, ["T"]));
const binary = (ops: string[], versions: Ranges, t: readonly DType[] = N): WebgpuKernel[] => ops.map((op) => kernel(op, versions, { T: t }, ["T", "T"]));
const open = (since: number): Ranges => [[since, null]];

/** onnxruntime 1.30's WebGPU kernels for the ops peft-ts graphs use, plus common neighbours. */
export const WEBGPU_KERNELS: readonly WebgpuKernel[] = [
  ...unary(["Abs", "Neg", "Floor", "Ceil", "Reciprocal", "Sqrt", "Exp", "Log", "Sigmoid", "Tanh"], [[6, 12], [13, null]]),
  ...unary(["Erf"], [[9, 12], [13, null]]),
  ...unary(["Sin", "Cos", "Tan", "Asin", "Acos", "Atan"], open(7)),
  ...unary(["Relu"], [[6, 12], [13, 13], [14, null]]),
  ...unary(["Elu", "HardSigmoid"], open(6)),
  ...unary(["LeakyRelu"], [[6, 15], [16, null]]),
  ...unary(["Softplus"], open(1)),
  ...unary(["Gelu"], open(20)),
  ...unary(["Not"], open(1), B),
  ...binary(["Add", "Sub", "Mul", "Div"], [[7, 12], [13, 13], [14, null]]),
  ...binary(["Pow"], [[7, 11], [12, 12], [13, 14], [15, null]]),
  ...binary(["Equal"], [[7, 10], [11, 12], [13, 18], [19, null]]),
  ...binary(["Greater", "Less"], [[7, 8], [9, 12], [13, null]]),
  ...binary(["GreaterOrEqual", "LessOrEqual"], [[12, 15], [16, null]]),
  ...binary(["Max", "Min"], open(13)).map((k) => ({ ...k, note: "not in the reference source; probed on the 1.30.0 binary at opset 17" })),
  ...binary(["And"], open(7), B),
  kernel("Identity", [[1, 12], [13, 13], [14, 15], [16, 18], [19, 20], [21, 22], [23, 23], [24, 24], [25, null]], { T: N }, ["T"]),
  kernel("Where", [[9, 15], [16, null]], { B, T: N }, ["B", "T", "T"]),
  kernel("MatMul", [[1, 12], [13, null]], { T: F }, ["T", "T"]),
  kernel("Gemm", [[7, 8], [9, 10], [11, 12], [13, null]], { T: F }, ["T", "T", "T"]),
  kernel("Softmax", [[1, 10], [11, 12], [13, null]], { T: F }, ["T"]),
  kernel("LayerNormalization", open(17), { T: F, U: ["float32"] }, ["T", "T", "T"], { outputs: ["T", "U", "U"] }),
  kernel("Einsum", open(12), { T: F }, ["T"]),
  kernel("ReduceSum", [[1, 10], [11, 12], [13, null]], { T: N, I: ["int64"] }, ["T", "I"], { hostInputs: [1] }),
  ...["ReduceMean", "ReduceMax", "ReduceMin"].map((op) => kernel(op, [[1, 10], [11, 12], [13, 17], [18, null]], { T: N }, ["T"])),
  ...["ArgMax", "ArgMin"].map((op) => kernel(op, [[1, 10], [11, 12], [13, null]], { T: N }, ["T"])),
  kernel("Cast", [[6, 8], [9, 12], [13, 18], [19, 20], [21, 22], [23, null]], { T1: ["float32", "float16", "int32", "uint8", "bool"], T2: ["float32", "float16", "int32", "int64", "uint8", "bool"] }, ["T1"], {
    outputs: ["T2"],
    note: "int64 outputs are accepted without enableInt64, int64 inputs are not (probed)",
  }),
  kernel("Shape", [[1, 12], [13, 14], [15, 18], [19, 20], [21, 22], [23, null]], { T: N }, ["T"], { hostOutputs: [0] }),
  kernel("Reshape", [[5, 12], [13, 13], [14, 18], [19, 20], [21, null]], { T: ["float32", "float16", "int32", "uint8", "bool"], S: ["int64"] }, ["T", "S"], { hostInputs: [1] }),
  kernel("Squeeze", [[1, 10], [11, 12], [13, 20], [21, 22], [23, 23], [24, null]], { T: N, S: ["int64"] }, ["T", "S"], { hostInputs: [1] }),
  kernel("Unsqueeze", [[1, 10], [11, 12], [13, 20], [21, 22], [23, null]], { T: [...N, "bool"], S: ["int64"] }, ["T", "S"], { hostInputs: [1] }),
  kernel("Flatten", [[1, 8], [9, 10], [11, 12], [13, 20], [21, null]], { T: [...N, "bool"] }, ["T"]),
  kernel("Expand", [[8, 12], [13, null]], { T: ["float32", "float16", "int32", "uint8", "bool"], S: ["int64"] }, ["T", "S"], { hostInputs: [1] }),
  kernel("Transpose", [[1, 12], [13, 20], [21, 22], [23, null]], { T: N }, ["T"]),
  kernel("Concat", [[1, 3], [4, 10], [11, 12], [13, null]], { T: N }, ["T"]),
  kernel("Split", [[1, 1], [2, 10], [11, 12], [13, 17], [18, null]], { T: N, S: ["int64"] }, ["T", "S"], { hostInputs: [1] }),
  kernel("Slice", [[1, 9], [10, 10], [11, 12], [13, null]], { T: F, I }, ["T", "I"], { hostInputs: [1, 2, 3, 4], note: "int32 data also falls back (probed)" }),
  kernel("Pad", [[2, 10], [11, 12], [13, 17], [18, 18], [19, 20], [21, 22], [23, null]], { T: N, S: ["int64"] }, ["T", "S", "T", "S"], { hostInputs: [1, 2, 3] }),
  kernel("Tile", [[6, 12], [13, null]], { T: N, S: ["int64"] }, ["T", "S"], { hostInputs: [1] }),
  kernel("CumSum", [[11, 13], [14, null]], { T: N, I }, ["T", "I"], { hostInputs: [1] }),
  kernel("Range", open(11), { T: ["float32", "int32"] }, ["T"], { hostInputs: [0, 1, 2] }),
  kernel("Gather", [[1, 10], [11, 12], [13, null]], { T: ["float32", "float16", "int32", "uint8", "bool"], I }, ["T", "I"]),
  kernel("GatherElements", [[11, 12], [13, null]], { T: F, I }, ["T", "I"]),
  kernel("GatherND", [[11, 11], [12, 12], [13, null]], { T: N, I: ["int64"] }, ["T", "I"]),
  kernel("ScatterElements", [[11, 12], [13, 15], [16, 17], [18, null]], { T: N, I }, ["T", "I", "T"]),
  kernel("ScatterND", [[11, 12], [13, 15], [16, 17], [18, null]], { T: N, I: ["int64"] }, ["T", "I", "T"]),
  kernel("Trilu", open(14), { T: N, I: ["int64"] }, ["T", "I"], { hostInputs: [1] }),
  kernel("Clip", [[6, 10], [11, 11], [12, 12], [13, null]], { T: N }, ["T", "T", "T"]),
  kernel("SimplifiedLayerNormalization", open(1), { T: F }, ["T", "T"], { note: "onnxruntime-internal op in the ai.onnx domain" }),
  ...["Gelu", "FastGelu", "BiasGelu", "SkipLayerNormalization"].map((op) => ({ ...kernel(op, open(1), { T: ["float32", "float16"] }, ["T"]), domain: "com.microsoft" })),
];

/**
 * Ops with no WebGPU kernel in 1.30 that peft-ts graphs (or onnxruntime's own CPU fusions) use;
 * informational: any op absent from `WEBGPU_KERNELS` falls back.
 */
export const WEBGPU_MISSING_OPS: readonly string[] = [
  "Sign", "Size", "LogSoftmax", "SoftmaxCrossEntropyLoss", "NegativeLogLikelihoodLoss", "RandomUniformLike", "RandomNormalLike",
  "Mod", "Round", "IsNaN", "IsInf", "Or", "Xor", "Sum", "Mean", "OneHot", "ConstantOfShape", "com.microsoft:FusedMatMul",
];

const byOp = new Map<string, WebgpuKernel[]>();
for (const k of WEBGPU_KERNELS) {
  const key = `${k.domain}:${k.op}`;
  byOp.set(key, [...(byOp.get(key) ?? []), k]);
}

export type WebgpuFallbackReason = "no-kernel" | "opset" | "dtype" | "cpu-preferred";

export interface WebgpuKernelLookup {
  readonly kernel: WebgpuKernel | null;
  /** Why there is no usable kernel (null when there is one). */
  readonly reason: Exclude<WebgpuFallbackReason, "cpu-preferred"> | null;
  readonly detail: string;
}

/**
 * The WebGPU kernel for `op` at `opset` with these input and output dtypes (null dtype: not
 * checked, e.g. an optional input left empty), as onnxruntime's kernel lookup would find it.
 */
export function lookupWebgpuKernel(op: string, opset: number, inputs: readonly (DType | null)[], outputs: readonly (DType | null)[] = [], domain = ""): WebgpuKernelLookup {
  const family = byOp.get(`${domain === "ai.onnx" ? "" : domain}:${op}`);
  if (!family) return { kernel: null, reason: "no-kernel", detail: `no WebGPU kernel for ${domain ? `${domain}:` : ""}${op}` };
  const k = family.find((f) => f.versions.some(([a, b]) => opset >= a && (b === null || opset <= b)));
  if (!k) return { kernel: null, reason: "opset", detail: `${op} has WebGPU kernels, none for opset ${opset}` };
  const check = (dts: readonly (DType | null)[], params: readonly (string | null)[] | undefined, what: string): string | null => {
    if (!params || params.length === 0) return null;
    for (const [i, dt] of dts.entries()) {
      const p = params[Math.min(i, params.length - 1)];
      if (dt === null || p === null || p === undefined) continue;
      const allowed = k.types[p];
      if (allowed && !allowed.includes(dt)) return `${what} ${i} is ${dt}; ${op}'s ${p} takes ${allowed.join(", ")}`;
    }
    return null;
  };
  const bad = check(inputs, k.inputs, "input") ?? check(outputs, k.outputs, "output");
  return bad ? { kernel: null, reason: "dtype", detail: bad } : { kernel: k, reason: null, detail: "" };
}

// ------------------------------------------------------------------ the model as the predictor sees it

interface PValue {
  readonly dtype: DType | null;
  readonly shape: readonly Dim[] | null;
  readonly kind: "input" | "initializer" | "node";
  /** Elements of an initializer (for the ≤ 100 "small initializer" rule). */
  readonly initNumel?: number;
}
interface PNode {
  readonly name: string;
  readonly op: string;
  readonly domain: string;
  readonly inputs: readonly string[];
  readonly outputs: readonly string[];
}
interface PModel {
  readonly opset: number;
  readonly nodes: readonly PNode[];
  readonly values: ReadonlyMap<string, PValue>;
  readonly outputs: readonly string[];
}

function fromGraph(g: Graph): PModel {
  const nodes = liveNodes(g);
  const names = nameValues(g, nodes);
  const values = new Map<string, PValue>();
  for (const v of g.inputs) values.set(names.get(v.id)!, { dtype: v.dtype, shape: v.shape, kind: "input" });
  for (const v of g.initializers) values.set(names.get(v.id)!, { dtype: v.dtype, shape: v.shape, kind: "initializer", initNumel: v.data!.data.length });
  for (const n of nodes) for (const o of n.outputs) values.set(names.get(o.id)!, { dtype: o.dtype, shape: o.shape, kind: "node" });
  return {
    opset: OPSET,
    nodes: nodes.map((n) => ({ name: n.name, op: OPS[n.op as OpName].type, domain: OPS[n.op as OpName].domain ?? "", inputs: n.inputs.map((i) => names.get(i.id)!), outputs: n.outputs.map((o) => names.get(o.id)!) })),
    values,
    outputs: g.outputs.map((o) => names.get(o.value.id)!),
  };
}

function dtypeOf(code: number | null | undefined): DType | null {
  if (code === null || code === undefined || code === 0) return null;
  try {
    return dtypeFromOnnx(code);
  } catch {
    return null; // a dtype peft-ts has no name for (uint32, string…): left unchecked
  }
}

function typeInfo(vi: OnnxTypes.IValueInfoProto): { dtype: DType | null; shape: Dim[] | null } {
  const t = vi.type?.tensorType;
  const dims = t?.shape?.dim;
  return {
    dtype: dtypeOf(t?.elemType),
    shape: dims ? dims.map((d) => (d.dimValue !== undefined && d.dimValue !== null ? Number(d.dimValue) : d.dimParam ? d.dimParam : null)) : null,
  };
}

function attrInt(n: OnnxTypes.INodeProto, name: string): number | null {
  const a = n.attribute?.find((x) => x.name === name);
  return a && a.i !== undefined && a.i !== null ? Number(a.i) : null;
}

const BOOL_OUT = new Set(["Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "And", "Or", "Xor", "Not", "IsNaN", "IsInf"]);
const SAME_SHAPE = new Set(["Abs", "Neg", "Sqrt", "Reciprocal", "Exp", "Log", "Tanh", "Erf", "Sigmoid", "Relu", "Sign", "Cos", "Sin", "Not", "Identity", "Cast", "Softmax", "LogSoftmax", "RandomUniformLike"]);

/** Output dtypes and (where simple) shapes of a node from its inputs, for models given as bytes without value_info. */
function inferOutputs(n: OnnxTypes.INodeProto, ins: readonly (PValue | undefined)[]): { dtype: DType | null; shape: readonly Dim[] | null }[] {
  const op = n.opType ?? "";
  const x = ins[0];
  const count = n.output?.length ?? 0;
  let dtype: DType | null = x?.dtype ?? null;
  if (BOOL_OUT.has(op)) dtype = "bool";
  else if (op === "Shape" || op === "Size" || op === "ArgMax" || op === "ArgMin") dtype = "int64";
  else if (op === "Where") dtype = ins[1]?.dtype ?? null;
  else if (op === "Cast" || op === "RandomUniformLike") dtype = dtypeOf(attrInt(n, op === "Cast" ? "to" : "dtype")) ?? (op === "Cast" ? null : dtype);
  else if (op === "ConstantOfShape") dtype = dtypeOf(n.attribute?.find((a) => a.name === "value")?.t?.dataType) ?? "float32";
  let shape: readonly Dim[] | null = null;
  if (SAME_SHAPE.has(op)) shape = x?.shape ?? null;
  else if (BOOL_OUT.has(op) || ["Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Where"].includes(op)) {
    const shapes = ins.map((v) => v?.shape ?? null);
    if (shapes.every((s) => s !== null)) shape = broadcast(shapes as (readonly Dim[])[]);
  }
  return Array.from({ length: count }, (_, i) => ({ dtype: op === "LayerNormalization" && i > 0 ? "float32" : dtype, shape: i === 0 ? shape : null }));
}

function broadcast(shapes: readonly (readonly Dim[])[]): Dim[] | null {
  const rank = Math.max(...shapes.map((s) => s.length));
  const out: Dim[] = [];
  for (let k = 0; k < rank; k++) {
    const ds = shapes.map((s) => (k < rank - s.length ? 1 : s[k - (rank - s.length)]!)).filter((d) => d !== 1);
    if (ds.length === 0) out.push(1);
    else if (ds.every((d) => d === ds[0] && d !== null)) out.push(ds[0]!);
    else return null;
  }
  return out;
}

function fromBytes(bytes: Uint8Array): PModel {
  let m: OnnxTypes.ModelProto;
  try {
    m = onnx.ModelProto.decode(bytes);
  } catch (cause) {
    throw new UnsupportedFileTypeError("<ONNX bytes>", `an ONNX ModelProto (protobuf decode failed: ${cause instanceof Error ? cause.message : String(cause)})`);
  }
  const gp = m.graph;
  if (!gp) throw new UnsupportedFileTypeError("<ONNX bytes>", "an ONNX ModelProto with a graph");
  const imp = m.opsetImport?.find((o) => !o.domain || o.domain === "ai.onnx");
  const values = new Map<string, PValue>();
  const info = new Map<string, { dtype: DType | null; shape: Dim[] | null }>();
  for (const vi of [...(gp.valueInfo ?? []), ...(gp.output ?? [])]) if (vi.name) info.set(vi.name, typeInfo(vi));
  for (const t of gp.initializer ?? []) {
    const dims = (t.dims ?? []).map(Number);
    values.set(t.name ?? "", { dtype: dtypeOf(t.dataType), shape: dims, kind: "initializer", initNumel: dims.reduce((p, d) => p * d, 1) });
  }
  for (const vi of gp.input ?? []) if (vi.name && !values.has(vi.name)) values.set(vi.name, { ...typeInfo(vi), kind: "input" });
  const nodes: PNode[] = [];
  for (const [k, n] of (gp.node ?? []).entries()) {
    const ins = (n.input ?? []).map((i) => (i === "" ? undefined : values.get(i)));
    for (const [j, i] of (n.input ?? []).entries()) {
      if (i !== "" && !ins[j]) throw new GraphBuildError(n.opType ?? "?", `node ${n.name || `#${k}`} reads '${i}', which no earlier node, input or initializer defines (nodes must be in topological order)`);
    }
    const inferred = inferOutputs(n, ins);
    for (const [j, o] of (n.output ?? []).entries()) {
      if (!o) continue;
      const known = info.get(o);
      values.set(o, { dtype: known?.dtype ?? inferred[j]!.dtype, shape: known?.shape ?? inferred[j]!.shape, kind: "node" });
    }
    nodes.push({ name: n.name || `${n.opType}_${k}`, op: n.opType ?? "", domain: n.domain ?? "", inputs: n.input ?? [], outputs: n.output ?? [] });
  }
  return { opset: imp ? Number(imp.version) : OPSET, nodes, values, outputs: (gp.output ?? []).map((o) => o.name ?? "") };
}

// ------------------------------------------------------------------ prediction

export interface WebgpuPlacementOptions {
  /** Values of symbolic dims (`batch`, `seq`…) for the byte counts. */
  readonly dims?: Readonly<Record<string, number>>;
  /** Graph inputs fed as tensors already in GPU memory (no host→device copy per run). */
  readonly deviceInputs?: readonly string[];
  /** Graph outputs kept in GPU memory (no device→host copy per run). */
  readonly deviceOutputs?: readonly string[];
  /**
   * Apply `GetCpuPreferredNodes` (default false). onnxruntime-node 1.30 computes and logs these
   * moves ("Force fallback to CPU execution for node …") but the WebGPU EP keeps the nodes and
   * inserts a MemcpyFromHost instead (probed); true models builds that apply the rule.
   */
  readonly cpuPreferredFallback?: boolean;
}

export interface WebgpuNodePlacement {
  readonly name: string;
  readonly op: string;
  readonly domain: string;
  readonly ep: "webgpu" | "cpu";
  /** Why the node runs on the CPU (null on the GPU). */
  readonly reason: WebgpuFallbackReason | null;
  readonly detail: string;
}

export type WebgpuCrossingKind = "feed" | "internal" | "fetch";

/** One tensor copied between host and GPU memory on every run. */
export interface WebgpuCrossing {
  readonly value: string;
  readonly direction: "toDevice" | "toHost";
  /** feed: graph input to GPU; fetch: graph output to host; internal: between nodes (a Memcpy node). */
  readonly kind: WebgpuCrossingKind;
  readonly dtype: DType | null;
  readonly shape: readonly Dim[] | null;
  /** Bytes with the given dims substituted; null when a dim is unknown. */
  readonly bytes: number | null;
  readonly producer: string | null;
}

export interface WebgpuPlacementSummary {
  readonly nodes: number;
  readonly gpuNodes: number;
  readonly cpuNodes: number;
  readonly cpuByOp: Readonly<Record<string, number>>;
  readonly gpuByOp: Readonly<Record<string, number>>;
  readonly cpuByReason: Readonly<Record<WebgpuFallbackReason, number>>;
  /** Copies per run, all kinds. */
  readonly crossings: number;
  readonly crossingsByKind: Readonly<Record<WebgpuCrossingKind, number>>;
  readonly toDevice: number;
  readonly toHost: number;
  /** Bytes per run over the crossings whose size is known. */
  readonly bytes: number;
  readonly bytesByKind: Readonly<Record<WebgpuCrossingKind, number>>;
  /** Crossings whose size is unknown (a dim neither static nor given). */
  readonly unknownSizeCrossings: number;
}

export interface WebgpuPlacementPrediction {
  readonly opset: number;
  readonly nodes: readonly WebgpuNodePlacement[];
  readonly crossings: readonly WebgpuCrossing[];
  readonly summary: WebgpuPlacementSummary;
}

function countBy<T>(xs: readonly T[], key: (x: T) => string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const x of xs) out[key(x)] = (out[key(x)] ?? 0) + 1;
  return out;
}

/**
 * Predicts, per node, whether onnxruntime 1.30 places it on the WebGPU EP or the CPU, and which
 * tensors cross between host and GPU memory on each run. Follows onnxruntime's partitioning: the
 * kernel lookup by op, opset and dtypes, then optionally `GetCpuPreferredNodes` (a node whose every input
 * is a host tensor, graph input or small initializer moves to the CPU, starting from the
 * consumers of host outputs). Counted copies: graph inputs consumed on the GPU (feeds), host ↔
 * GPU edges between nodes (onnxruntime's Memcpy nodes) and GPU-produced graph outputs (fetches);
 * initializers are uploaded once at session creation and not counted. Graphs are analysed as
 * built, before onnxruntime's own fusions; `SoftmaxCrossEntropyLoss`, which onnxruntime inlines
 * as a function when no EP takes it whole, is counted as one CPU node.
 */
export function predictWebgpuPlacement(model: Graph | Uint8Array, opts: WebgpuPlacementOptions = {}): WebgpuPlacementPrediction {
  for (const [k, v] of Object.entries(opts.dims ?? {})) {
    if (!Number.isInteger(v) || v < 1) throw new ConfigError("predictWebgpuPlacement", `dims.${k}`, `must be a positive integer, got ${v}`);
  }
  const m = model instanceof Uint8Array ? fromBytes(model) : fromGraph(model);
  const val = (n: string): PValue | undefined => (n === "" ? undefined : m.values.get(n));
  const consumers = new Map<string, number[]>();
  m.nodes.forEach((n, k) => n.inputs.forEach((i) => i !== "" && consumers.set(i, [...(consumers.get(i) ?? []), k])));

  // 1. kernel lookup
  const lookups = m.nodes.map((n) => lookupWebgpuKernel(n.op, m.opset, n.inputs.map((i) => val(i)?.dtype ?? null), n.outputs.map((o) => val(o)?.dtype ?? null), n.domain));

  // 2. GetCpuPreferredNodes
  const hostArgs = new Set<string>();
  const queue: number[] = [];
  const push = (k: number) => queue.push(k);
  m.nodes.forEach((n, k) => {
    const kern = lookups[k]!.kernel;
    if (!kern || !opts.cpuPreferredFallback) return;
    n.outputs.forEach((o, j) => {
      if (kern.hostOutputs?.includes(j)) {
        hostArgs.add(o);
        (consumers.get(o) ?? []).forEach(push);
      }
    });
  });
  const visited = new Set<number>();
  const cpuPreferred = new Set<number>();
  while (queue.length > 0) {
    queue.sort((a, b) => b - a); // onnxruntime pops in topological order
    const k = queue.pop()!;
    if (visited.has(k)) continue;
    visited.add(k);
    const n = m.nodes[k]!;
    const kern = lookups[k]!.kernel;
    // 1.30 does not trace through nodes without a WebGPU kernel (probed: a Cast-from-int64 on the
    // CPU does not pull its float consumers along), unlike the newest fallback_cpu_capability.cc
    if (!kern) continue;
    let cpu = true;
    for (const [i, name] of n.inputs.entries()) {
      if (name === "") continue;
      const v = val(name);
      if (v?.dtype === "float16" || v?.dtype === "bfloat16") cpu = false;
      else if ((v?.kind === "initializer" && (v.initNumel ?? Infinity) <= 100) || v?.kind === "input") continue;
      else if (!hostArgs.has(name) || kern.hostInputs?.includes(i)) cpu = false;
      if (!cpu) break;
    }
    if (cpu) {
      cpuPreferred.add(k);
      n.outputs.forEach((o) => (hostArgs.add(o), (consumers.get(o) ?? []).forEach(push)));
    }
  }
  const nodes: WebgpuNodePlacement[] = m.nodes.map((n, k) => {
    const l = lookups[k]!;
    const base = { name: n.name, op: n.op, domain: n.domain };
    if (!l.kernel) return { ...base, ep: "cpu", reason: l.reason, detail: l.detail };
    if (cpuPreferred.has(k)) return { ...base, ep: "cpu", reason: "cpu-preferred", detail: "every input is a host tensor, graph input or small initializer" };
    return { ...base, ep: "webgpu", reason: null, detail: "" };
  });

  // 3. host ↔ device copies
  const where = new Map<string, "host" | "device" | "anywhere">();
  for (const [name, v] of m.values) if (v.kind !== "node") where.set(name, v.kind === "initializer" ? "anywhere" : opts.deviceInputs?.includes(name) ? "device" : "host");
  m.nodes.forEach((n, k) => n.outputs.forEach((o, j) => where.set(o, nodes[k]!.ep === "cpu" || lookups[k]!.kernel?.hostOutputs?.includes(j) ? "host" : "device")));
  const needs = new Map<string, Set<"host" | "device">>();
  const need = (v: string, loc: "host" | "device") => needs.set(v, (needs.get(v) ?? new Set()).add(loc));
  m.nodes.forEach((n, k) => n.inputs.forEach((i, j) => i !== "" && need(i, nodes[k]!.ep === "cpu" || lookups[k]!.kernel?.hostInputs?.includes(j) ? "host" : "device")));
  for (const o of m.outputs) need(o, opts.deviceOutputs?.includes(o) ? "device" : "host");
  const producer = new Map<string, string>();
  for (const n of m.nodes) for (const o of n.outputs) producer.set(o, n.name);
  const crossings: WebgpuCrossing[] = [];
  for (const [name, locs] of needs) {
    const at = where.get(name);
    if (!at || at === "anywhere") continue;
    for (const loc of locs) {
      if (loc === at) continue;
      const v = val(name);
      const isOutput = m.outputs.includes(name) && loc === "host";
      const kind: WebgpuCrossingKind = v?.kind === "input" ? "feed" : isOutput && !(consumers.get(name) ?? []).some((k) => nodes[k]!.ep === "cpu") ? "fetch" : "internal";
      crossings.push({ value: name, direction: loc === "device" ? "toDevice" : "toHost", kind, dtype: v?.dtype ?? null, shape: v?.shape ?? null, bytes: byteSize(v, opts.dims ?? {}), producer: producer.get(name) ?? null });
    }
  }

  const cpu = nodes.filter((n) => n.ep === "cpu");
  const kinds = (f: (c: WebgpuCrossing) => number): Record<WebgpuCrossingKind, number> => ({
    feed: crossings.filter((c) => c.kind === "feed").reduce((s, c) => s + f(c), 0),
    internal: crossings.filter((c) => c.kind === "internal").reduce((s, c) => s + f(c), 0),
    fetch: crossings.filter((c) => c.kind === "fetch").reduce((s, c) => s + f(c), 0),
  });
  const reasons = countBy(cpu, (n) => n.reason!);
  const summary: WebgpuPlacementSummary = {
    nodes: nodes.length,
    gpuNodes: nodes.length - cpu.length,
    cpuNodes: cpu.length,
    cpuByOp: countBy(cpu, (n) => n.op),
    gpuByOp: countBy(nodes.filter((n) => n.ep === "webgpu"), (n) => n.op),
    cpuByReason: { "no-kernel": reasons["no-kernel"] ?? 0, opset: reasons.opset ?? 0, dtype: reasons.dtype ?? 0, "cpu-preferred": reasons["cpu-preferred"] ?? 0 },
    crossings: crossings.length,
    crossingsByKind: kinds(() => 1),
    toDevice: crossings.filter((c) => c.direction === "toDevice").length,
    toHost: crossings.filter((c) => c.direction === "toHost").length,
    bytes: crossings.reduce((s, c) => s + (c.bytes ?? 0), 0),
    bytesByKind: kinds((c) => c.bytes ?? 0),
    unknownSizeCrossings: crossings.filter((c) => c.bytes === null).length,
  };
  return { opset: m.opset, nodes, crossings, summary };
}

function byteSize(v: PValue | undefined, dims: Readonly<Record<string, number>>): number | null {
  if (!v?.dtype || !v.shape) return null;
  let n = BYTES_PER_ELEMENT[v.dtype];
  for (const d of v.shape) {
    if (d === null) return null;
    // symbolic dims may be products such as "batch*seq" (a reshape that merges dims)
    for (const f of typeof d === "number" ? [d] : d.split("*")) {
      const x = typeof f === "number" ? f : /^\d+$/.test(f) ? Number(f) : dims[f];
      if (x === undefined) return null;
      n *= x;
    }
  }
  return n;
}

/** Nodes on the CPU grouped by op and the reason, e.g. `Concat(int64): dtype ×10`, most first. */
export function describeWebgpuCpuNodes(p: WebgpuPlacementPrediction): string[] {
  const rows = countBy(
    p.nodes.filter((n) => n.ep === "cpu"),
    (n) => `${n.domain ? `${n.domain}:` : ""}${n.op} — ${n.reason}${n.reason === "dtype" ? ` (${n.detail})` : ""}`,
  );
  return Object.entries(rows)
    .sort((a, b) => b[1] - a[1])
    .map(([k, v]) => `${k} ×${v}`);
}
