import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import { IDS, exportParity, trainedTiny } from "../../cli/commands/export-lora.test-util.js";
import { AdapterStateError } from "../../errors.js";
import { PeftModel } from "../../peft/peft-model.js";
import { type Tensor, toFloat32 } from "../../tensor.js";
import { fixtureModel, gradCheckLinear, maxDiff, methodSuite, runLinear } from "../../train/method-suite.test-util.js";
import { assertResumeParity } from "../../train/resume-parity.test-util.js";
import type { AdapterInstance } from "../common/types.js";
import { IncreAllocator } from "./allocator.js";
import { type IncreLoraConfig, PROBE_GAIN, RESERVE_E, increlora, parseIncreLoraConfig } from "./index.js";

const t = (shape: number[], data: number[]): Tensor => ({ dtype: "float32", shape, data: Float32Array.from(data) });

describe("IncreLoRA", () => {
  // out 2, in 3, capacity 2
  const A = [
    [1, -1, 0.5],
    [0.25, 2, -1],
  ];
  const E = [1.5, -0.5];
  const B = [
    [0.5, 1],
    [-2, 0.75],
  ];
  const P = [
    [0.3, 0, -0.1],
    [0.2, 0.4, 0],
  ];
  const W = [
    [0.1, -0.2, 0.3],
    [0.4, 0.5, -0.6],
  ];
  const x = [
    [1, 2, -1],
    [0.5, -0.5, 3],
  ];
  const raw = { peft_type: "INCRELORA", init_r: 1, max_r: 2, target_r: 4, lora_alpha: 8, target_modules: ["m"] };
  const tensors = new Map([
    ["m.lora_A", t([2, 3], A.flat())],
    ["m.lora_E", t([2, 1], E)],
    ["m.lora_B", t([2, 2], B.flat())],
    ["m.lora_probe", t([2, 3], P.flat())],
  ]);

  test("forward = x·Wᵀ + lora_alpha/target_r · Σ_k B[:, k]·E_k·(A_k·x) + 1e-3·x·probeᵀ, by hand", async () => {
    const scale = 8 / 4;
    const want = x.flatMap((row) =>
      [0, 1].map((o) => {
        let y = W[o]!.reduce((s, w, i) => s + w * row[i]!, 0);
        for (let k = 0; k < 2; k++) y += scale * B[o]![k]! * E[k]! * A[k]!.reduce((s, a, i) => s + a * row[i]!, 0);
        y += PROBE_GAIN * P[o]!.reduce((s, p, i) => s + p * row[i]!, 0);
        return y;
      }),
    );
    const got = await runLinear({ raw, module: "m", tensors, weight: t([2, 3], W.flat()), x: t([2, 3], x.flat()) });
    assert.ok(maxDiff(got, want) < 1e-6, `${[...got]} vs ${want}`);
  });

  test("finite-difference gradients of its graph (A, E, B and the probe)", async () => {
    await gradCheckLinear({ raw, module: "m", tensors, weight: t([2, 3], W.flat()), x: t([2, 3], x.flat()) });
  });

  /** Three modules (in 4, out 3, capacity 4) with equal factors; `probeGrad[i]` scales module i's ∇ΔW. */
  function constructed(extra: Record<string, unknown>) {
    const c = parseIncreLoraConfig({ peft_type: "INCRELORA", init_r: 1, max_r: 4, incre_interval: 1, init_warmup: 0, incre_rank_num: 1, target_modules: ["m"], ...extra }, "t");
    const mods = ["m1", "m2", "m3"];
    const ts = new Map<string, Tensor>();
    for (const m of mods) {
      // component 0 trained (λ 0.5), component 1 reserve (λ = 1e-5), slots 2–3 empty
      ts.set(`${m}.lora_A`, t([4, 4], [0.1, 0.2, -0.1, 0.3, 0.2, -0.2, 0.1, 0.1, ...new Array(8).fill(0)]));
      ts.set(`${m}.lora_E`, t([4, 1], [0.5, RESERVE_E, 0, 0]));
      ts.set(`${m}.lora_B`, t([3, 4], [0.3, 0.1, 0, 0, -0.2, 0.2, 0, 0, 0.1, -0.3, 0, 0]));
      ts.set(`${m}.lora_probe`, t([3, 4], new Array(12).fill(0)));
    }
    const adapter: AdapterInstance<IncreLoraConfig> = { name: "t", tuner: increlora, config: c, tensors: ts };
    const values = new Map([...ts].map(([k, v]) => [k, Float32Array.from(toFloat32(v))]));
    return { adapter, values, mods };
  }

  test("allocation follows the importance |ΔW ⊙ ∇ΔW| and the total rank never exceeds the budget", () => {
    const { adapter, values, mods } = constructed({ top_h: 2, target_total_rank: 6 });
    const al = new IncreAllocator(adapter);
    assert.equal(al.budget, 6);
    const scale = [1, 0.1, 10]; // m3 most important, then m1, then m2
    const grads = new Map(mods.map((m, i) => [`${m}.lora_probe`, new Float32Array(12).fill(scale[i]! * PROBE_GAIN)]));
    const totals: number[] = [];
    for (let step = 0; step < 6; step++) {
      al.afterStep(step, values, grads);
      totals.push(al.totalRank);
      assert.ok(al.totalRank <= al.budget, `step ${step}: total ${al.totalRank} ≤ budget 6`);
    }
    const s = al.scores;
    assert.ok(s.m3! > s.m1! && s.m1! > s.m2!, `scores follow ∇ΔW: ${JSON.stringify(s)}`);
    assert.deepEqual(totals, [3, 5, 6, 6, 6, 6], "step 0 warm-up; step 1: m3, m1 (+1 each); step 2: only 1 left → m3");
    assert.deepEqual(al.events.map((e) => e.grown), [["m3", "m1"], ["m3"]]);
    const ranks: Record<string, number> = al.ranks;
    assert.deepEqual({ ...ranks }, { m1: 2, m2: 1, m3: 3 });
    // budget spent: reserve components and empty slots are zero; the probes are reset
    for (const m of mods) {
      const r = ranks[m]!;
      const e = values.get(`${m}.lora_E`)!;
      for (let k = r; k < 4; k++) assert.equal(e[k], 0, `${m} slot ${k} λ`);
      assert.ok(values.get(`${m}.lora_A`)!.subarray(r * 4).every((v) => v === 0), `${m}: rows beyond rank ${r} zero`);
      assert.ok(values.get(`${m}.lora_probe`)!.every((v) => v === 0));
    }
    // the components that grew came from the reserve (λ started at 1e-5) and got a new reserve drawn
    assert.equal(values.get("m3.lora_E")![1], RESERVE_E);
    assert.ok(values.get("m3.lora_A")!.subarray(8, 12).some((v) => v !== 0), "m3's third component was drawn");
    const done = al.finish(adapter)!;
    assert.deepEqual(done.config.rankPattern, { m1: 2, m2: 1, m3: 3 });
    assert.deepEqual(done.tensors.get("m3.lora_A")!.shape, [3, 4]);
    assert.deepEqual(done.tensors.get("m2.lora_B")!.shape, [3, 1]);
    assert.ok(!done.tensors.has("m1.lora_probe"), "the probe is dropped");
  });

  test("choose: top_h by score among modules with capacity, incre_rank_num each, cut at the budget", () => {
    const { adapter, values, mods } = constructed({ top_h: 2, incre_rank_num: 2, target_total_rank: 8 });
    const al = new IncreAllocator(adapter);
    al.afterStep(0, values, new Map(mods.map((m) => [`${m}.lora_probe`, new Float32Array(12)])));
    assert.deepEqual(al.choose([0.5, 3, 1]), [{ module: 1, add: 2 }, { module: 2, add: 2 }]);
    assert.deepEqual(al.choose([2, 2, 1]), [{ module: 0, add: 2 }, { module: 1, add: 2 }], "ties: module order");
    const tight = constructed({ top_h: 3, incre_rank_num: 2, target_total_rank: 6 });
    const al2 = new IncreAllocator(tight.adapter);
    al2.afterStep(0, tight.values, new Map());
    assert.deepEqual(al2.choose([1, 2, 3]), [{ module: 2, add: 2 }, { module: 1, add: 1 }], "3 left of the budget");
  });

  test("training: ranks grow under the budget; saved INCRELORA reloads; peft export-lora → LoRA with the same logits through peft forward", async () => {
    const cfg = { peft_type: "INCRELORA", init_r: 1, target_r: 2, max_r: 4, incre_interval: 2, top_h: 1, incre_rank_num: 1, target_modules: ["q_proj", "v_proj"] };
    const { pm } = await trainedTiny(cfg, 10);
    const a = pm.adapter("default");
    const rp = (a.config as IncreLoraConfig).rankPattern!;
    assert.ok(rp, "rank_pattern written");
    const total = Object.values(rp).reduce((s, r) => s + r, 0);
    assert.ok(total > 4, `ranks grew: ${JSON.stringify(rp)}`);
    assert.ok(total <= 2 * 4, `total ${total} ≤ budget 8`);
    assert.ok(![...a.tensors.keys()].some((k) => k.endsWith(".lora_probe")), "no probe after training");
    const dir = mkdtempSync(join(tmpdir(), "peft-increlora-"));
    try {
      pm.savePretrained(dir);
      const saved = JSON.parse(readFileSync(join(dir, "adapter_config.json"), "utf8")) as Record<string, unknown>;
      assert.equal(saved.peft_type, "INCRELORA");
      assert.deepEqual(saved.rank_pattern, rp);
      const back = PeftModel.fromPretrained(fixtureModel("llama"), dir);
      assert.deepEqual((await back.forward({ inputIds: IDS })).data, (await pm.forward({ inputIds: IDS })).data);
      await back.dispose();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    const lc = await exportParity(pm);
    const ranks = Object.fromEntries(Object.keys(rp).map((m) => [m, (lc.rank_pattern as Record<string, number>)[m] ?? (lc.r as number)]));
    assert.deepEqual(ranks, rp, "the LoRA has the allocated ranks");
    await pm.dispose();
  });

  test("a run killed at any step and resumed from its checkpoint (importance EMAs, reserve, generator) equals the straight run: rank_pattern and tensors", async () => {
    // budget 12 over 4 modules from rank 1, one component per step from step 1 (top_h 1), so the ranks end unequal and
    // the generator's draws survive; stops before, during and after the allocations (restarting the EMAs and the
    // generator, as before the state was checkpointed, changes the tensors at the stop at 3)
    const cfg = { peft_type: "INCRELORA", init_r: 1, target_r: 3, max_r: 5, incre_interval: 1, top_h: 1, incre_rank_num: 1, target_modules: ["q_proj", "v_proj"] };
    await assertResumeParity(cfg, 12, [1, 3, 6, 10]);
    // a state that is not this adapter's is refused, typed
    const fresh = PeftModel.create(fixtureModel("llama"), cfg).adapter("default") as never;
    assert.throws(() => new IncreAllocator(fresh).restore({ tensors: new Map(), json: {} }), AdapterStateError);
    const other = new IncreAllocator(PeftModel.create(fixtureModel("llama"), { ...cfg, target_modules: ["q_proj"] }).adapter("default") as never).state();
    assert.throws(() => new IncreAllocator(fresh).restore(other), AdapterStateError);
  });

  test("export refuses an adapter whose ranks are not allocated yet, and DyLoRA's --rank", () => {
    const pm = PeftModel.create(fixtureModel("llama"), { peft_type: "INCRELORA", target_modules: ["q_proj"] });
    const a = pm.adapter("default") as AdapterInstance<IncreLoraConfig>;
    assert.throws(() => increlora.toLora!(a, null as never, { rank: null }), /rank_pattern/u);
    assert.throws(() => increlora.toLora!({ ...a, config: { ...a.config, rankPattern: {} } }, null as never, { rank: 2 }), /--rank/u);
  });

  methodSuite({
    method: "increlora",
    arch: "llama",
    randomConfig: { peft_type: "INCRELORA", init_r: 2, target_r: 2, max_r: 3, rank_pattern: { "model.layers.0.self_attn.q_proj": 2, "model.layers.1.self_attn.q_proj": 3, "model.layers.0.self_attn.v_proj": 1, "model.layers.1.self_attn.v_proj": 2 }, target_modules: ["q_proj", "v_proj"] },
    trainConfig: { peft_type: "INCRELORA", init_r: 1, target_r: 2, max_r: 3, incre_interval: 3, target_modules: ["q_proj", "v_proj", "down_proj"] },
    badConfigs: [
      [{ peft_type: "INCRELORA", init_r: 5, max_r: 4, target_modules: ["q_proj"] }, "init_r"],
      [{ peft_type: "INCRELORA", use_dora: true, target_modules: ["q_proj"] }, "use_dora"],
      [{ peft_type: "INCRELORA", beta1: 1, target_modules: ["q_proj"] }, "beta1"],
      [{ peft_type: "INCRELORA", bias: "all", target_modules: ["q_proj"] }, "bias"],
      [{ peft_type: "INCRELORA", rank_pattern: { "model.layers.0.self_attn.q_proj": 2 }, target_modules: ["q_proj"] }, "rank_pattern"],
    ],
    lr: 0.05,
    perturb: true,
  });
});
