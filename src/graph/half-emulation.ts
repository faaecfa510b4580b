/**
 * float16 numerics on a CPU that computes float16 ops in float32.
 *
 * onnxruntime's CPU execution provider has float16 kernels for few ops (here: LayerNormalization
 * and data movement); for the others it inserts casts and runs a chain of such ops in float32,
 * without rounding between them. A float16 graph run there is therefore more accurate than on a
 * device with float16 kernels, and an overflow such as x² > 65504 inside a chain never shows.
 * `emulateHalf` replays a float16 graph as a float32 graph in which every float16 value — every
 * op output, input and constant — is rounded to float16 (`Cast` to float16 and back): float32
 * arithmetic inside an op, float16 storage between ops, as a GPU with float32 accumulation
 * (PyTorch autocast on CUDA) computes. It is a measurement tool for tests and accuracy reports.
 *
 * Replay the graph after differentiation (the backward nodes are ordinary nodes then); custom
 * gradients and stop-gradient marks are not carried over.
 */
import { GraphBuildError } from "../errors.js";
import * as G from "./api.js";
import { Graph } from "./graph.js";
import type { OpName } from "./ops/names.js";
import type { Value } from "./types.js";
import { type Tensor, toFloat32 } from "../tensor.js";

const FLOAT16 = G.onnxDataType("float16");
const FLOAT32 = G.onnxDataType("float32");

/** `g` (float16) as a float32 graph with float16 rounding after every float16 value; same input and output names. */
export function emulateHalf(g: Graph): Graph {
  const h = new Graph(`${g.name}_half_emulation`);
  const map = new Map<number, Value>();
  const round = (v: Value): Value => G.cast(G.cast(v, "float16"), "float32");
  const get = (v: Value): Value => {
    const m = map.get(v.id);
    if (m) return m;
    if (v.kind !== "initializer" || !v.data) throw new GraphBuildError("emulateHalf", `value ${v} is used before it is defined`);
    const t: Tensor = v.data.dtype === "float16" ? { dtype: "float32", shape: v.data.shape, data: toFloat32(v.data) } : v.data;
    const nv = h.initializer(v.name!, t);
    map.set(v.id, nv);
    return nv;
  };
  for (const v of g.inputs) map.set(v.id, h.input(v.name!, v.dtype === "float16" ? "float32" : v.dtype, v.shape));
  for (const n of g.nodes) {
    const attrs = { ...n.attrs };
    if (n.op === "Cast" && attrs.to === FLOAT16) attrs.to = FLOAT32;
    if (n.op === "RandomUniformLike" && attrs.dtype === FLOAT16) attrs.dtype = FLOAT32;
    const outs = h.op(n.op as OpName, n.inputs.map(get), attrs);
    n.outputs.forEach((o, i) => map.set(o.id, o.dtype === "float16" ? round(outs[i]!) : outs[i]!));
  }
  for (const o of g.outputs) h.output(map.get(o.value.id)!, o.name);
  return h;
}
