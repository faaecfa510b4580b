import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { Matrix, SingularValueDecomposition } from "ml-matrix";
import { PeftModel } from "../../peft/peft-model.js";
import { type Tensor, toFloat32 } from "../../tensor.js";
import { fixtureModel, gradCheckLinear, maxDiff, methodSuite, runLinear } from "../../train/method-suite.test-util.js";
import { IDS, exportParity, trainedTiny } from "../../cli/commands/export-lora.test-util.js";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type SvfitConfig, spectrumRank } from "./index.js";

const t = (shape: number[], data: number[]): Tensor => ({ dtype: "float32", shape, data: Float32Array.from(data) });

describe("SVFit", () => {
  // r 2 of a [2, 3] weight: U [2, 2], V [2, 3], s, s0
  const U = [
    [0.6, -0.8],
    [0.8, 0.6],
  ];
  const V = [
    [1, 0, 0],
    [0, 0.6, 0.8],
  ];
  const s = [3.5, 0.5];
  const s0 = [3, 1];
  const W = [
    [0.1, -0.2, 0.3],
    [0.3, 0.4, -0.5],
  ];
  const x = [
    [1, 2, -1],
    [-1, 0.5, 2],
  ];
  const raw = { peft_type: "SVFIT", r: 2, target_modules: ["m"] };
  const tensors = new Map<string, Tensor>([
    ["m.svfit_U", t([2, 2], U.flat())],
    ["m.svfit_V", t([2, 3], V.flat())],
    ["m.svfit_s", t([2], s)],
    ["m.svfit_s0", t([2], s0)],
  ]);

  test("forward = x·Wᵀ + U·diag(s − s₀)·Vᵀ·x, computed by hand", async () => {
    const want = x.flatMap((row) =>
      [0, 1].map((o) => {
        let d = 0;
        for (let k = 0; k < 2; k++) d += U[o]![k]! * (s[k]! - s0[k]!) * V[k]!.reduce((a, v, i) => a + v * row[i]!, 0);
        return W[o]!.reduce((a, w, i) => a + w * row[i]!, 0) + d;
      }),
    );
    const got = await runLinear({ raw, module: "m", tensors, weight: t([2, 3], W.flat()), x: t([2, 3], x.flat()) });
    assert.ok(maxDiff(got, want) < 1e-6, `${[...got]} vs ${want}`);
  });

  test("finite-difference gradients of its graph (only s is trained; U, V and s₀ are frozen)", async () => {
    await gradCheckLinear({ raw, module: "m", tensors, weight: t([2, 3], W.flat()), x: t([2, 3], x.flat()) });
  });

  test("init: U, s₀, V are the weight's top-r singular triplets (U·diag(s₀)·Vᵀ = its best rank-r approximation), and the initial model equals the base exactly", async () => {
    const base = fixtureModel("llama");
    const pm = PeftModel.create(base, { peft_type: "SVFIT", r: 4, target_modules: ["q_proj", "v_proj"] }, "default", { seed: 0 });
    const a = pm.adapter("default");
    const m = "model.layers.0.self_attn.q_proj";
    const w = base.weights.get(`${m}.weight`)!;
    const [out, inn] = w.shape as [number, number];
    const svd = new Matrix(Array.from({ length: out }, (_, i) => Array.from(toFloat32(w).subarray(i * inn, (i + 1) * inn))));
    const sv = [...new SingularValueDecomposition(svd).diagonal].sort((p, q) => q - p);
    assert.ok(maxDiff(toFloat32(a.tensors.get(`${m}.svfit_s0`)!), sv.slice(0, 4)) < 1e-4, "s₀ = the top-4 singular values");
    assert.deepEqual(a.tensors.get(`${m}.svfit_s`)!.data, a.tensors.get(`${m}.svfit_s0`)!.data, "s starts at s₀");
    const Ut = toFloat32(a.tensors.get(`${m}.svfit_U`)!);
    let orth = 0;
    for (let p = 0; p < 4; p++) for (let q = 0; q < 4; q++) {
      let d = 0;
      for (let o = 0; o < out; o++) d += Ut[o * 4 + p]! * Ut[o * 4 + q]!;
      orth = Math.max(orth, Math.abs(d - (p === q ? 1 : 0)));
    }
    assert.ok(orth < 1e-5, "U has orthonormal columns");
    // trainable: r singular values per layer; the initial logits are the base model's, bit for bit
    assert.equal(pm.getNbTrainableParameters()[0], 2 * 2 * 4);
    const adapted = await pm.forward({ inputIds: IDS });
    const plain = await pm.disableAdapter(() => pm.forward({ inputIds: IDS }));
    assert.deepEqual(adapted.data, plain.data);
    await pm.dispose();
  });

  test("after training, the LoRA export (B = U, A = diag(s − s₀)·Vᵀ) gives the trained logits through peft forward", async () => {
    const { pm, losses } = await trainedTiny({ peft_type: "SVFIT", r: 4, target_modules: ["q_proj", "v_proj", "down_proj"] }, 6, 0.05);
    assert.ok(losses.at(-1)! < losses[0]!, `loss fell: ${losses.join(", ")}`);
    const cfg = await exportParity(pm);
    assert.equal(cfg.r, 4);
    assert.equal(cfg.lora_alpha, 4, "scaling 1");
    await pm.dispose();
  });

  test("rank rule: the smallest r whose top singular values hold the share τ of Σσ², by hand", () => {
    // energies 100, 9, 1, 0.01 of 110.01
    assert.equal(spectrumRank([10, 3, 1, 0.1], 0.5), 1);
    assert.equal(spectrumRank([10, 3, 1, 0.1], 0.99), 2, "109 ≥ 0.99·110.01 = 108.91 > 100");
    assert.equal(spectrumRank([0.1, 1, 10, 3], 0.99), 2, "order of the input does not matter");
    assert.equal(spectrumRank([10, 3, 1, 0.1], 0.999), 3, "110 ≥ 109.90 > 109");
    assert.equal(spectrumRank([10, 3, 1, 0.1], 1), 4);
    assert.equal(spectrumRank([0, 0], 0.99), 1, "a zero weight keeps one value");
  });

  test("spectrum_threshold: each module's rank from its weight's spectrum (rank_pattern), saved with the adapter, loads and exports at those ranks", async () => {
    const base = fixtureModel("llama");
    const tau = 0.6;
    const raw = { peft_type: "SVFIT", r: 4, spectrum_threshold: tau, target_modules: ["q_proj", "v_proj"] };
    const pm = PeftModel.create(base, raw, "default", { seed: 0 });
    const a = pm.adapter("default");
    const rp = (a.config as SvfitConfig).rankPattern;
    assert.equal(Object.keys(rp).length, 4);
    let total = 0;
    for (const [m, r] of Object.entries(rp)) {
      // the rule computed here from the weight: Σ_{i<r} σ_i² ≥ τ·Σσ² and Σ_{i<r−1} σ_i² < τ·Σσ²
      const w = base.weights.get(`${m}.weight`)!;
      const [out, inn] = w.shape as [number, number];
      const sv = [...new SingularValueDecomposition(new Matrix(Array.from({ length: out }, (_, i) => Array.from(toFloat32(w).subarray(i * inn, (i + 1) * inn))))).diagonal].sort((p, q) => q - p);
      const e = sv.map((x) => x * x);
      const all = e.reduce((p, q) => p + q, 0);
      const head = (k: number) => e.slice(0, k).reduce((p, q) => p + q, 0);
      assert.ok(head(r) >= tau * all - 1e-9 && head(r - 1) < tau * all, `${m}: rank ${r} is the smallest holding ${tau} of the energy`);
      assert.ok(r < Math.min(out, inn), `${m}: ${r} below full rank`);
      assert.deepEqual(a.tensors.get(`${m}.svfit_s`)!.shape, [r]);
      assert.deepEqual(a.tensors.get(`${m}.svfit_U`)!.shape, [out, r]);
      assert.deepEqual(a.tensors.get(`${m}.svfit_V`)!.shape, [r, inn]);
      assert.ok(maxDiff(toFloat32(a.tensors.get(`${m}.svfit_s0`)!), sv.slice(0, r)) < 1e-4, `${m}: s₀ = the top ${r} singular values`);
      total += r;
    }
    assert.ok(new Set(Object.values(rp)).size > 1, `modules of different widths get different ranks: ${JSON.stringify(rp)}`);
    assert.equal(pm.getNbTrainableParameters()[0], total);
    const dir = mkdtempSync(join(tmpdir(), "peft-svfit-rule-"));
    try {
      pm.savePretrained(dir);
      const saved = JSON.parse(readFileSync(join(dir, "adapter_config.json"), "utf8")) as Record<string, unknown>;
      assert.deepEqual(saved.rank_pattern, rp);
      assert.equal(saved.spectrum_threshold, tau);
      const back = PeftModel.fromPretrained(base, dir);
      assert.deepEqual((back.adapter("default").config as SvfitConfig).rankPattern, rp);
      assert.deepEqual((await back.forward({ inputIds: IDS })).data, (await pm.forward({ inputIds: IDS })).data);
      await back.dispose();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    await pm.dispose();
    const { pm: trained } = await trainedTiny(raw, 4, 0.05);
    const lc = await exportParity(trained);
    const ranks = Object.fromEntries(Object.keys(rp).map((m) => [m, (lc.rank_pattern as Record<string, number> | undefined)?.[m] ?? (lc.r as number)]));
    assert.deepEqual(ranks, rp, "the LoRA export has the rule's ranks");
    await trained.dispose();
  });

  methodSuite({
    method: "svfit",
    arch: "llama",
    randomConfig: { peft_type: "SVFIT", r: 4, target_modules: ["q_proj", "v_proj"], init_weights: false },
    trainConfig: { peft_type: "SVFIT", r: 8, target_modules: ["q_proj", "v_proj", "down_proj"] },
    badConfigs: [
      [{ peft_type: "SVFIT", r: 4, lora_alpha: 8, target_modules: ["q_proj"] }, "lora_alpha"],
      [{ peft_type: "SVFIT", r: 999, target_modules: ["q_proj"] }, "'r'"],
      [{ peft_type: "SVFIT", target_modules: ["nothing_here"] }, "target_modules"],
      [{ peft_type: "SVFIT", spectrum_threshold: 1.5, target_modules: ["q_proj"] }, "spectrum_threshold"],
      [{ peft_type: "SVFIT", rank_pattern: { "model.layers.0.self_attn.q_proj": 999 }, target_modules: ["q_proj"] }, "rank_pattern"],
    ],
    lr: 0.05,
  });
});
