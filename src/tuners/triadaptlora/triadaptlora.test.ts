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
import { TriAllocator } from "./allocator.js";
import { type TriAdaptLoraConfig, parseTriAdaptLoraConfig, triadaptlora } from "./index.js";

const t = (shape: number[], data: number[]): Tensor => ({ dtype: "float32", shape, data: Float32Array.from(data) });

describe("TriAdaptLoRA", () => {
  // out 2, in 3, rank 2
  const A = [
    [1, -1, 0.5],
    [0.25, 2, -1],
  ];
  const B = [
    [0.5, 1],
    [-2, 0.75],
  ];
  const Crow = [
    [0.5, 0],
    [-0.25, 1.5],
  ];
  const Ccol = [
    [0.75, 2],
    [0, -0.5],
  ];
  const W = [
    [0.1, -0.2, 0.3],
    [0.4, 0.5, -0.6],
  ];
  const x = [
    [1, 2, -1],
    [0.5, -0.5, 3],
  ];
  const raw = { peft_type: "TRIADAPTLORA", reference_rank: 4, lora_alpha: 8, total_step: 10, rank_pattern: { m: 2 }, target_modules: ["m"] };
  const tensors = new Map([
    ["m.lora_A", t([2, 3], A.flat())],
    ["m.lora_B", t([2, 2], B.flat())],
    ["m.lora_C_row", t([2, 2], Crow.flat())],
    ["m.lora_C_col", t([2, 2], Ccol.flat())],
  ]);

  test("forward = x·Wᵀ + lora_alpha/reference_rank · B·(C_row + C_col)·A·x, by hand", async () => {
    const scale = 8 / 4;
    const want = x.flatMap((row) =>
      [0, 1].map((o) => {
        let y = W[o]!.reduce((s, w, i) => s + w * row[i]!, 0);
        const ax = A.map((a) => a.reduce((s, v, i) => s + v * row[i]!, 0));
        for (let p = 0; p < 2; p++) for (let q = 0; q < 2; q++) y += scale * B[o]![p]! * (Crow[p]![q]! + Ccol[p]![q]!) * ax[q]!;
        return y;
      }),
    );
    const got = await runLinear({ raw, module: "m", tensors, weight: t([2, 3], W.flat()), x: t([2, 3], x.flat()) });
    assert.ok(maxDiff(got, want) < 1e-6, `${[...got]} vs ${want}`);
  });

  test("finite-difference gradients of its graph", async () => {
    await gradCheckLinear({ raw, module: "m", tensors, weight: t([2, 3], W.flat()), x: t([2, 3], x.flat()) });
  });

  /** Three modules (in 2, out 2, capacity 4), rank 1 each. */
  function constructed(extra: Record<string, unknown>) {
    const c = parseTriAdaptLoraConfig({ peft_type: "TRIADAPTLORA", init_rank: 1, max_r: 4, incre_interval: 1, init_warmup: 0, incre_rank_num: 1, total_step: 10, target_modules: ["m"], ...extra }, "t");
    const mods = ["m1", "m2", "m3"];
    const ts = new Map<string, Tensor>();
    for (const m of mods) {
      ts.set(`${m}.lora_A`, t([4, 2], [0.1, 0.2, 0, 0, 0, 0, 0, 0]));
      ts.set(`${m}.lora_B`, t([2, 4], [0.3, 0, 0, 0, -0.2, 0, 0, 0]));
      ts.set(`${m}.lora_C_row`, t([4, 4], new Array(16).fill(0)));
      ts.set(`${m}.lora_C_col`, t([4, 4], new Array(16).fill(0)));
    }
    const adapter: AdapterInstance<TriAdaptLoraConfig> = { name: "t", tuner: triadaptlora, config: c, tensors: ts };
    const values = new Map([...ts].map(([k, v]) => [k, Float32Array.from(toFloat32(v))]));
    return { adapter, values };
  }

  test("the threshold schedule: linear ⌊(b − total)·μ⌋ and non-linear ⌊exp(μ·ln(b − total))⌋ modules, at least 1, at most all", () => {
    const lin = new TriAllocator(constructed({ target_total_rank: 30 }).adapter);
    const { values } = constructed({});
    lin.afterStep(0, values); // reads the ranks: 3 in total
    assert.equal(lin.growCount(1), 2, "⌊27 · 0.1⌋ = 2");
    assert.equal(lin.growCount(5), 3, "⌊27 · 0.5⌋ = 13 → 3 modules");
    const nl = new TriAllocator(constructed({ target_total_rank: 30, rank_growth_model: "non-linear" }).adapter);
    nl.afterStep(0, constructed({}).values);
    assert.equal(nl.growCount(1), Math.trunc(Math.exp(0.1 * Math.log(27))), "⌊27^0.1⌋ = 1");
    assert.equal(nl.growCount(6), Math.min(3, Math.trunc(Math.exp(0.6 * Math.log(27)))), "⌊27^0.6⌋ = 7 → 3");
    const few = new TriAllocator(constructed({ target_total_rank: 4 }).adapter);
    few.afterStep(0, constructed({}).values);
    assert.equal(few.growCount(1), 1, "⌊1 · 0.1⌋ = 0 → at least 1");
  });

  test("allocation follows the change of ‖C‖_F / strips; strips are triangular; the budget is never exceeded", () => {
    const { adapter, values } = constructed({ target_total_rank: 6 });
    const al = new TriAllocator(adapter);
    const set = (m: string, key: "row" | "col", p: number, q: number, v: number) => (values.get(`${m}.lora_C_${key}`)![p * 4 + q] = v);
    al.afterStep(0, values); // warm-up: no allocation
    set("m1", "row", 0, 0, 1);
    set("m2", "row", 0, 0, 3);
    set("m3", "row", 0, 0, 2);
    al.afterStep(1, values); // scores 1, 3, 2 → one module (⌊3 · 0.1⌋ → 1): m2
    set("m3", "row", 0, 0, 5); // m3: 5 − 2 = 3; m2: 3/2 − 3 < 0; m1: 0
    al.afterStep(2, values);
    al.afterStep(3, values); // m1: 0, m2: 0, m3: 5/2 − 5 → m1 (ties: module order)
    for (let s = 4; s < 8; s++) al.afterStep(s, values);
    assert.deepEqual(al.events.map((e) => e.grown), [["m2"], ["m3"], ["m1"]]);
    assert.deepEqual(al.events[0]!.scores, { m1: 1, m2: 3, m3: 2 });
    assert.ok(al.events.every((e) => Object.values(e.ranks).reduce((a, b) => a + b, 0) <= 6));
    const ranks: Record<string, number> = al.ranks;
    assert.deepEqual({ ...ranks }, { m1: 2, m2: 2, m3: 2 });
    // m2 has strips [0, 1) and [1, 2): C_row's upper corner and C_col's lower corner stay zero
    set("m2", "row", 0, 1, 7);
    set("m2", "col", 1, 0, 7);
    set("m2", "row", 1, 0, 0.5);
    set("m2", "col", 0, 1, 0.5);
    set("m2", "row", 2, 2, 9); // beyond the rank
    al.afterStep(8, values);
    const row = values.get("m2.lora_C_row")!;
    const col = values.get("m2.lora_C_col")!;
    assert.equal(row[1], 0, "C_row[0, 1] is outside the lower part");
    assert.equal(col[4], 0, "C_col[1, 0] is outside the upper part");
    assert.equal(row[4], 0.5, "C_row[1, 0] is the second row strip");
    assert.equal(col[1], 0.5, "C_col[0, 1] is the second column strip");
    assert.equal(row[10], 0);
    assert.ok(values.get("m2.lora_A")!.subarray(2, 4).some((v) => v !== 0), "the grown rank's A row was drawn");
    assert.ok(values.get("m2.lora_A")!.subarray(4).every((v) => v === 0));
    const done = al.finish(adapter)!;
    assert.deepEqual(done.config.rankPattern, { m1: 2, m2: 2, m3: 2 });
    assert.deepEqual(done.tensors.get("m2.lora_C_row")!.shape, [2, 2]);
  });

  test("training: ranks grow under the budget; saved TRIADAPTLORA reloads; peft export-lora → LoRA with the same logits through peft forward", async () => {
    const cfg = { peft_type: "TRIADAPTLORA", init_rank: 1, reference_rank: 2, max_r: 4, total_step: 10, incre_interval: 2, incre_rank_num: 1, target_modules: ["q_proj", "v_proj"] };
    const { pm } = await trainedTiny(cfg, 10);
    const rp = (pm.adapter("default").config as TriAdaptLoraConfig).rankPattern!;
    const total = Object.values(rp).reduce((s, r) => s + r, 0);
    assert.ok(total > 4 && total <= 8, `ranks grew within the budget 8: ${JSON.stringify(rp)}`);
    const dir = mkdtempSync(join(tmpdir(), "peft-triadaptlora-"));
    try {
      pm.savePretrained(dir);
      const saved = JSON.parse(readFileSync(join(dir, "adapter_config.json"), "utf8")) as Record<string, unknown>;
      assert.equal(saved.peft_type, "TRIADAPTLORA");
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

  test("a run killed at any step and resumed from its checkpoint (strips, norms at the last allocation, generator) equals the straight run: rank_pattern and tensors", async () => {
    const cfg = { peft_type: "TRIADAPTLORA", init_rank: 1, reference_rank: 2, max_r: 4, total_step: 10, incre_interval: 2, incre_rank_num: 1, target_modules: ["q_proj", "v_proj"] };
    await assertResumeParity(cfg, 10, [2, 3, 5, 9]);
    // a state that is not this adapter's is refused, typed
    const fresh = PeftModel.create(fixtureModel("llama"), cfg).adapter("default") as never;
    assert.throws(() => new TriAllocator(fresh).restore({ tensors: new Map(), json: {} }), AdapterStateError);
    const other = new TriAllocator(PeftModel.create(fixtureModel("llama"), { ...cfg, target_modules: ["q_proj"] }).adapter("default") as never).state();
    assert.throws(() => new TriAllocator(fresh).restore(other), AdapterStateError);
  });

  methodSuite({
    method: "triadaptlora",
    arch: "llama",
    randomConfig: { peft_type: "TRIADAPTLORA", total_step: 10, reference_rank: 2, rank_pattern: { "model.layers.0.self_attn.q_proj": 2, "model.layers.1.self_attn.q_proj": 3, "model.layers.0.self_attn.v_proj": 1, "model.layers.1.self_attn.v_proj": 2 }, target_modules: ["q_proj", "v_proj"] },
    trainConfig: { peft_type: "TRIADAPTLORA", init_rank: 1, reference_rank: 2, max_r: 3, total_step: 12, incre_interval: 3, target_modules: ["q_proj", "v_proj", "down_proj"] },
    badConfigs: [
      [{ peft_type: "TRIADAPTLORA", target_modules: ["q_proj"] }, "total_step"],
      [{ peft_type: "TRIADAPTLORA", total_step: 10, init_rank: 5, max_r: 4, target_modules: ["q_proj"] }, "init_rank"],
      [{ peft_type: "TRIADAPTLORA", total_step: 10, rank_growth_model: "cubic", target_modules: ["q_proj"] }, "rank_growth_model"],
      [{ peft_type: "TRIADAPTLORA", total_step: 10, init_warmup: 10, target_modules: ["q_proj"] }, "init_warmup"],
      [{ peft_type: "TRIADAPTLORA", total_step: 10, use_dora: true, target_modules: ["q_proj"] }, "use_dora"],
    ],
    lr: 0.05,
    perturb: true,
  });
});
