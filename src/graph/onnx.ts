/** ONNX export: the graph as a ModelProto (protobuf bytes), pruned to what the outputs need. */
import onnxProto, { type onnx as OnnxTypes } from "onnx-proto";

const { onnx } = onnxProto;
import { GraphBuildError } from "../errors.js";
import type { Tensor } from "../tensor.js";
import { onnxDataType } from "./api.js";
import type { Graph } from "./graph.js";
import { OPS } from "./ops/index.js";
import type { OpName } from "./ops/names.js";
import { CONTRIB_OPSET, IR_VERSION, OPSET } from "./opset.js";
import type { AttrValue, Node, Value } from "./types.js";

export interface OnnxExportOptions {
  /** Keep every node even if no output depends on it (default false: dead code is removed). */
  keepDeadNodes?: boolean;
  docString?: string;
}

function valueInfo(name: string, v: Value): OnnxTypes.IValueInfoProto {
  return {
    name,
    type: {
      tensorType: {
        elemType: onnxDataType(v.dtype),
        shape: { dim: v.shape.map((d) => (d === null ? {} : typeof d === "number" ? { dimValue: d } : { dimParam: d })) },
      },
    },
  };
}

function tensorProto(name: string, t: Tensor): OnnxTypes.ITensorProto {
  const d = t.data;
  return {
    name,
    dims: [...t.shape],
    dataType: onnxDataType(t.dtype),
    rawData: new Uint8Array(d.buffer, d.byteOffset, d.byteLength),
  };
}

function attribute(name: string, kind: string, value: AttrValue): OnnxTypes.IAttributeProto {
  const T = onnx.AttributeProto.AttributeType;
  switch (kind) {
    case "int":
      return { name, type: T.INT, i: value as number };
    case "float":
      return { name, type: T.FLOAT, f: value as number };
    case "ints":
      return { name, type: T.INTS, ints: [...(value as number[])] };
    case "floats":
      return { name, type: T.FLOATS, floats: [...(value as number[])] };
    case "string":
      return { name, type: T.STRING, s: new TextEncoder().encode(value as string) };
    default:
      throw new GraphBuildError("export", `unknown attribute kind ${kind}`);
  }
}

/** Nodes needed to compute the graph outputs, in topological (creation) order. */
export function liveNodes(g: Graph): Node[] {
  const need = new Set<number>(g.outputs.map((o) => o.value.id));
  const keep: Node[] = [];
  for (let k = g.nodes.length - 1; k >= 0; k--) {
    const n = g.nodes[k]!;
    if (n.outputs.some((o) => need.has(o.id))) {
      keep.push(n);
      for (const i of n.inputs) need.add(i.id);
    }
  }
  return keep.reverse();
}

/** Assigns every value a unique, readable name (explicit names win). */
export function nameValues(g: Graph, nodes: readonly Node[]): Map<number, string> {
  const names = new Map<number, string>();
  const used = new Set<string>();
  const claim = (v: Value, base: string) => {
    let n = base;
    for (let k = 1; used.has(n); k++) n = `${base}_${k}`;
    used.add(n);
    names.set(v.id, n);
  };
  for (const v of [...g.inputs, ...g.initializers]) claim(v, v.name!);
  for (const n of nodes) {
    for (const [i, o] of n.outputs.entries()) {
      if (o.name !== null) claim(o, o.name);
      else claim(o, n.outputs.length > 1 ? `${n.name}:${i}` : `${n.name}:out`);
    }
  }
  return names;
}

export function toModelProto(g: Graph, opts: OnnxExportOptions = {}): OnnxTypes.IModelProto {
  if (g.outputs.length === 0) throw new GraphBuildError("export", `graph '${g.name}' has no outputs`);
  const nodes = opts.keepDeadNodes ? g.nodes : liveNodes(g);
  const names = nameValues(g, nodes);
  const used = new Set<number>();
  for (const n of nodes) for (const i of n.inputs) used.add(i.id);
  for (const o of g.outputs) used.add(o.value.id);
  const domains = new Set<string>();
  const inputNames = (n: Node): string[] => {
    const named = n.inputs.map((i) => names.get(i.id)!);
    if (!n.slots) return named;
    const out = new Array<string>(n.slots[n.slots.length - 1]! + 1).fill(""); // "": an optional input left out
    n.slots.forEach((s, k) => (out[s] = named[k]!));
    return out;
  };
  const graph: OnnxTypes.IGraphProto = {
    name: g.name,
    node: nodes.map((n) => {
      const def = OPS[n.op as OpName];
      if (def.domain) domains.add(def.domain);
      return {
        name: n.name,
        opType: def.type,
        ...(def.domain ? { domain: def.domain } : {}),
        input: inputNames(n),
        output: n.outputs.map((o) => names.get(o.id)!),
        attribute: Object.entries(n.attrs).map(([k, v]) => attribute(k, def.attrs[k]!, v)),
      };
    }),
    input: g.inputs.map((v) => valueInfo(v.name!, v)),
    initializer: g.initializers.filter((v) => opts.keepDeadNodes || used.has(v.id)).map((v) => tensorProto(v.name!, v.data!)),
    output: g.outputs.map((o) => valueInfo(names.get(o.value.id)!, o.value)),
  };
  return {
    irVersion: IR_VERSION,
    producerName: "peft-ts",
    opsetImport: [{ domain: "", version: OPSET }, ...[...domains].map((domain) => ({ domain, version: CONTRIB_OPSET }))],
    graph,
    docString: opts.docString ?? "",
  };
}

/** The graph as ONNX protobuf bytes, loadable by onnxruntime and Netron. */
export function toOnnx(g: Graph, opts: OnnxExportOptions = {}): Uint8Array {
  return onnx.ModelProto.encode(onnx.ModelProto.create(toModelProto(g, opts))).finish();
}

export interface GraphSummary {
  readonly nodes: number;
  readonly opCounts: Record<string, number>;
  readonly inputs: string[];
  readonly outputs: string[];
  readonly initializers: number;
  readonly initializerParameters: number;
  readonly inputParameters: number;
}

/** Op counts and parameter counts of the live graph, for debugging and `peft inspect`. */
export function summarize(g: Graph): GraphSummary {
  const nodes = liveNodes(g);
  const opCounts: Record<string, number> = {};
  for (const n of nodes) opCounts[n.op] = (opCounts[n.op] ?? 0) + 1;
  const count = (v: Value) => v.shape.reduce<number>((p, d) => p * (typeof d === "number" ? d : 0), 1);
  return {
    nodes: nodes.length,
    opCounts,
    inputs: g.inputs.map((v) => v.toString()),
    outputs: g.outputs.map((o) => o.name),
    initializers: g.initializers.length,
    initializerParameters: g.initializers.reduce((s, v) => s + count(v), 0),
    inputParameters: g.inputs.filter((v) => v.shape.every((d) => typeof d === "number")).reduce((s, v) => s + count(v), 0),
  };
}

export function formatSummary(s: GraphSummary): string {
  const ops = Object.entries(s.opCounts)
    .sort((a, b) => b[1] - a[1])
    .map(([k, v]) => `${k}×${v}`)
    .join(" ");
  return [
    `nodes: ${s.nodes}  initializers: ${s.initializers} (${s.initializerParameters.toLocaleString("en-US")} params)`,
    `inputs: ${s.inputs.join(", ")}`,
    `outputs: ${s.outputs.join(", ")}`,
    `ops: ${ops}`,
  ].join("\n");
}
