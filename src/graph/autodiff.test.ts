import assert from "node:assert/strict";
import { describe, test } from "node:test";
import * as G from "./api.js";
import { crossEntropy, gelu, geluTanh, rmsNorm, silu } from "./composite.js";
import { type GradCheckInput, type GradCheckOptions, gradCheck } from "../runtime/gradcheck.js";
import { OPS, OP_NAMES } from "./ops/index.js";
import { grad } from "./autodiff.js";
import { Graph } from "./graph.js";
import { nonDifferentiable } from "./op-def.js";
import type { Value } from "./types.js";

interface Case {
  name: string;
  /** Ops whose rules this case exercises. */
  ops: string[];
  inputs: GradCheckInput[];
  f: (...xs: Value[]) => Value;
  opts?: GradCheckOptions;
  tol?: number;
}

const pos = (n: number) => Array.from({ length: n }, (_, i) => 0.5 + ((i * 37) % 17) / 10);
const distinct = (n: number) => Array.from({ length: n }, (_, i) => ((i * 7919) % 101) / 50 - 1);

const CASES: Case[] = [
  { name: "add broadcast", ops: ["Add"], inputs: [{ name: "a", shape: [2, 3, 4] }, { name: "b", shape: [3, 1] }], f: (a, b) => G.add(a, b) },
  { name: "sub broadcast", ops: ["Sub"], inputs: [{ name: "a", shape: [4] }, { name: "b", shape: [2, 4] }], f: (a, b) => G.sub(a, b) },
  { name: "mul broadcast", ops: ["Mul"], inputs: [{ name: "a", shape: [2, 3] }, { name: "b", shape: [1, 3] }], f: (a, b) => G.mul(a, b) },
  {
    name: "div",
    ops: ["Div"],
    inputs: [{ name: "a", shape: [2, 3] }, { name: "b", shape: [3], values: pos(3) }],
    f: (a, b) => G.div(a, b),
  },
  {
    name: "pow (both)",
    ops: ["Pow", "Log"],
    inputs: [{ name: "x", shape: [2, 3], values: pos(6) }, { name: "p", shape: [3], values: [1.5, 2, 0.5] }],
    f: (x, p) => G.pow(x, p),
  },
  { name: "pow const", ops: ["Pow"], inputs: [{ name: "x", shape: [5], values: pos(5) }], f: (x) => G.pow(x, 3) },
  { name: "max", ops: ["Max"], inputs: [{ name: "a", shape: [6], values: distinct(6) }, { name: "b", shape: [6], values: [0.3, -0.2, 0.9, -0.7, 0.05, 0.6] }], f: (a, b) => G.maximum(a, b) },
  { name: "min", ops: ["Min"], inputs: [{ name: "a", shape: [6], values: distinct(6) }, { name: "b", shape: [6], values: [0.3, -0.2, 0.9, -0.7, 0.05, 0.6] }], f: (a, b) => G.minimum(a, b) },
  { name: "neg/identity", ops: ["Neg", "Identity"], inputs: [{ name: "x", shape: [3] }], f: (x) => G.identity(G.neg(x)) },
  { name: "sqrt", ops: ["Sqrt"], inputs: [{ name: "x", shape: [4], values: pos(4) }], f: (x) => G.sqrt(x) },
  { name: "reciprocal", ops: ["Reciprocal"], inputs: [{ name: "x", shape: [4], values: pos(4) }], f: (x) => G.reciprocal(x) },
  { name: "exp", ops: ["Exp"], inputs: [{ name: "x", shape: [4] }], f: (x) => G.exp(x) },
  { name: "log", ops: ["Log"], inputs: [{ name: "x", shape: [4], values: pos(4) }], f: (x) => G.log(x) },
  { name: "tanh", ops: ["Tanh"], inputs: [{ name: "x", shape: [5] }], f: (x) => G.tanh(x) },
  { name: "erf", ops: ["Erf"], inputs: [{ name: "x", shape: [5] }], f: (x) => G.erf(x), opts: { dtype: "float32", eps: 1e-2 }, tol: 2e-3 },
  { name: "sigmoid", ops: ["Sigmoid"], inputs: [{ name: "x", shape: [5] }], f: (x) => G.sigmoid(x) },
  { name: "relu", ops: ["Relu"], inputs: [{ name: "x", shape: [6], values: distinct(6) }], f: (x) => G.relu(x) },
  { name: "abs", ops: ["Abs"], inputs: [{ name: "x", shape: [6], values: distinct(6) }], f: (x) => G.abs(x) },
  { name: "cos/sin", ops: ["Cos", "Sin"], inputs: [{ name: "x", shape: [5] }], f: (x) => G.add(G.cos(x), G.sin(G.mul(x, 2))), opts: { dtype: "float32", eps: 1e-2 }, tol: 2e-3 },
  {
    name: "where",
    ops: ["Where", "Greater"],
    inputs: [{ name: "c", shape: [2, 3], values: distinct(6) }, { name: "a", shape: [2, 3] }, { name: "b", shape: [3] }],
    f: (c, a, b) => G.where(G.greater(c, 0), a, b),
  },
  { name: "matmul", ops: ["MatMul"], inputs: [{ name: "a", shape: [2, 3, 4] }, { name: "b", shape: [4, 5] }], f: (a, b) => G.matmul(a, b) },
  {
    name: "matmul batch broadcast",
    ops: ["MatMul"],
    inputs: [{ name: "a", shape: [2, 1, 3, 4] }, { name: "b", shape: [3, 4, 2] }],
    f: (a, b) => G.matmul(a, b),
  },
  ...[false, true].flatMap((ta) =>
    [false, true].map(
      (tb): Case => ({
        name: `gemm transA=${ta} transB=${tb}`,
        ops: ["Gemm"],
        inputs: [
          { name: "a", shape: ta ? [4, 3] : [3, 4] },
          { name: "b", shape: tb ? [5, 4] : [4, 5] },
          { name: "c", shape: [5] },
        ],
        f: (a, b, c) => G.gemm(a, b, c, { transA: ta, transB: tb, alpha: 0.7, beta: 1.3 }),
      }),
    ),
  ),
  // Conv runs in float32 in onnxruntime (no float64 kernel); each case is linear in every input, so central differences are exact up to rounding
  {
    name: "conv 3×3, bias",
    ops: ["Conv", "ConvTranspose"],
    inputs: [{ name: "x", shape: [2, 3, 5, 6] }, { name: "w", shape: [4, 3, 3, 3] }, { name: "b", shape: [4] }],
    f: (x, w, b) => G.conv2d(x, w, b),
    opts: { dtype: "float32", eps: 1e-2, maxElements: 24 },
    tol: 2e-3,
  },
  {
    name: "conv stride 2, padding, uneven (trailing rows unreached)",
    ops: ["Conv", "ConvTranspose"],
    inputs: [{ name: "x", shape: [2, 2, 8, 7] }, { name: "w", shape: [3, 2, 3, 2] }],
    f: (x, w) => G.conv2d(x, w, null, { strides: [2, 2], pads: [1, 0, 1, 1] }),
    opts: { dtype: "float32", eps: 1e-2, maxElements: 24 },
    tol: 2e-3,
  },
  {
    name: "conv stride 2, dilation 2",
    ops: ["Conv", "ConvTranspose"],
    inputs: [{ name: "x", shape: [1, 2, 9, 9] }, { name: "w", shape: [2, 2, 2, 3] }, { name: "b", shape: [2] }],
    f: (x, w, b) => G.conv2d(x, w, b, { strides: [2, 1], pads: [0, 2, 1, 0], dilations: [2, 2] }),
    opts: { dtype: "float32", eps: 1e-2, maxElements: 24 },
    tol: 2e-3,
  },
  {
    name: "conv transpose stride 2, padding, output padding",
    ops: ["ConvTranspose", "Conv"],
    inputs: [{ name: "x", shape: [2, 3, 4, 3] }, { name: "w", shape: [3, 2, 3, 3] }],
    f: (x, w) => G.convTranspose2d(x, w, { strides: [2, 2], pads: [1, 1, 0, 1], outputPadding: [1, 0] }),
    opts: { dtype: "float32", eps: 1e-2, maxElements: 24 },
    tol: 2e-3,
  },
  { name: "reduce sum", ops: ["ReduceSum"], inputs: [{ name: "x", shape: [2, 3, 4] }], f: (x) => G.reduceSum(x, [1], false) },
  { name: "reduce sum all", ops: ["ReduceSum"], inputs: [{ name: "x", shape: [2, 3] }], f: (x) => G.sumAll(x) },
  { name: "reduce mean", ops: ["ReduceMean"], inputs: [{ name: "x", shape: [2, 3, 4] }], f: (x) => G.reduceMean(x, [0, 2], true) },
  { name: "reduce max", ops: ["ReduceMax"], inputs: [{ name: "x", shape: [3, 4], values: distinct(12) }], f: (x) => G.reduceMax(x, [1], false) },
  { name: "reshape", ops: ["Reshape"], inputs: [{ name: "x", shape: [2, 6] }], f: (x) => G.mul(G.reshape(x, [3, -1]), G.reshape(x, [0, 3, 2]).graph.scalar(2, "float64")) },
  { name: "transpose", ops: ["Transpose"], inputs: [{ name: "x", shape: [2, 3, 4] }], f: (x) => G.transpose(x, [2, 0, 1]) },
  { name: "concat", ops: ["Concat"], inputs: [{ name: "a", shape: [2, 3] }, { name: "b", shape: [2, 2] }], f: (a, b) => G.concat([a, b, a], 1) },
  {
    name: "split (one output unused)",
    ops: ["Split"],
    inputs: [{ name: "x", shape: [2, 7] }],
    f: (x) => {
      const [a, , c] = G.split(x, [2, 3, 2], 1);
      return G.mul(a!, c!);
    },
  },
  { name: "slice", ops: ["Slice", "Pad"], inputs: [{ name: "x", shape: [3, 5] }], f: (x) => G.slice(x, [1, -3], [3, Number.MAX_SAFE_INTEGER], [0, 1]) },
  { name: "slice inner", ops: ["Slice"], inputs: [{ name: "x", shape: [4, 6] }], f: (x) => G.slice(x, [1], [4], [1]) },
  { name: "pad", ops: ["Pad", "Slice"], inputs: [{ name: "x", shape: [2, 3] }], f: (x) => G.pad(x, [1, 0, 0, 2]) },
  { name: "squeeze/unsqueeze", ops: ["Squeeze", "Unsqueeze"], inputs: [{ name: "x", shape: [2, 1, 3] }], f: (x) => G.unsqueeze(G.squeeze(x, [1]), [0]) },
  {
    name: "expand",
    ops: ["Expand", "Shape"],
    inputs: [{ name: "x", shape: [3, 1] }, { name: "y", shape: [2, 3, 4], check: false }],
    f: (x, y) => G.mul(G.expand(x, G.shapeOf(y)), y),
  },
  { name: "cast f64→f32→f64", ops: ["Cast"], inputs: [{ name: "x", shape: [4] }], f: (x) => G.cast(G.mul(G.cast(x, "float32"), 3), "float64"), tol: 1e-4, opts: { eps: 1e-3 } },
  { name: "cumsum", ops: ["CumSum"], inputs: [{ name: "x", shape: [2, 5] }], f: (x) => G.cumsum(x, 1) },
  { name: "cumsum reverse exclusive", ops: ["CumSum"], inputs: [{ name: "x", shape: [5, 2] }], f: (x) => G.cumsum(x, 0, { reverse: true, exclusive: true }) },
  { name: "softmax", ops: ["Softmax"], inputs: [{ name: "x", shape: [2, 5] }], f: (x) => G.softmax(x, -1) },
  { name: "softmax axis 0", ops: ["Softmax"], inputs: [{ name: "x", shape: [3, 2] }], f: (x) => G.softmax(x, 0) },
  { name: "log softmax", ops: ["LogSoftmax"], inputs: [{ name: "x", shape: [2, 5] }], f: (x) => G.logSoftmax(x, -1) },
  {
    name: "layer norm",
    ops: ["LayerNormalization"],
    inputs: [{ name: "x", shape: [2, 3, 6] }, { name: "s", shape: [6] }, { name: "b", shape: [6] }],
    f: (x, s, b) => G.layerNormalization(x, s, b, 1e-5),
    opts: { dtype: "float32", eps: 1e-2 },
    tol: 5e-3,
  },
  {
    name: "gather rows (repeated ids)",
    ops: ["Gather"],
    inputs: [{ name: "w", shape: [5, 3] }, { name: "ids", shape: [2, 3], values: [0, 4, 4, 2, 0, 1], int: true }],
    f: (w, ids) => G.gather(w, ids, 0),
  },
  {
    name: "gather elements",
    ops: ["GatherElements"],
    inputs: [{ name: "x", shape: [3, 4] }, { name: "i", shape: [3, 2], values: [0, 3, 1, 1, 2, 0], int: true }],
    f: (x, i) => G.gatherElements(x, i, 1),
  },
  { name: "gelu", ops: [], inputs: [{ name: "x", shape: [6] }], f: (x) => gelu(x), opts: { dtype: "float32", eps: 1e-2 }, tol: 3e-3 },
  { name: "gelu tanh", ops: [], inputs: [{ name: "x", shape: [6] }], f: (x) => geluTanh(x) },
  { name: "silu", ops: [], inputs: [{ name: "x", shape: [6] }], f: (x) => silu(x) },
  { name: "rms norm", ops: [], inputs: [{ name: "x", shape: [2, 4] }, { name: "w", shape: [4] }], f: (x, w) => rmsNorm(x, w, 1e-6) },
  {
    name: "cross entropy with ignored rows",
    ops: ["SoftmaxCrossEntropyLoss"],
    inputs: [{ name: "z", shape: [4, 3] }, { name: "y", shape: [4], values: [2, -100, 0, 1], int: true }],
    f: (z, y) => crossEntropy(z, y),
  },
  {
    name: "softmax cross-entropy: per-row losses and log-probabilities both used",
    ops: ["SoftmaxCrossEntropyLoss"],
    inputs: [{ name: "z", shape: [3, 5] }, { name: "y", shape: [3], values: [4, 0, -1], int: true }],
    f: (z, y) => {
      const [rows, lp] = z.graph.op("SoftmaxCrossEntropyLoss", [z, y], { reduction: "none", ignore_index: -1 });
      return G.add(G.mul(rows!, 3), G.reduceSum(G.mul(lp!, lp!), [1], false));
    },
  },
  {
    name: "custom gradient replaces the ops' rules",
    ops: [],
    inputs: [{ name: "x", shape: [5] }],
    // y = x³ behind a stop-gradient (the ops' rules would give 0); the rule gives 3x²
    f: (x) => {
      const y = x.graph.stopGradient(G.mul(G.mul(x, x), x));
      return x.graph.customGradient(y, [x], (dy) => [G.mul(dy, G.mul(G.mul(x, x), 3))]);
    },
  },
];

