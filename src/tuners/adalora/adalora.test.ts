import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import { Graph } from "../../graph/graph.js";
import { PeftModel } from "../../peft/peft-model.js";
import { CompiledGraph } from "../../runtime/session.js";
import type { Tensor } from "../../tensor.js";
import { fixtureModel, gradCheckLinear, maxDiff, methodSuite, runLinear } from "../../train/method-suite.test-util.js";
import { patternCorpus } from "../../train/tiny-llama.test-util.js";
import { loadCheckpoint } from "../../train/checkpoint.js";
import { Trainer } from "../../train/trainer.js";
import { RankAllocator } from "./allocator.js";
import { type AdaLoraConfig, adalora, parseAdaLoraConfig } from "./index.js";

const t = (shape: number[], data: number[]): Tensor => ({ dtype: "float32", shape, data: Float32Array.from(data) });

describe("AdaLoRA", () => {
  // out 2, in 3, r 2
  const A = [
    [1, -1, 0.5],
    [0.25, 2, -1],
  ];
  const E = [1.5, -0.5];
  const B = [
    [0.5, 1],
    [-2, 0.75],
  ];
  const W = [
    [0.1, -0.2, 0.3],
    [0.4, 0.5, -0.6],
  ];
  const x = [
    [1, 2, -1],
    [0.5, -0.5, 3],
  ];
  const raw = { peft_type: "ADALORA", init_r: 2, target_r: 1, lora_alpha: 8, total_step: 10, target_modules: ["m"] };
  const tensors = new Map([
    ["m.lora_A", t([2, 3], A.flat())],
    ["m.lora_E", t([2, 1], E)],
    ["m.lora_B", t([2, 2], B.flat())],
  ]);

  test("forward = x·Wᵀ + Σ_k B[:, k]·E_k·(A_k·x) · lora_alpha/(init_r + 1e-5), by hand", async () => {
    const scale = 8 / Math.fround(2 + 1e-5);
    const want = x.flatMap((row) =>
      [0, 1].map((o) => {
        let y = W[o]!.reduce((s, w, i) => s + w * row[i]!, 0);
        for (let k = 0; k < 2; k++) y += scale * B[o]![k]! * E[k]! * A[k]!.reduce((s, a, i) => s + a * row[i]!, 0);
        return y;
      }),
    );
    const got = await runLinear({ raw, module: "m", tensors, weight: t([2, 3], W.flat()), x: t([2, 3], x.flat()) });
    assert.ok(maxDiff(got, want) < 1e-6, `${[...got]} vs ${want}`);
  });

  test("finite-difference gradients of its graph", async () => {
    await gradCheckLinear({ raw, module: "m", tensors, weight: t([2, 3], W.flat()), x: t([2, 3], x.flat()) });
  });

  test("orthogonality regulariser = orth_reg_weight · mean(‖A·Aᵀ − I‖_F, ‖Bᵀ·B − I‖_F), by hand", async () => {
    const c = parseAdaLoraConfig({ ...raw, orth_reg_weight: 0.5 }, "t");
    const a = { name: "t", tuner: adalora, config: c, tensors: new Map([
      ["m.lora_A", t([2, 3], [1, 0, 0, 0, 2, 0])], // A·Aᵀ − I = diag(0, 3): norm 3
      ["m.lora_E", t([2, 1], [1, 1])],
      ["m.lora_B", t([2, 2], [1, 1, 0, 1])], // Bᵀ·B − I = [[0, 1], [1, 1]]: norm √3
    ]) };
    const g = new Graph("reg");
    g.output(adalora.training!.regularizer!(a, (k) => g.constant(a.tensors.get(k)!))!, "r");
    const cg = await CompiledGraph.create(g, { threads: 1 });
    const out = await cg.run({});
    await cg.release();
    assert.ok(Math.abs(Number(out.r!.data[0]) - (0.5 * (3 + Math.sqrt(3))) / 2) < 1e-6, String(out.r!.data[0]));
  });

  test("rank allocator: PEFT's cubic budget schedule, and the least important triplets zeroed into rank_pattern", () => {
    const c = (extra: Record<string, unknown>): AdaLoraConfig => parseAdaLoraConfig({ peft_type: "ADALORA", target_modules: ["m"], ...extra }, "t");
    const s = new RankAllocator(c({ init_r: 4, target_r: 1, tinit: 2, tfinal: 2, total_step: 10, deltaT: 2 }), ["m1", "m2"], new Map([["m1", 4], ["m2", 4]]));
    assert.deepEqual(s.budgetAt(1), { budget: 8, mask: false }, "warm-up keeps Σ init_r");
    assert.deepEqual(s.budgetAt(3), { budget: Math.trunc(6 * (5 / 6) ** 3 + 2), mask: false }, "(8 − 2)·(1 − 1/6)³ + 2 = 5.47 → 5; 3 % deltaT ≠ 0");
    assert.equal(s.budgetAt(3).budget, 5);
    assert.deepEqual(s.budgetAt(4), { budget: Math.trunc(6 * (4 / 6) ** 3 + 2), mask: true });
    assert.deepEqual(s.budgetAt(9), { budget: 2, mask: true }, "final phase: target_r × layers");

    // two layers of rank 2, budget falls to 2 at step 1; only E has gradients, so |E·∇E| ranks the triplets
    const al = new RankAllocator(c({ init_r: 2, target_r: 1, tinit: 0, tfinal: 1, total_step: 4, deltaT: 1 }), ["m1", "m2"], new Map([["m1", 2], ["m2", 2]]));
    const vals = new Map<string, Float32Array>([
      ["m1.lora_A", new Float32Array(6).fill(1)],
      ["m1.lora_B", new Float32Array(4).fill(1)],
      ["m1.lora_E", Float32Array.from([1, 1])],
      ["m2.lora_A", new Float32Array(6).fill(1)],
      ["m2.lora_B", new Float32Array(4).fill(1)],
      ["m2.lora_E", Float32Array.from([1, 1])],
    ]);
    const grads = new Map<string, Float32Array>([
      ["m1.lora_A", new Float32Array(6)],
      ["m1.lora_B", new Float32Array(4)],
      ["m1.lora_E", Float32Array.from([0.1, 3])],
      ["m2.lora_A", new Float32Array(6)],
      ["m2.lora_B", new Float32Array(4)],
      ["m2.lora_E", Float32Array.from([2, 0.2])],
    ]);
    al.afterStep(0, vals, grads); // step 0 ≤ tinit: importance only
    assert.deepEqual([...vals.get("m1.lora_E")!, ...vals.get("m2.lora_E")!], [1, 1, 1, 1]);
    al.afterStep(1, vals, grads); // budget ⌊2·(2/3)³ + 2⌋ = 2: the two smallest scores (0.1, 0.2) go
    assert.deepEqual([...vals.get("m1.lora_E")!, ...vals.get("m2.lora_E")!], [0, 1, 1, 0]);
    assert.deepEqual(al.rankPattern, { "m1.lora_E": [false, true], "m2.lora_E": [true, false] });
    vals.get("m1.lora_E")![0] = 0.7; // the optimizer moved a pruned value
    al.afterStep(3, vals, grads); // t = T − tfinal: final mask at the target budget
    al.afterStep(4, vals, grads); // afterwards the mask is applied again
    assert.equal(vals.get("m1.lora_E")![0], 0);
  });

  test("training through the Trainer writes rank_pattern and keeps the kept triplets; the saved adapter reloads to the same logits", async () => {
    const model = fixtureModel("llama");
    const pm = PeftModel.create(model, { peft_type: "ADALORA", init_r: 4, target_r: 2, total_step: 8, tinit: 1, tfinal: 2, deltaT: 1, target_modules: ["q_proj", "v_proj"] }, "default", { seed: 1 });
    await new Trainer(pm, { task: "causal-lm", epochs: 100, maxSteps: 8, batchSize: 8, lr: 0.02, seed: 0, schedule: "constant", dropout: false }, patternCorpus(8, 2, () => 6)).fit();
    const a = pm.adapter("default");
    const rp = (a.config as AdaLoraConfig).rankPattern!;
    assert.ok(rp, "rank_pattern written");
    const kept = Object.values(rp).reduce((s, v) => s + v.filter(Boolean).length, 0);
    assert.ok(kept <= 2 * 4, `kept ${kept} triplets, at most target_r × layers`);
    for (const [k, v] of Object.entries(rp)) {
      const m = k.slice(0, -".lora_E".length);
      assert.equal(a.tensors.get(`${m}.lora_A`)!.shape[0], v.filter(Boolean).length, `${m}: lora_A keeps the kept rows`);
      assert.equal(a.tensors.get(`${m}.lora_B`)!.shape[1], v.filter(Boolean).length);
    }
    const ids: Tensor<"int64"> = { dtype: "int64", shape: [1, 5], data: BigInt64Array.from([3, 9, 4, 20, 7], BigInt) };
    const y = await pm.forward({ inputIds: ids });
    const dir = mkdtempSync(join(tmpdir(), "peft-adalora-"));
    try {
      pm.savePretrained(dir);
      const cfg = JSON.parse(readFileSync(join(dir, "adapter_config.json"), "utf8")) as Record<string, unknown>;
      assert.equal(cfg.peft_type, "ADALORA");
      assert.deepEqual(cfg.rank_pattern, rp);
      const back = PeftModel.fromPretrained(model, dir);
      assert.ok(maxDiff((await back.forward({ inputIds: ids })).data as Float32Array, y.data as Float32Array) < 1e-5);
      await back.dispose();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    await pm.dispose();
  });

  test("a run interrupted mid-allocation resumes from its checkpoint with the allocator's EMAs and mask: the same rank_pattern and tensors as the straight run", async () => {
    const model = fixtureModel("llama");
    const raw = { peft_type: "ADALORA", init_r: 4, target_r: 2, total_step: 8, tinit: 1, tfinal: 2, deltaT: 1, target_modules: ["q_proj", "v_proj"] };
    const cfg = { task: "causal-lm", epochs: 100, maxSteps: 8, batchSize: 8, lr: 0.02, seed: 0, schedule: "constant", dropout: false } as const;
    const data = patternCorpus(8, 2, () => 6);
    const straight = PeftModel.create(model, raw, "default", { seed: 1 });
    await new Trainer(straight, cfg, data).fit();
    const dir = mkdtempSync(join(tmpdir(), "peft-adalora-resume-"));
    try {
      const first = PeftModel.create(model, raw, "default", { seed: 1 });
      await new Trainer(first, { ...cfg, stopAfterSteps: 4, checkpointDir: dir, checkpointEvery: 4 }, data).fit();
      // the checkpoint holds the allocator's EMAs (float64) and mask; restoring them reproduces them
      const ck = loadCheckpoint(dir);
      const ema = [...ck.tensors].filter(([k]) => k.startsWith("allocator/default/"));
      assert.equal(ema.length, 2 * 3 * 4, "ipt and unc of lora_A/E/B of 4 modules");
      assert.ok(ema.every(([, t]) => t.dtype === "float64") && ema.some(([, t]) => (t.data as Float64Array).some((v) => v > 0)));
      assert.ok("default" in (ck.extras.allocators as Record<string, unknown>));
      const again = adalora.training!.allocator!(PeftModel.create(model, raw).adapter("default") as never)!;
      again.restore!({ tensors: new Map(ema.map(([k, t]) => [k.slice("allocator/default/".length), t])), json: (ck.extras.allocators as Record<string, unknown>).default });
      assert.deepEqual(new Map([...again.state!().tensors].map(([k, t]) => [`allocator/default/${k}`, t])), new Map(ema));
      const resumed = PeftModel.create(model, raw, "default", { seed: 1 });
      await new Trainer(resumed, { ...cfg, checkpointDir: dir }, data).fit();
      const a = straight.adapter("default");
      const b = resumed.adapter("default");
      assert.deepEqual((b.config as AdaLoraConfig).rankPattern, (a.config as AdaLoraConfig).rankPattern);
      for (const [k, v] of a.tensors) assert.ok(maxDiff(b.tensors.get(k)!.data as Float32Array, v.data as Float32Array) <= 1e-6, k);
      await first.dispose();
      await resumed.dispose();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    await straight.dispose();
  });

  methodSuite({
    method: "adalora",
    arch: "llama",
    randomConfig: { peft_type: "ADALORA", init_r: 4, target_r: 2, total_step: 10, target_modules: ["q_proj", "v_proj"], init_lora_weights: false },
    trainConfig: { peft_type: "ADALORA", init_r: 4, target_r: 2, total_step: 12, tinit: 4, tfinal: 4, orth_reg_weight: 0.1, target_modules: ["q_proj", "v_proj", "down_proj"] },
    badConfigs: [
      [{ peft_type: "ADALORA", target_modules: ["q_proj"] }, "total_step"],
      [{ peft_type: "ADALORA", total_step: 10, tinit: 5, tfinal: 5, target_modules: ["q_proj"] }, "tinit"],
      [{ peft_type: "ADALORA", total_step: 10, use_dora: true, target_modules: ["q_proj"] }, "use_dora"],
      [{ peft_type: "ADALORA", total_step: 10, beta1: 1, target_modules: ["q_proj"] }, "beta1"],
      [{ peft_type: "ADALORA", total_step: 10, init_r: 2, rank_pattern: { "model.layers.0.self_attn.q_proj.lora_E": [true] }, target_modules: ["q_proj"] }, "rank_pattern"],
      [{ peft_type: "ADALORA", total_step: 10, init_lora_weights: "pissa", target_modules: ["q_proj"] }, "init_lora_weights"],
    ],
    lr: 0.05,
  });
});
