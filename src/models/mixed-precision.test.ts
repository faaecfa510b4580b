/**
 * float16 model graphs: weights converted once on the host (float16 files used as stored,
 * bfloat16 rounded once), trainable parameters as float32 inputs, attention masks that cannot
 * overflow, and base-model logits close to float32.
 */
import assert from "node:assert/strict";
import { copyFileSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import * as G from "../graph/api.js";
import { Graph } from "../graph/graph.js";
import { emulateHalf } from "../graph/half-emulation.js";
import { loadSafetensors, saveSafetensors } from "../io/safetensors.js";
import { CompiledGraph } from "../runtime/session.js";
import { type Tensor, bf16ToFloat, floatToBf16, floatToHalf, halfToFloat, i64, toFloat32 } from "../tensor.js";
import { fixturePath } from "../util/paths.js";
import { attention, attentionAllowed } from "./attention.js";
import { castTensor } from "./context.js";
import { buildModelGraph } from "./forward.js";
import { loadModel } from "./load.js";

async function runGraph(g: Graph, feeds: Record<string, Tensor>): Promise<Record<string, Float32Array>> {
  const s = await CompiledGraph.create(g, {});
  try {
    const out = await s.run(feeds);
    return Object.fromEntries(Object.entries(out).map(([k, t]) => [k, toFloat32(t)]));
  } finally {
    await s.release();
  }
}

/** A copy of a fixture model directory whose weights are stored as `dtype`. */
function convertedModelDir(arch: string, dtype: "float16" | "bfloat16"): string {
  const src = fixturePath("peft-parity", arch, "base");
  const dir = mkdtempSync(join(tmpdir(), `peft-${dtype}-`));
  copyFileSync(join(src, "config.json"), join(dir, "config.json"));
  const { tensors } = loadSafetensors(join(src, "model.safetensors"));
  const out = new Map<string, Tensor>();
  for (const [k, t] of tensors) {
    const v = toFloat32(t);
    out.set(k, dtype === "float16" ? { dtype, shape: t.shape, data: Uint16Array.from(v, floatToHalf) } : { dtype, shape: t.shape, data: Uint16Array.from(v, floatToBf16) });
  }
  saveSafetensors(join(dir, "model.safetensors"), out);
  return dir;
}

describe("float16 model graphs", () => {
  test("castTensor: float16 kept as stored, bfloat16 and float32 rounded once", () => {
    const h: Tensor = { dtype: "float16", shape: [3], data: Uint16Array.from([0.1, -3, 65504], floatToHalf) };
    assert.equal(castTensor(h, "float16"), h);
    // bfloat16 values are exact in float32, so bf16 → f16 is one rounding of the bf16 value
    const b: Tensor = { dtype: "bfloat16", shape: [4], data: Uint16Array.from([0.1, 1 / 3, 70000, 1e-6], floatToBf16) };
    const hb = castTensor(b, "float16");
    assert.equal(hb.dtype, "float16");
    assert.deepEqual([...(hb.data as Uint16Array)], [...(b.data as Uint16Array)].map((x) => floatToHalf(bf16ToFloat(x))));
    assert.equal(halfToFloat((hb.data as Uint16Array)[2]!), Infinity, "70000 is beyond float16's range");
    const f: Tensor = { dtype: "float32", shape: [2], data: Float32Array.of(0.1, 2049) };
    assert.deepEqual([...(castTensor(f, "float16").data as Uint16Array)].map(halfToFloat), [halfToFloat(floatToHalf(0.1)), 2048]);
  });

  for (const dtype of ["float16", "bfloat16"] as const) {
    test(`${dtype} safetensors weights go into a float16 graph converted at most once`, () => {
      const dir = convertedModelDir("llama", dtype);
      try {
        const model = loadModel(dir);
        const { graph } = buildModelGraph(model, { dtype: "float16" });
        let checked = 0;
        for (const v of graph.initializers) {
          if (!model.weights.has(v.name!)) continue;
          const stored = model.weights.get(v.name!);
          assert.equal(v.dtype, "float16", v.name!);
          const want = dtype === "float16" ? [...(stored.data as Uint16Array)] : [...(stored.data as Uint16Array)].map((x) => floatToHalf(bf16ToFloat(x)));
          assert.deepEqual([...(v.data!.data as Uint16Array)], want, `${v.name} holds the stored values`);
          checked++;
        }
        assert.ok(checked >= 10, `${checked} weights checked`);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });
  }

  test("trainable parameters are float32 inputs (master weights) cast to float16 in the graph", () => {
    const model = loadModel(fixturePath("peft-parity", "llama", "base"));
    const name = "model.norm.weight";
    const { graph, ctx } = buildModelGraph(model, { dtype: "float16", inputParams: (n) => n === name });
    const inp = graph.inputs.find((v) => v.name === name)!;
    assert.equal(inp.dtype, "float32");
    assert.equal(ctx.inputParams.get(name)!.dtype, "float32");
    assert.deepEqual(ctx.inputParams.get(name)!.data, model.weights.get(name).data);
    assert.ok(graph.nodes.some((n) => n.op === "Cast" && n.inputs[0] === inp && n.outputs[0]!.dtype === "float16"));
  });

  test("an unsupported compute dtype is a typed error", () => {
    const model = loadModel(fixturePath("peft-parity", "llama", "base"));
    assert.throws(() => buildModelGraph(model, { dtype: "bfloat16" }), (e: Error & { code?: string }) => e.code === "PEFT_ERR_UNSUPPORTED_OPTION" && /dtype/.test(e.message));
  });

  test("attention: a fully masked query row with very negative scores stays finite (the mask bias is float32)", async () => {
    // q·kᵀ = −200 everywhere: in float16, −65504 − 200 overflows to −∞, and a row of −∞ is NaN after softmax
    const build = (dtype: "float32" | "float16") => {
      const g = new Graph(`attn_${dtype}`);
      const q = g.input("q", dtype, [1, 1, 3, 2]);
      const k = g.input("k", dtype, [1, 1, 3, 2]);
      const v = g.input("v", dtype, [1, 1, 3, 2]);
      const mask = g.input("mask", "int64", [1, 3]);
      g.output(G.cast(attention(q, k, v, attentionAllowed(mask, true), 1), "float32"), "out");
      return g;
    };
    const qv = [10, 10, 10, 10, 10, 10];
    const kv = [-10, -10, -10, -10, -10, -10];
    const vv = [1, 2, 3, 4, 5, 6];
    const feeds = (dtype: "float32" | "float16"): Record<string, Tensor> => {
      const t = (d: number[]) => castTensor({ dtype: "float32", shape: [1, 1, 3, 2], data: Float32Array.from(d) }, dtype);
      // key 0 is padding: query 0 (causal) sees no key at all
      return { q: t(qv), k: t(kv), v: t(vv), mask: i64([1, 3], [0, 1, 1]) };
    };
    const ref = (await runGraph(build("float32"), feeds("float32"))).out!;
    const emulated = (await runGraph(emulateHalf(build("float16")), feeds("float32"))).out!;
    const cpu = (await runGraph(build("float16"), feeds("float16"))).out!;
    for (const got of [emulated, cpu]) {
      assert.ok(got.every(Number.isFinite), `${[...got]}`);
      got.forEach((x, i) => assert.ok(Math.abs(x - ref[i]!) <= 1e-3 * Math.max(1, Math.abs(ref[i]!)), `${i}: ${x} vs ${ref[i]}`));
    }
  });
});
