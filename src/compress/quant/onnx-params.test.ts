import { describe, test } from "node:test";
import assert from "node:assert/strict";
import onnxProto, { type onnx as OnnxTypes } from "onnx-proto";
import * as ort from "onnxruntime-node";
import { evaluateOnnxDequant, onnxDequantParams, type OnnxDequantParams } from "./onnx-params.js";
import { dequantize, quantize, type QuantScheme } from "./quantize.js";

const { onnx } = onnxProto;

function data(n: number): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = Math.sin(i * 0.37) * (1 + (i % 7)) + (i % 53 === 0 ? 9 : 0);
  return out;
}

const SCHEMES: QuantScheme[] = [
  { kind: "int8", blockSize: 64 },
  { kind: "int8", blockSize: 64, doubleQuant: true },
  { kind: "dynamic", blockSize: 128 },
  { kind: "dynamic-unsigned", blockSize: 64 },
  { kind: "nf4", blockSize: 64, doubleQuant: true },
  { kind: "fp4", blockSize: 32 },
];

function input(scheme: QuantScheme, n: number): Float32Array {
  const x = data(n);
  return scheme.kind === "dynamic-unsigned" ? x.map(Math.abs) : x;
}

describe("onnxDequantParams", () => {
  for (const scheme of SCHEMES) {
    test(`${scheme.kind}${scheme.doubleQuant ? " + double quant" : ""}: the in-graph recipe reproduces dequantize exactly`, () => {
      const x = input(scheme, 13 * 29); // 377 = 5 blocks of 64 + 57
      const q = quantize({ dtype: "float32", shape: [13, 29], data: x }, scheme);
      const p = onnxDequantParams(q);
      assert.equal(p.kind, scheme.kind === "int8" ? "dequantize-linear" : "gather-codebook");
      assert.equal(p.numBlocks, Math.ceil(x.length / p.blockSize));
      assert.deepEqual(p.shape, [13, 29]);
      assert.equal(p.nested !== null, scheme.doubleQuant === true);
      if (p.kind === "gather-codebook") {
        assert.equal(p.indices.length, p.numBlocks * p.blockSize);
        assert.equal(p.codebook[p.zeroIndex], 0);
        assert.equal(p.packed !== null, scheme.kind === "nf4" || scheme.kind === "fp4");
      }
      assert.deepEqual(evaluateOnnxDequant(p), dequantize(q).data);
    });
  }
});

// --- the same recipes run through onnxruntime -------------------------------------------

type TP = OnnxTypes.ITensorProto;
const DT = onnx.TensorProto.DataType;

function init(name: string, dataType: number, dims: number[], bytes: ArrayBufferView): TP {
  return { name, dataType, dims, rawData: new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength) };
}

function node(op: string, inputs: string[], outputs: string[], attrs: OnnxTypes.IAttributeProto[] = []): OnnxTypes.INodeProto {
  return { opType: op, input: inputs, output: outputs, attribute: attrs };
}

const intAttr = (name: string, i: number): OnnxTypes.IAttributeProto => ({ name, type: onnx.AttributeProto.AttributeType.INT, i });

function buildModel(p: OnnxDequantParams): Uint8Array {
  const inits: TP[] = [init("shape", DT.INT64, [p.shape.length], BigInt64Array.from(p.shape.map(BigInt)))];
  const nodes: OnnxTypes.INodeProto[] = [];
  if (p.kind === "dequantize-linear") {
    inits.push(init("x", DT.INT8, [p.numel], p.x), init("x_scale", DT.FLOAT, [p.numBlocks], p.scale));
    nodes.push(node("DequantizeLinear", ["x", "x_scale"], ["y"], [intAttr("axis", 0), intAttr("block_size", p.blockSize)]));
    nodes.push(node("Reshape", ["y", "shape"], ["W"]));
  } else {
    inits.push(
      init("idx", DT.UINT8, [p.indices.length], p.indices),
      init("book", DT.FLOAT, [p.codebook.length], p.codebook),
      init("s", DT.FLOAT, [p.numBlocks, 1], p.scales),
      init("blocks", DT.INT64, [2], BigInt64Array.from([BigInt(p.numBlocks), BigInt(p.blockSize)])),
      init("flat", DT.INT64, [1], BigInt64Array.from([-1n])),
      init("start", DT.INT64, [1], BigInt64Array.from([0n])),
      init("end", DT.INT64, [1], BigInt64Array.from([BigInt(p.numel)])),
    );
    nodes.push(
      node("Cast", ["idx"], ["idx32"], [intAttr("to", DT.INT32)]),
      node("Gather", ["book", "idx32"], ["v"], [intAttr("axis", 0)]),
      node("Reshape", ["v", "blocks"], ["vb"]),
      node("Mul", ["vb", "s"], ["y"]),
      node("Reshape", ["y", "flat"], ["yf"]),
      node("Slice", ["yf", "start", "end"], ["ys"]),
      node("Reshape", ["ys", "shape"], ["W"]),
    );
  }
  const model: OnnxTypes.IModelProto = {
    irVersion: 10,
    opsetImport: [{ domain: "", version: 21 }],
    producerName: "peft-ts-test",
    graph: {
      name: "dequant",
      node: nodes,
      initializer: inits,
      input: [],
      output: [
        {
          name: "W",
          type: { tensorType: { elemType: DT.FLOAT, shape: { dim: p.shape.map((d) => ({ dimValue: d })) } } },
        },
      ],
    },
  };
  return onnx.ModelProto.encode(onnx.ModelProto.create(model)).finish();
}

describe("onnxDequantParams in onnxruntime", () => {
  for (const scheme of [SCHEMES[0]!, SCHEMES[2]!, SCHEMES[4]!]) {
    test(`${scheme.kind}: DequantizeLinear / Gather graph output equals dequantize`, async () => {
      const x = input(scheme, 13 * 29); // 377 = 5 blocks of 64 + 57
      const q = quantize({ dtype: "float32", shape: [13, 29], data: x }, scheme);
      const session = await ort.InferenceSession.create(buildModel(onnxDequantParams(q)));
      try {
        const out = await session.run({});
        const w = out["W"]!;
        assert.deepEqual([...w.dims], [13, 29]);
        assert.deepEqual(w.data as Float32Array, dequantize(q).data);
      } finally {
        await session.release();
      }
    });
  }
});
