/**
 * In-graph dequantisation: `emitDequantize(g, q, name)` appends to `g` a constant subgraph whose
 * value is bit for bit `dequantize(q)` (float32, then cast to the requested dtype), built from
 * opset-17 ops only (blocked `DequantizeLinear` needs opset 21):
 *
 *     int8:        W = Reshape(Slice(Reshape(Cast(codes int8 [nb, B], float) · scale [nb, 1], [-1]), 0, n), shape)
 *                  scale = absmax / 127
 *     dynamic:     W = … Gather(map [256], Cast(codes uint8 [nb, B], int32)) · absmax [nb, 1] …
 *     NF4 / FP4:   W = … Reshape(Gather(pairs [256, 2], Cast(packed uint8 [nb, B/2], int32)), [nb, B]) · absmax …
 *
 * For the 4-bit kinds the bitsandbytes bytes (two codes per byte, high nibble first) stay packed
 * in the graph: `pairs[b] = [code[b >> 4], code[b & 15]]` unpacks a whole byte in one Gather, so
 * no bitwise ops are needed. The last block is padded (with the code of 0) to a full block and
 * the padding is sliced away.
 *
 * With double quantisation the per-block absmax is dequantised in the graph too:
 * absmax = Slice(Reshape(Gather(signed dynamic map, nestedCodes [nn, Bn]) · nestedAbsmax [nn, 1], [-1]), 0, nb) + offset
 * (with a single nested block, codes [1, nb] and no padding). Shape constants and code books are
 * shared by all weights of a graph.
 *
 * Every value depends only on initializers, so autodiff never differentiates through it; ONNX
 * Runtime folds it into a float32 initializer when the session is created (its constant folding)
 * unless that optimiser is disabled for the session, in which case it runs at every call.
 */
import { QuantizedTensorError } from "../../errors.js";
import * as G from "../../graph/api.js";
import type { Graph } from "../../graph/graph.js";
import type { Value } from "../../graph/types.js";
import { numel, type DType } from "../../tensor.js";
import { NF4_ZERO_CODE, numBlocks } from "./blockwise.js";
import { codebookFor, int8Codes, validateQuantized, type QuantizedTensor } from "./quantize.js";

const tables = new WeakMap<Graph, Map<string, Value>>();

function cache(g: Graph): Map<string, Value> {
  let m = tables.get(g);
  if (!m) tables.set(g, (m = new Map()));
  return m;
}

/** A shared code-book initializer of graph `g` (created on first use). */
function table(g: Graph, key: string, make: () => Float32Array, shape: readonly number[]): Value {
  const m = cache(g);
  let v = m.get(key);
  if (!v) {
    v = g.initializer(`quant.${key}`, { dtype: "float32", shape, data: make() });
    m.set(key, v);
  }
  return v;
}

/** A shared int64 vector constant (shapes, slice bounds). */
function ints(g: Graph, values: readonly number[]): Value {
  const m = cache(g);
  const key = `ints:${values.join(",")}`;
  let v = m.get(key);
  if (!v) m.set(key, (v = g.ints(values)));
  return v;
}

/** `[code[b >> 4], code[b & 15]]` for every byte value b: one Gather unpacks a packed byte. */
export function pairCodebook(code: Float32Array): Float32Array {
  if (code.length !== 16) throw new QuantizedTensorError("pairCodebook", `a 4-bit code book has 16 values, got ${code.length}`);
  const out = new Float32Array(512);
  for (let b = 0; b < 256; b++) {
    out[2 * b] = code[b >> 4]!;
    out[2 * b + 1] = code[b & 15]!;
  }
  return out;
}

/** Pads (with `fill`) a byte array to `length`. */
function padBytes(src: Uint8Array, length: number, fill: number): Uint8Array {
  if (src.length === length) return src;
  const out = new Uint8Array(length).fill(fill);
  out.set(src);
  return out;
}

