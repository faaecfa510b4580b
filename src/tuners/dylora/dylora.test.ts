import assert from "node:assert/strict";
import { describe, test } from "node:test";
import * as G from "../../graph/api.js";
import { grad } from "../../graph/autodiff.js";
import { dense } from "../../graph/composite.js";
import { Graph } from "../../graph/graph.js";
import { ModelContext, mapSource } from "../../models/context.js";
import { loraExportFiles, loraExportOf } from "../../peft/export-lora.js";
import { PeftModel } from "../../peft/peft-model.js";
import { CompiledGraph } from "../../runtime/session.js";
import { type Tensor, toFloat32 } from "../../tensor.js";
import { gradCheckLinear, maxDiff, methodSuite, runLinear } from "../../train/method-suite.test-util.js";
import { IDS, exportParity, trainedTiny } from "../../cli/commands/export-lora.test-util.js";
import { tunerFor } from "../registry.js";
import type { AdapterInstance } from "../common/types.js";

const t = (shape: number[], data: number[]): Tensor => ({ dtype: "float32", shape, data: Float32Array.from(data) });
const t64 = (shape: readonly number[], data: ArrayLike<number>): Tensor => ({ dtype: "float64", shape, data: Float64Array.from(data) });

describe("DyLoRA", () => {
  // r 3 (r_min 2), in 2, out 2, alpha 6
  const A = [
    [1, -1],
    [0.5, 2],
    [-0.25, 0.75],
  ];
  const B = [
    [1, 0.5, -2],
    [-2, 1, 0.5],
  ];
  const W = [
    [0.1, -0.2],
    [0.3, 0.4],
  ];
  const x = [
    [1, 2],
    [-1, 0.5],
  ];
  const alpha = 6;
  const raw = { peft_type: "DYLORA", r: 3, r_min: 2, lora_alpha: alpha, target_modules: ["m"] };
  const tensors = new Map<string, Tensor>([
    ["m.dylora_A", t([3, 2], A.flat())],
    ["m.dylora_B", t([2, 3], B.flat())],
  ]);
  /** base + (α/b)·B[:, :b]·A[:b]·x, by hand. */
  const want = (b: number): number[] =>
    x.flatMap((row) =>
      [0, 1].map((o) => {
        let d = 0;
        for (let k = 0; k < b; k++) d += B[o]![k]! * (A[k]![0]! * row[0]! + A[k]![1]! * row[1]!);
        return W[o]![0]! * row[0]! + W[o]![1]! * row[1]! + (alpha / b) * d;
      }),
    );

  test("inference uses the full rank r: base + (α/r)·B·A·x, computed by hand", async () => {
    const got = await runLinear({ raw, module: "m", tensors, weight: t([2, 2], W.flat()), x: t([2, 2], x.flat()) });
    assert.ok(maxDiff(got, want(3)) < 1e-6, `${[...got]} vs ${want(3)}`);
  });

  test("nested dropout: each training run samples one rank b in [r_min, r], runs the truncated adapter with α/b and trains only A[:b], B[:, :b]", async () => {
    const tuner = tunerFor("DYLORA");
    const adapter: AdapterInstance = { name: "t", tuner, config: tuner.parseConfig(raw, "test"), tensors };
    const g = new Graph("dylora-train");
    const xv = g.input("x", "float64", [2, 2]);
    const av = g.input("A", "float64", [3, 2]);
    const bv = g.input("B", "float64", [2, 3]);
    const w = g.constant(t64([2, 2], W.flat()));
    const site = { g, name: "m", x: xv, weight: w, bias: null, fanInFanOut: false, inFeatures: 2, outFeatures: 2, base: (v: typeof xv) => dense(v, w, null, { transB: true }), ctx: new ModelContext(g, mapSource(new Map())) };
    const y = tuner.hooks(adapter, (k) => (k.endsWith("_A") ? av : bv), { training: true, seed: 3 }).linear!("m")!(site);
    const loss = G.reduceSum(G.mul(y, g.constant(t64([2, 2], [1, -2, 0.5, 3]))), [0, 1], false);
    const [ga, gb] = grad(loss, [av, bv]);
    g.output(y, "y");
    g.output(ga!, "gA");
    g.output(gb!, "gB");
    const cg = await CompiledGraph.create(g, { threads: 1 });
    const seen = new Set<number>();
    try {
      for (let run = 0; run < 24; run++) {
        const out = await cg.run({ x: t64([2, 2], x.flat()), A: t64([3, 2], A.flat()), B: t64([2, 3], B.flat()) });
        const gA = out.gA!.data as Float64Array;
        const gB = out.gB!.data as Float64Array;
        const rowLive = [0, 1, 2].map((k) => gA[2 * k] !== 0 || gA[2 * k + 1] !== 0);
        const b = rowLive.filter(Boolean).length;
        assert.ok(b >= 2 && b <= 3, `sampled rank ${b} in [r_min, r]`);
        assert.deepEqual(rowLive, [0, 1, 2].map((k) => k < b), "only the first b rows of A get gradients");
        for (let o = 0; o < 2; o++) for (let k = 0; k < 3; k++) assert.equal(gB[o * 3 + k] !== 0, k < b, `B[${o}, ${k}] trained iff k < b`);
        assert.ok(maxDiff(out.y!.data as Float64Array, want(b)) < 1e-12, `run ${run}: truncated forward at b = ${b}`);
        seen.add(b);
      }
    } finally {
      await cg.release();
    }
    assert.deepEqual([...seen].sort(), [2, 3], "both ranks of [r_min, r] are sampled over 24 runs");
  });

  test("frozen (the official set_rank(b, frozen=True)): the same truncated forward, but only row b of A and column b of B get gradients, equal to the hand-computed ones", async () => {
    const tuner = tunerFor("DYLORA");
    const cfg = tuner.parseConfig({ ...raw, frozen: true }, "test");
    assert.equal((cfg as unknown as { frozen: boolean }).frozen, true);
    const adapter: AdapterInstance = { name: "t", tuner, config: cfg, tensors };
    const g = new Graph("dylora-frozen");
    const xv = g.input("x", "float64", [2, 2]);
    const av = g.input("A", "float64", [3, 2]);
    const bv = g.input("B", "float64", [2, 3]);
    const w = g.constant(t64([2, 2], W.flat()));
    const site = { g, name: "m", x: xv, weight: w, bias: null, fanInFanOut: false, inFeatures: 2, outFeatures: 2, base: (v: typeof xv) => dense(v, w, null, { transB: true }), ctx: new ModelContext(g, mapSource(new Map())) };
    const y = tuner.hooks(adapter, (k) => (k.endsWith("_A") ? av : bv), { training: true, seed: 3 }).linear!("m")!(site);
    const c = [1, -2, 0.5, 3]; // loss = Σ c ⊙ y
    const loss = G.reduceSum(G.mul(y, g.constant(t64([2, 2], c))), [0, 1], false);
    const [ga, gb] = grad(loss, [av, bv]);
    g.output(y, "y");
    g.output(ga!, "gA");
    g.output(gb!, "gB");
    const cg = await CompiledGraph.create(g, { threads: 1 });
    const seen = new Set<number>();
    try {
      for (let run = 0; run < 24; run++) {
        const out = await cg.run({ x: t64([2, 2], x.flat()), A: t64([3, 2], A.flat()), B: t64([2, 3], B.flat()) });
        const yv = out.y!.data as Float64Array;
        const b = [2, 3].find((r) => maxDiff(yv, want(r)) < 1e-12);
        assert.ok(b !== undefined, `run ${run}: the output is the truncated forward at a rank of [r_min, r]`);
        seen.add(b);
        // dL/dA[k, i] = (α/b)·Σ_n Σ_o c[n, o]·B[o, k]·x[n, i]; dL/dB[o, k] = (α/b)·Σ_n c[n, o]·(A_k·x_n) — for k = b − 1 only
        const gA = out.gA!.data as Float64Array;
        const gB = out.gB!.data as Float64Array;
        for (let k = 0; k < 3; k++) {
          for (let i = 0; i < 2; i++) {
            let want = 0;
            if (k === b - 1) for (let n = 0; n < 2; n++) for (let o = 0; o < 2; o++) want += (alpha / b) * c[n * 2 + o]! * B[o]![k]! * x[n]![i]!;
            assert.ok(Math.abs(gA[k * 2 + i]! - want) < 1e-12, `run ${run} (b = ${b}): dA[${k}, ${i}] = ${gA[k * 2 + i]} vs ${want}`);
          }
          for (let o = 0; o < 2; o++) {
            let want = 0;
            if (k === b - 1) for (let n = 0; n < 2; n++) want += (alpha / b) * c[n * 2 + o]! * (A[k]![0]! * x[n]![0]! + A[k]![1]! * x[n]![1]!);
            assert.ok(Math.abs(gB[o * 3 + k]! - want) < 1e-12, `run ${run} (b = ${b}): dB[${o}, ${k}] = ${gB[o * 3 + k]} vs ${want}`);
          }
        }
        assert.ok(gA.some((v) => v !== 0) && gB.some((v) => v !== 0), "the sampled rank is trained");
      }
    } finally {
      await cg.release();
    }
    assert.deepEqual([...seen].sort(), [2, 3], "both ranks of [r_min, r] are sampled over 24 runs");
    // saved and parsed back
    assert.equal(tuner.toRaw(cfg).frozen, true);
    assert.equal("frozen" in tuner.toRaw(tuner.parseConfig(raw, "test")), false);
  });

  test("finite-difference gradients of its graph", async () => {
    await gradCheckLinear({ raw, module: "m", tensors, weight: t([2, 2], W.flat()), x: t([2, 2], x.flat()) });
  });

  test("after training the loss is finite at every rank, each rank's export is the exact truncation, and exports match peft forward", async () => {
    const cfg = { peft_type: "DYLORA", r: 4, r_min: 1, lora_alpha: 8, target_modules: ["q_proj", "v_proj"] };
    const { pm, losses } = await trainedTiny(cfg, 8);
    assert.ok(losses.every(Number.isFinite));
    const a = pm.adapter("default");
    const qA = toFloat32(a.tensors.get("model.layers.0.self_attn.q_proj.dylora_A")!);
    const qB = toFloat32(a.tensors.get("model.layers.0.self_attn.q_proj.dylora_B")!);
    const [outF] = a.tensors.get("model.layers.0.self_attn.q_proj.dylora_B")!.shape as [number, number];
    const inF = a.tensors.get("model.layers.0.self_attn.q_proj.dylora_A")!.shape[1]!;
    for (let b = 1; b <= 4; b++) {
      const e = loraExportOf(pm, "default", { rank: b });
      assert.equal(e.config.peftType, "LORA");
      const eA = e.tensors.get("model.layers.0.self_attn.q_proj.lora_A.weight")!;
      const eB = e.tensors.get("model.layers.0.self_attn.q_proj.lora_B.weight")!;
      assert.deepEqual([...eA.shape, ...eB.shape], [b, inF, outF, b]);
      assert.deepEqual(toFloat32(eA), qA.slice(0, b * inF), "A[:b] exactly");
      assert.deepEqual(toFloat32(eB), Float32Array.from({ length: outF * b }, (_, i) => qB[Math.floor(i / b) * 4 + (i % b)]!), "B[:, :b] exactly");
      pm.loadAdapterFromFiles(loraExportFiles(pm, "default", { rank: b }), `r${b}`);
      const logits = toFloat32(await pm.forward({ inputIds: IDS, adapterNames: [`r${b}`, `r${b}`] }));
      assert.ok(logits.every(Number.isFinite), `finite logits at rank ${b}`);
    }
    // the full-rank export is the adapter itself; rank 2 is the adapter cut to its first two ranks
    const full = toFloat32(await pm.forward({ inputIds: IDS }));
    assert.ok(maxDiff(toFloat32(await pm.forward({ inputIds: IDS, adapterNames: ["r4", "r4"] })), full) < 1e-5);
    assert.ok(maxDiff(toFloat32(await pm.forward({ inputIds: IDS, adapterNames: ["r2", "r2"] })), full) > 1e-6, "a lower rank is a different adapter");
    await exportParity(pm);
    pm.setAdapter("default");
    const cut = PeftModel.create(pm.base, { ...cfg, r: 2 }, "default", { seed: 0 });
    cut.updateAdapterTensors("default", new Map([...loraExportOf(pm, "default", { rank: 2 }).tensors].map(([k, v]) => [k.replace(".lora_A.weight", ".dylora_A").replace(".lora_B.weight", ".dylora_B"), v])));
    await exportParity(cut, { rank: 2 });
    await cut.dispose();
    await pm.dispose();
  });

  methodSuite({
    method: "dylora",
    arch: "llama",
    randomConfig: { peft_type: "DYLORA", r: 4, lora_alpha: 8, target_modules: ["q_proj", "v_proj"] },
    trainConfig: { peft_type: "DYLORA", r: 4, r_min: 2, lora_alpha: 8, target_modules: ["q_proj", "v_proj", "down_proj"] },
    badConfigs: [
      [{ peft_type: "DYLORA", r: 2, r_min: 3, target_modules: ["q_proj"] }, "r_min"],
      [{ peft_type: "DYLORA", r: 0, target_modules: ["q_proj"] }, "'r'"],
      [{ peft_type: "DYLORA", use_dora: true, target_modules: ["q_proj"] }, "use_dora"],
      [{ peft_type: "DYLORA", frozen: "yes", target_modules: ["q_proj"] }, "frozen"],
      [{ peft_type: "DYLORA", target_modules: ["nothing_here"] }, "target_modules"],
    ],
    perturb: true,
    lr: 0.02,
  });
});
