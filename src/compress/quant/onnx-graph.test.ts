import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { Graph } from "../../graph/graph.js";
import * as G from "../../graph/api.js";
import { toOnnx } from "../../graph/onnx.js";
import { CompiledGraph, type SessionOptions } from "../../runtime/session.js";
import { BYTES_PER_ELEMENT } from "../../tensor.js";
import { emitDequantize, pairCodebook } from "./onnx-graph.js";
import { NF4_CODE } from "./codebooks.js";
import { dequantize, quantize, type QuantScheme } from "./quantize.js";

function data(n: number): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = Math.sin(i * 0.37) * (1 + (i % 7)) + (i % 53 === 0 ? 9 : 0) - (i % 71 === 0 ? 12 : 0);
  return out;
}

const SCHEMES: QuantScheme[] = [
  { kind: "int8", blockSize: 64 },
  { kind: "int8", blockSize: 128, doubleQuant: true },
  { kind: "dynamic", blockSize: 64 },
  { kind: "dynamic", blockSize: 256, doubleQuant: true },
  { kind: "nf4", blockSize: 64 },
  { kind: "nf4", blockSize: 32, doubleQuant: true },
  { kind: "fp4", blockSize: 64, doubleQuant: true },
];

async function runGraph(g: Graph, opts: SessionOptions = {}): Promise<Record<string, Float32Array | Float64Array>> {
  const cg = await CompiledGraph.create(g, { threads: 1, ...opts });
  try {
    const out = await cg.run({});
    return Object.fromEntries(Object.entries(out).map(([k, t]) => [k, t.data as Float32Array | Float64Array]));
  } finally {
    await cg.release();
  }
}

describe("emitDequantize", () => {
  for (const scheme of SCHEMES) {
    const label = `${scheme.kind} (block ${scheme.blockSize}${scheme.doubleQuant ? ", double quant" : ""})`;
    // 13·29 = 377 elements: a partial last block, and an odd count for the 4-bit packing
    test(`${label}: onnxruntime computes dequantize() bit for bit, folded or not`, async () => {
      const q = quantize({ dtype: "float32", shape: [13, 29], data: data(377) }, scheme, "w");
      const want = dequantize(q).data;
      for (const optimization of ["all", "disabled"] as const) {
        const g = new Graph("dq");
        const w = emitDequantize(g, q, "w");
        assert.deepEqual(w.shape, [13, 29]);
        assert.equal(w.dtype, "float32");
        g.output(w, "w_out");
        const got = (await runGraph(g, { optimization })).w_out!;
        assert.deepEqual(got, want, `optimization ${optimization}`);
      }
    });
  }

  test("a float64 graph gets the same values, cast", async () => {
    const q = quantize({ dtype: "float32", shape: [40, 16], data: data(640) }, { kind: "nf4", doubleQuant: true }, "w");
    const g = new Graph("dq64");
    const w = emitDequantize(g, q, "w", "float64");
    assert.equal(w.dtype, "float64");
    g.output(w, "w_out");
    assert.deepEqual((await runGraph(g)).w_out, Float64Array.from(dequantize(q).data as Float32Array));
  });

  test("a weight dequantised in a graph multiplies like the float32 weight it stands for", async () => {
    const q = quantize({ dtype: "float32", shape: [24, 64], data: data(24 * 64) }, { kind: "nf4", blockSize: 64, doubleQuant: true }, "w");
    const x = Float32Array.from({ length: 3 * 64 }, (_, i) => Math.cos(i));
    const g = new Graph("mm");
    const xin = g.input("x", "float32", [3, 64]);
    g.output(G.matmul(xin, G.transpose(emitDequantize(g, q, "w"), [1, 0])), "y");
    const cg = await CompiledGraph.create(g, { threads: 1 });
    const y = (await cg.run({ x: { dtype: "float32", shape: [3, 64], data: x } })).y!.data as Float32Array;
    await cg.release();
    const w = dequantize(q).data as Float32Array;
    for (let r = 0; r < 3; r++) {
      for (let o = 0; o < 24; o++) {
        let s = 0;
        for (let k = 0; k < 64; k++) s += x[r * 64 + k]! * w[o * 64 + k]!;
        assert.ok(Math.abs(y[r * 24 + o]! - s) <= 1e-5 * (1 + Math.abs(s)), `y[${r},${o}] = ${y[r * 24 + o]} vs ${s}`);
      }
    }
  });

  test("the graph stores the packed codes, not float32 weights; code books are shared", () => {
    const n = 64 * 64;
    const g = new Graph("two");
    for (const name of ["a", "b"]) {
      g.output(emitDequantize(g, quantize({ dtype: "float32", shape: [64, 64], data: data(n) }, { kind: "nf4", doubleQuant: true }, name), name), `${name}_out`);
    }
    const tables = g.initializers.filter((v) => v.name === "quant.nf4_pairs" || v.name === "quant.dynamic_map");
    assert.equal(tables.length, 2, "one pair table and one dynamic map for both weights");
    const codes = g.initializers.find((v) => v.name === "a.qcodes")!;
    assert.equal(codes.dtype, "uint8");
    assert.deepEqual(codes.shape, [64, 32]);
    let bytes = 0;
    for (const v of g.initializers) bytes += v.shape.reduce<number>((p, d) => p * Number(d), 1) * BYTES_PER_ELEMENT[v.dtype];
    // 2 × (2048 code bytes + 64 scale codes + nested absmax and offset) + the two tables + shared
    // int64 shape constants
    assert.ok(bytes <= 2 * (n / 2 + 64 + 8) + 512 * 4 + 256 * 4 + 64, `initializer bytes ${bytes}`);
    assert.ok(toOnnx(g).length < (2 * n * 4) / 3, "the ONNX model is far smaller than the float32 weights");
  });

  test("pairCodebook unpacks both nibbles of every byte, high nibble first", () => {
    const p = pairCodebook(NF4_CODE);
    assert.equal(p.length, 512);
    for (const b of [0x00, 0x7f, 0xa3, 0xff]) {
      assert.equal(p[2 * b], NF4_CODE[b >> 4]);
      assert.equal(p[2 * b + 1], NF4_CODE[b & 15]);
    }
    assert.throws(() => pairCodebook(new Float32Array(8)), { code: "PEFT_ERR_QUANTIZED_TENSOR" });
  });

  test("an empty or inconsistent quantised tensor is refused", () => {
    const empty = quantize(new Float32Array(0), { kind: "nf4" });
    assert.throws(() => emitDequantize(new Graph(), empty, "e"), { code: "PEFT_ERR_QUANTIZED_TENSOR" });
    const q = quantize({ dtype: "float32", shape: [8, 8], data: data(64) }, { kind: "int8" });
    assert.throws(() => emitDequantize(new Graph(), { ...q, shape: [8, 9] }, "bad"), { code: "PEFT_ERR_QUANTIZED_TENSOR" });
  });
});