/** `rows × cols` values → `shape`, dropping the padding beyond `n` elements when there is some. */
function finish(g: Graph, v: Value, n: number, padded: number, shape: readonly number[]): Value {
  if (padded === n) return G.reshape(v, ints(g, shape));
  const flat = g.op1("Slice", [G.reshape(v, ints(g, [-1])), ints(g, [0]), ints(g, [n]), ints(g, [0])]);
  return G.reshape(flat, ints(g, shape));
}

/** The per-block absmax as a [numBlocks, 1] float32 value (dequantised in the graph when nested). */
function blockScales(g: Graph, q: QuantizedTensor, name: string, nb: number): Value {
  const s = q.scales;
  if (s.kind === "float32") return g.initializer(`${name}.qabsmax`, { dtype: "float32", shape: [nb, 1], data: s.absmax });
  const map = codebookFor("dynamic")!;
  const nn = numBlocks(nb, s.blockSize);
  // one nested block: [1, nb] codes times one absmax; several: full nested blocks, padded
  const cols = nn === 1 ? nb : s.blockSize;
  const codes = g.initializer(`${name}.qabsmax_codes`, { dtype: "uint8", shape: [nn, cols], data: padBytes(s.codes, nn * cols, map.indexOf(0)) });
  const nestedAbsmax = g.initializer(`${name}.qabsmax_absmax`, { dtype: "float32", shape: [nn, 1], data: s.absmax });
  const offset = g.initializer(`${name}.qabsmax_offset`, { dtype: "float32", shape: [], data: Float32Array.of(s.offset) });
  const values = G.mul(G.gather(table(g, "dynamic_map", () => map, [256]), G.cast(codes, "int32"), 0), nestedAbsmax);
  return G.add(finish(g, values, nb, nn * cols, [nb, 1]), offset);
}

/**
 * Appends the dequantisation of `q` to `g` (initializers named `<name>.q…`) and returns the
 * weight as a value of shape `q.shape` and dtype `dtype` (float32 by default; other float dtypes
 * are a Cast of the float32 result). `name` must be unique in the graph (the parameter name).
 */
export function emitDequantize(g: Graph, q: QuantizedTensor, name: string, dtype: DType = "float32"): Value {
  validateQuantized(q, name);
  const n = numel(q.shape);
  if (n === 0) throw new QuantizedTensorError(name, "an empty tensor has nothing to dequantise in a graph");
  const bs = q.blockSize;
  const nb = numBlocks(n, bs);
  const padded = nb * bs;
  let absmax = blockScales(g, q, name, nb);
  let blocks: Value;
  if (q.kind === "int8") {
    const codes = new Int8Array(padded);
    codes.set(int8Codes(q));
    const x = g.initializer(`${name}.qcodes`, { dtype: "int8", shape: [nb, bs], data: codes });
    absmax = G.div(absmax, 127);
    blocks = G.mul(G.cast(x, "float32"), absmax);
  } else if (q.kind === "nf4" || q.kind === "fp4") {
    const zero = q.kind === "nf4" ? NF4_ZERO_CODE : 0;
    const codes = g.initializer(`${name}.qcodes`, { dtype: "uint8", shape: [nb, bs / 2], data: padBytes(q.codes, padded / 2, (zero << 4) | zero) });
    const pairs = table(g, `${q.kind}_pairs`, () => pairCodebook(codebookFor(q.kind)!), [256, 2]);
    blocks = G.mul(G.reshape(G.gather(pairs, G.cast(codes, "int32"), 0), ints(g, [nb, bs])), absmax);
  } else {
    const map = codebookFor(q.kind)!;
    const codes = g.initializer(`${name}.qcodes`, { dtype: "uint8", shape: [nb, bs], data: padBytes(q.codes, padded, map.indexOf(0)) });
    blocks = G.mul(G.gather(table(g, `${q.kind}_map`, () => map, [256]), G.cast(codes, "int32"), 0), absmax);
  }
  return G.cast(finish(g, blocks, n, padded, q.shape), dtype);
}
