/**
 * float16 graphs: constants are encoded as float16, and the composites and backward rules that
 * mixed precision relies on stay finite and accurate where plain float16 arithmetic overflows.
 * Overflow inside a chain of ops is invisible on onnxruntime's CPU (it computes such chains in
 * float32), so these checks run the float16 graph through `emulateHalf`, which rounds every
 * float16 value as a device with float16 kernels does.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { CompiledGraph } from "../runtime/session.js";
import { type Tensor, floatToHalf, halfToFloat, toFloat32 } from "../tensor.js";
import * as G from "./api.js";
import { grad } from "./autodiff.js";
import { geluTanh, rmsNorm } from "./composite.js";
import { Graph } from "./graph.js";
import { emulateHalf } from "./half-emulation.js";
import type { Value } from "./types.js";

async function run(g: Graph, feeds: Record<string, Tensor>): Promise<Record<string, Float32Array>> {
  const s = await CompiledGraph.create(g, { threads: 1 });
  try {
    const out = await s.run(feeds);
    return Object.fromEntries(Object.entries(out).map(([k, t]) => [k, toFloat32(t)]));
  } finally {
    await s.release();
  }
}

const f32 = (shape: number[], data: number[]): Tensor => ({ dtype: "float32", shape, data: Float32Array.from(data) });

/**
 * `f` applied to x in float32 and in float16 (emulated), with the gradient of Σ w·f(x) (w a fixed
 * weighting) for x as graph input: { y, dx } for each.
 */
async function bothPrecisions(xs: number[], shape: number[], f: (x: Value) => Value) {
  const w = xs.map((_, i) => 1 + (i % 3) * 0.5);
  const build = (dtype: "float32" | "float16") => {
    const g = new Graph(`half_${dtype}`);
    const x = g.input("x", dtype, shape);
    const y = f(x);
    const loss = G.sumAll(G.mul(G.cast(y, "float32"), g.constant(f32(shape, w))));
    g.output(G.cast(y, "float32"), "y");
    g.output(G.cast(grad(loss, [x])[0]!, "float32"), "dx");
    return g;
  };
  // the float16 run gets the float16-rounded inputs, so both see the same x
  const rounded = xs.map((v) => halfToFloat(floatToHalf(v)));
  const ref = await run(build("float32"), { x: f32(shape, rounded) });
  const half = await run(emulateHalf(build("float16")), { x: f32(shape, rounded) });
  return { ref, half };
}

function maxRel(a: Float32Array, b: Float32Array, floor: number): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!) / Math.max(Math.abs(a[i]!), floor));
  return m;
}

describe("float16 graphs", () => {
  test("scalar constants are float16 bit patterns (0.3 was stored as 0 and 3 as a subnormal)", async () => {
    const g = new Graph("scalars");
    const x = g.input("x", "float16", [3]);
    g.output(G.cast(G.div(G.add(x, 0.3), 3), "float32"), "y");
    const y = (await run(g, { x: { dtype: "float16", shape: [3], data: Uint16Array.from([1, -2, 6], floatToHalf) } })).y!;
    assert.deepEqual([...y].map((v) => Number(v.toFixed(3))), [0.433, -0.567, 2.1]);
  });

  test("geluTanh: finite, accurate gradient where x³ overflows float16 (|x| ≥ 40)", async () => {
    const xs = [-60000, -1000, -300, -100, -40, -5, -1, -0.3, 0, 0.5, 2, 8, 40, 100, 300, 1000, 60000];
    const { ref, half } = await bothPrecisions(xs, [xs.length], geluTanh);
    for (const k of ["y", "dx"] as const) {
      assert.ok(half[k]!.every(Number.isFinite), `${k}: ${[...half[k]!]}`);
      const e = maxRel(ref[k]!, half[k]!, 1e-2);
      console.log(`# geluTanh float16 ${k}: max rel error ${e.toExponential(2)}`);
      assert.ok(e < 4e-3, `${k}: ${e}`);
    }
  });

  test("RMSNorm statistics in float32: rows with |x| in the hundreds (x² > 65504) normalise correctly", async () => {
    const d = 8;
    const xs = Array.from({ length: 3 * d }, (_, i) => (i < d ? 300 : i < 2 * d ? 0.01 : 1) * Math.sin(i + 1));
    const { ref, half } = await bothPrecisions(xs, [3, d], (x) => rmsNorm(x, x.graph.constant(castTo(x, d)), 1e-6));
    for (const k of ["y", "dx"] as const) {
      assert.ok(half[k]!.every(Number.isFinite), `${k} finite`);
      const e = maxRel(ref[k]!, half[k]!, 1e-2);
      console.log(`# rmsNorm float16 ${k}: max rel error ${e.toExponential(2)}`);
      assert.ok(e < 4e-3, `${k}: ${e}`);
    }
  });

  test("LayerNormalization backward in float32: rows with |x| in the hundreds keep finite gradients", async () => {
    const d = 8;
    const xs = Array.from({ length: 2 * d }, (_, i) => (i < d ? 400 : 0.5) * Math.cos(i * 1.3));
    const { ref, half } = await bothPrecisions(xs, [2, d], (x) => {
      const g = x.graph;
      const scale = g.constant(castTo(x, d, (i) => 0.5 + i / d));
      const bias = g.constant(castTo(x, d, (i) => i / 10));
      return G.layerNormalization(x, scale, bias, 1e-5);
    });
    for (const k of ["y", "dx"] as const) {
      assert.ok(half[k]!.every(Number.isFinite), `${k} finite`);
      const e = maxRel(ref[k]!, half[k]!, 1e-2);
      console.log(`# layerNormalization float16 ${k}: max rel error ${e.toExponential(2)}`);
      assert.ok(e < 4e-3, `${k}: ${e}`);
    }
  });
});

/** A [d] constant of x's dtype. */
function castTo(x: Value, d: number, f: (i: number) => number = (i) => 1 + i / d): Tensor {
  const v = Array.from({ length: d }, (_, i) => f(i));
  return x.dtype === "float16" ? { dtype: "float16", shape: [d], data: Uint16Array.from(v, floatToHalf) } : f32([d], v);
}