describe("gradients match central finite differences", () => {
  for (const c of CASES) {
    test(c.name, async () => {
      const r = await gradCheck(c.inputs, c.f, c.opts);
      const tol = c.tol ?? 1e-6;
      for (const [k, e] of Object.entries(r.maxError)) assert.ok(e <= tol, `${c.name}: d/d${k} error ${e} > ${tol}`);
      // the check is meaningful only if some gradient is non-zero
      assert.ok(Object.values(r.analytic).some((a) => a.some((v) => Math.abs(v) > 1e-3)), "all gradients vanished");
    });
  }
});

test("every differentiable op has a finite-difference case", () => {
  const covered = new Set(CASES.flatMap((c) => c.ops));
  const exempt = new Set(["ScatterElements", "ScatterND"]); // appear only inside backward graphs
  // onnxruntime contrib kernels (a domain of their own) are inference-only: their rule refuses
  const missing = OP_NAMES.filter((n) => OPS[n].vjp !== nonDifferentiable && OPS[n].domain === undefined && !exempt.has(n) && !covered.has(n));
  assert.deepEqual(missing, []);
});

test("differentiating through an onnxruntime contrib op is refused (PEFT_ERR_NO_GRADIENT)", () => {
  for (const n of OP_NAMES.filter((op) => OPS[op].domain !== undefined)) {
    const g = new Graph("contrib_grad");
    const x = g.input("x", "float32", [1, 2, 4]);
    const y = n === "MultiHeadAttention" ? G.multiHeadAttention(x, x, x, { heads: 2, scale: 1 }) : n === "SkipLayerNormalization" ? G.skipLayerNormalization(x, x, g.constant({ dtype: "float32", shape: [4], data: new Float32Array(4).fill(1) }), null, 1e-5)[0] : G.fastGelu(x);
    assert.throws(() => grad(G.reduceSum(y, [0, 1, 2], false), [x]), (e: unknown) => (e as { code?: string }).code === "PEFT_ERR_NO_GRADIENT" && new RegExp(n).test((e as Error).message), n);
  }
});
