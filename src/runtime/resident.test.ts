import assert from "node:assert/strict";
import { describe, test } from "node:test";
import * as G from "../graph/api.js";
import { Graph } from "../graph/graph.js";
import { toOnnx } from "../graph/onnx.js";
import type { Tensor } from "../tensor.js";
import { CompiledGraph, type ExecutionProvider, type ResidentResults, ResidentValue, availableProviders, ortDataLocation, signatureOf } from "./session.js";

/** state' = state·a + x, out = Σ state' : a recurrence whose state can stay in onnxruntime. */
function recurrence(): Graph {
  const g = new Graph("recurrence");
  const state = g.input("state", "float32", [4]);
  const x = g.input("x", "float32", [4]);
  const next = G.add(G.mul(state, 0.5), x);
  g.output(next, "next_state");
  g.output(G.sumAll(next), "total");
  return g;
}

const f32 = (...v: number[]): Tensor<"float32"> => ({ dtype: "float32", shape: [v.length], data: Float32Array.from(v) });
const codeIs = (code: string) => (e: Error & { code?: string }) => e.code === code;

describe("output locations", () => {
  test("'device' is onnxruntime's gpu-buffer on webgpu and host memory on cpu", () => {
    assert.equal(ortDataLocation("webgpu", "device"), "gpu-buffer");
    assert.equal(ortDataLocation("webgpu", "cpu"), "cpu");
    assert.equal(ortDataLocation("cpu", "device"), "cpu");
  });

  test("the session signature includes the output locations, not their key order", () => {
    const bytes = toOnnx(recurrence());
    const plain = signatureOf(bytes, {});
    const a = signatureOf(bytes, { outputLocation: { next_state: "device", total: "cpu" } });
    const b = signatureOf(bytes, { outputLocation: { total: "cpu", next_state: "device" } });
    const c = signatureOf(bytes, { outputLocation: { next_state: "cpu", total: "cpu" } });
    assert.equal(a, b);
    assert.notEqual(a, plain);
    assert.notEqual(a, c);
    assert.equal(signatureOf(bytes, { threads: 1 }), signatureOf(bytes, { threads: 1, outputLocation: undefined }));
  });

  test("an unknown output name in outputLocation is a typed error (graph or ONNX bytes)", async () => {
    await assert.rejects(CompiledGraph.create(recurrence(), { outputLocation: { nope: "device" } }), (e: Error & { code?: string; known?: string[] }) => {
      return e.code === "PEFT_ERR_UNKNOWN_OUTPUT" && /nope/.test(e.message) && e.known!.includes("next_state");
    });
    await assert.rejects(CompiledGraph.create(toOnnx(recurrence()), { outputLocation: { nope: "device" } }), (e: Error & { code?: string; output?: string }) => {
      return e.code === "PEFT_ERR_UNKNOWN_OUTPUT" && e.output === "nope";
    });
  });
});

for (const ep of ["cpu", "webgpu"] as ExecutionProvider[]) {
  describe(`runResident on ${ep}`, () => {
    const create = async (): Promise<CompiledGraph | null> => {
      if (!availableProviders().includes(ep)) return null;
      try {
        return await CompiledGraph.create(recurrence(), { ep, outputLocation: { next_state: "device" } });
      } catch (e) {
        // the webgpu provider is listed but the machine has no adapter (no GPU)
        if (ep !== "cpu" && (e as { code?: string }).code === "PEFT_ERR_EXECUTION_PROVIDER") return null;
        throw e;
      }
    };

    test("a kept output fed back for 4 runs gives the host recurrence; fed values stay valid until disposed", async (t) => {
      const s = await create();
      if (!s) return t.skip(`no ${ep} device here`);
      let state: Tensor | ResidentValue = f32(1, 2, 3, 4);
      const host = Float64Array.from([1, 2, 3, 4]);
      const fed: ResidentValue[] = [];
      for (let k = 0; k < 4; k++) {
        const x = f32(k, -k, 0.25 * k, 1);
        const r: ResidentResults = await s.runResident({ state, x }, { keep: ["next_state"] });
        for (let i = 0; i < 4; i++) host[i] = host[i]! * 0.5 + x.data[i]!;
        const next: ResidentValue = r.kept.get("next_state")!;
        assert.ok(next instanceof ResidentValue);
        assert.equal(next.location, ep === "webgpu" ? "device" : "cpu");
        assert.deepEqual(next.shape, [4]);
        assert.equal(next.dtype, "float32");
        assert.equal(r.host.next_state, undefined, "a kept output is not also converted");
        assert.equal(Number(r.host.total!.data[0]), host.reduce((a, b) => a + b));
        if (state instanceof ResidentValue) {
          assert.equal(state.disposed, false, "the run does not dispose its inputs");
          fed.push(state);
        }
        state = next;
      }
      assert.deepEqual([...((await (state as ResidentValue).download()).data as Float32Array)], [...host]);
      // the previous values are still readable until disposed
      const earlier = await fed[0]!.download();
      assert.equal(earlier.data.length, 4);
      for (const v of [...fed, state as ResidentValue]) v.dispose();
      await s.release();
    });

    test("download() copies; a disposed value cannot be fed or downloaded; dispose is idempotent", async (t) => {
      const s = await create();
      if (!s) return t.skip(`no ${ep} device here`);
      const r = await s.runResident({ state: f32(2, 2, 2, 2), x: f32(1, 1, 1, 1) }, { keep: ["next_state"] });
      const v = r.kept.get("next_state")!;
      const a = await v.download();
      (a.data as Float32Array).fill(-7);
      assert.deepEqual([...((await v.download()).data as Float32Array)], [2, 2, 2, 2]);
      v.dispose();
      v.dispose();
      assert.equal(v.disposed, true);
      await assert.rejects(v.download(), codeIs("PEFT_ERR_DISPOSED_VALUE"));
      await assert.rejects(s.runResident({ state: v, x: f32(0, 0, 0, 0) }), (e: Error & { code?: string; value?: string }) => {
        return e.code === "PEFT_ERR_DISPOSED_VALUE" && e.value === "next_state" && /input 'state'/.test(e.message);
      });
      await s.release();
    });

    test("run() gives host tensors for device-located outputs; unknown output names are typed errors", async (t) => {
      const s = await create();
      if (!s) return t.skip(`no ${ep} device here`);
      const r = await s.run({ state: f32(1, 1, 1, 1), x: f32(1, 2, 3, 4) });
      assert.deepEqual([...(r.next_state!.data as Float32Array)], [1.5, 2.5, 3.5, 4.5]);
      const only = await s.run({ state: f32(1, 1, 1, 1), x: f32(1, 2, 3, 4) }, ["total"]);
      assert.deepEqual(Object.keys(only), ["total"]);
      const feeds = { state: f32(0, 0, 0, 0), x: f32(0, 0, 0, 0) };
      await assert.rejects(s.run(feeds, ["nope"]), codeIs("PEFT_ERR_UNKNOWN_OUTPUT"));
      await assert.rejects(s.runResident(feeds, { keep: ["nope"] }), codeIs("PEFT_ERR_UNKNOWN_OUTPUT"));
      await assert.rejects(s.runResident(feeds, { keep: ["next_state"], outputs: ["total"] }), codeIs("PEFT_ERR_UNKNOWN_OUTPUT"));
      await assert.rejects(s.runResident({ x: f32(0, 0, 0, 0) }), codeIs("PEFT_ERR_ORT_SESSION"));
      await s.release();
    });
  });
}
