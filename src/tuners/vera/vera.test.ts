import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import { AdapterMismatchError } from "../../errors.js";
import { loadSafetensors, saveSafetensors } from "../../io/safetensors.js";
import { PeftModel } from "../../peft/peft-model.js";
import type { Tensor } from "../../tensor.js";
import { fixtureModel, gradCheckLinear, maxDiff, methodSuite, runLinear } from "../../train/method-suite.test-util.js";
import { TorchGenerator } from "../../util/torch-generator.js";

const t = (shape: number[], data: number[]): Tensor => ({ dtype: "float32", shape, data: Float32Array.from(data) });

describe("VeRA", () => {
  // shared projections sized for the largest layer (in 3, out 3), r 2; the layer is out 2, in 2
  const A = [
    [1, -1, 9],
    [0.5, 2, 9],
  ];
  const B = [
    [1, 0.5],
    [-2, 1],
    [9, 9],
  ];
  const lb = [0.5, -1.5];
  const ld = [2, -0.25];
  const W = [
    [0.1, -0.2],
    [0.3, 0.4],
  ];
  const x = [
    [1, 2],
    [-1, 0.5],
  ];
  const tensors = new Map<string, Tensor>([
    ["base_model.vera_A", t([2, 3], A.flat())],
    ["base_model.vera_B", t([3, 2], B.flat())],
    ["m.vera_lambda_b", t([2], lb)],
    ["m.vera_lambda_d", t([2], ld)],
  ]);
  const raw = { peft_type: "VERA", r: 2, target_modules: ["m"] };

  test("forward = x·Wᵀ + λ_b ⊙ (B[:out]·(λ_d ⊙ (A[:, :in]·x))), computed by hand (the 9s lie outside the slices)", async () => {
    const want: number[] = [];
    for (const row of x) {
      const h = [0, 1].map((k) => ld[k]! * (A[k]![0]! * row[0]! + A[k]![1]! * row[1]!));
      for (let o = 0; o < 2; o++) want.push(W[o]![0]! * row[0]! + W[o]![1]! * row[1]! + lb[o]! * (B[o]![0]! * h[0]! + B[o]![1]! * h[1]!));
    }
    const got = await runLinear({ raw, module: "m", tensors, weight: t([2, 2], W.flat()), x: t([2, 2], x.flat()) });
    assert.ok(maxDiff(got, want) < 1e-6, `${[...got]} vs ${want}`);
  });

  test("finite-difference gradients of its graph (the projections are frozen)", async () => {
    await gradCheckLinear({ raw, module: "m", tensors, weight: t([2, 2], W.flat()), x: t([2, 2], x.flat()) });
  });

  test("projections are shared, saved as base_model.vera_A/B and not trained; GPT-2's Conv1D works with fan_in_fan_out", async () => {
    const pm = PeftModel.create(fixtureModel("llama"), { peft_type: "VERA", r: 16, target_modules: ["q_proj", "v_proj"] });
    const a = pm.adapter("default");
    assert.deepEqual(a.tensors.get("base_model.vera_A")!.shape, [16, 32]);
    assert.deepEqual(a.tensors.get("base_model.vera_B")!.shape, [32, 16], "sized for the largest out (q_proj 32 > v_proj 16)");
    // trainable: λ_b (out) + λ_d (r) per layer; PEFT keeps the projections as buffers
    assert.equal(pm.getNbTrainableParameters()[0], 2 * (32 + 16 + 16 + 16));
    const built = pm.buildGraph({ training: true });
    assert.ok(![...built.trainable.keys()].some((k) => k.includes("vera_A") || k.includes("vera_B")));
    const g = PeftModel.create(fixtureModel("gpt2"), { peft_type: "VERA", r: 4, target_modules: ["c_attn"], fan_in_fan_out: true, init_weights: false });
    const ids: Tensor<"int64"> = { dtype: "int64", shape: [1, 4], data: BigInt64Array.from([3, 4, 5, 6], BigInt) };
    const y = await g.forward({ inputIds: ids });
    g.mergeAdapter();
    assert.ok(maxDiff((await g.forward({ inputIds: ids })).data as Float32Array, y.data as Float32Array) < 1e-4);
    await g.dispose();
    await pm.dispose();
  });

  test("projections as PEFT draws them: torch.Generator('cpu').manual_seed(projection_prng_key), vera_A then vera_B, U(±√6/√fan_in)", () => {
    const make = (key: number | undefined, seed: number) =>
      PeftModel.create(fixtureModel("llama"), { peft_type: "VERA", r: 4, target_modules: ["q_proj", "v_proj"], ...(key === undefined ? {} : { projection_prng_key: key }) }, "default", { seed }).adapter("default").tensors;
    const a = make(undefined, 0); // PEFT's default key is 0
    // vera_A [4, 32]: fan_in 32; vera_B [32, 4]: fan_in 4 — the next draws of the same generator
    const g = new TorchGenerator(0);
    const bA = Math.sqrt(3) * (Math.sqrt(2) / Math.sqrt(32));
    const bB = Math.sqrt(3) * (Math.sqrt(2) / Math.sqrt(4));
    assert.deepEqual(a.get("base_model.vera_A")!.data, g.uniform(4 * 32, -bA, bA));
    assert.deepEqual(a.get("base_model.vera_B")!.data, g.uniform(32 * 4, -bB, bB));
    // torch.manual_seed(0); torch.rand(1) = 0.4963 → vera_A[0, 0] = 0.4963·2·bA − bA
    assert.ok(Math.abs((a.get("base_model.vera_A")!.data as Float32Array)[0]! - (0.49626 * 2 - 1) * bA) < 1e-4);
    // peft-ts's own seed does not change them; the key does
    const b = make(0, 5);
    assert.deepEqual(b.get("base_model.vera_A")!.data, a.get("base_model.vera_A")!.data);
    assert.deepEqual(b.get("base_model.vera_B")!.data, a.get("base_model.vera_B")!.data);
    assert.notDeepEqual(make(7, 0).get("base_model.vera_A")!.data, a.get("base_model.vera_A")!.data);
  });

  test("save_projection: false writes no projections; loading regenerates them from the key: same logits as the adapter saved with them", async () => {
    const dir = mkdtempSync(join(tmpdir(), "vera-proj-"));
    try {
      const cfg = { peft_type: "VERA", r: 8, target_modules: ["q_proj", "v_proj", "down_proj"], init_weights: false, projection_prng_key: 1234 };
      const ids: Tensor<"int64"> = { dtype: "int64", shape: [2, 5], data: BigInt64Array.from([3, 4, 5, 6, 7, 9, 10, 11, 12, 13], BigInt) };
      const withP = PeftModel.create(fixtureModel("llama"), cfg, "default", { seed: 3 });
      const want = await withP.forward({ inputIds: ids });
      withP.savePretrained(join(dir, "with"));
      // the same adapter (λ vectors) with save_projection false
      const noP = PeftModel.create(fixtureModel("llama"), { ...cfg, save_projection: false }, "default", { seed: 3 });
      noP.updateAdapterTensors("default", withP.adapter("default").tensors);
      noP.savePretrained(join(dir, "without"));
      const file = join(dir, "without", "adapter_model.safetensors");
      const saved = loadSafetensors(file).tensors;
      assert.ok(!saved.has("base_model.vera_A") && !saved.has("base_model.vera_B"), [...saved.keys()].join(", "));
      assert.ok(loadSafetensors(join(dir, "with", "adapter_model.safetensors")).tensors.has("base_model.vera_A"));
      assert.equal(JSON.parse(readFileSync(join(dir, "without", "adapter_config.json"), "utf8")).save_projection, false);
      const loaded = PeftModel.fromPretrained(fixtureModel("llama"), join(dir, "without"));
      const a = loaded.adapter("default");
      assert.deepEqual(a.tensors.get("base_model.vera_A")!.data, withP.adapter("default").tensors.get("base_model.vera_A")!.data);
      assert.deepEqual(a.tensors.get("base_model.vera_B")!.data, withP.adapter("default").tensors.get("base_model.vera_B")!.data);
      const got = await loaded.forward({ inputIds: ids });
      assert.deepEqual(got.data, want.data);
      const fromWith = PeftModel.fromPretrained(fixtureModel("llama"), join(dir, "with"));
      assert.deepEqual((await fromWith.forward({ inputIds: ids })).data, want.data);
      // saved again, still without projections
      loaded.savePretrained(join(dir, "again"));
      assert.ok(!loadSafetensors(join(dir, "again", "adapter_model.safetensors")).tensors.has("base_model.vera_A"));
      await Promise.all([withP.dispose(), noP.dispose(), loaded.dispose(), fromWith.dispose()]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("save_projection: false with projections in the file: PEFT ignores them (non-persistent buffers), so does peft-ts; save_projection: true without them is refused", () => {
    const dir = mkdtempSync(join(tmpdir(), "vera-proj-"));
    try {
      const cfg = { peft_type: "VERA", r: 4, target_modules: ["q_proj"], save_projection: false };
      const pm = PeftModel.create(fixtureModel("llama"), cfg);
      const regenerated = pm.adapter("default").tensors.get("base_model.vera_A")!;
      pm.savePretrained(dir);
      const file = join(dir, "adapter_model.safetensors");
      const t = loadSafetensors(file).tensors;
      const zeros = (shape: readonly number[]): Tensor => ({ dtype: "float32", shape: [...shape], data: new Float32Array(shape[0]! * shape[1]!) });
      saveSafetensors(file, new Map([...t, ["base_model.vera_A", zeros([4, 32])], ["base_model.vera_B", zeros([32, 4])]]));
      assert.deepEqual(PeftModel.fromPretrained(fixtureModel("llama"), dir).adapter("default").tensors.get("base_model.vera_A")!.data, regenerated.data);
      // the same file claiming save_projection: true, without projections
      saveSafetensors(file, t);
      const cfgFile = join(dir, "adapter_config.json");
      writeFileSync(cfgFile, JSON.stringify({ ...JSON.parse(readFileSync(cfgFile, "utf8")), save_projection: true }));
      assert.throws(() => PeftModel.fromPretrained(fixtureModel("llama"), dir), (e: unknown) => e instanceof AdapterMismatchError && /vera_A/.test(e.message));
      assert.ok(existsSync(cfgFile));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  methodSuite({
    method: "vera",
    arch: "llama",
    randomConfig: { peft_type: "VERA", r: 8, target_modules: ["q_proj", "v_proj"], init_weights: false },
    trainConfig: { peft_type: "VERA", r: 32, target_modules: ["q_proj", "v_proj", "down_proj"] },
    badConfigs: [
      [{ peft_type: "VERA", r: 0, target_modules: ["q_proj"] }, "'r'"],
      [{ peft_type: "VERA", save_projection: "no", target_modules: ["q_proj"] }, "save_projection"],
      [{ peft_type: "VERA", projection_prng_key: 1.5, target_modules: ["q_proj"] }, "projection_prng_key"],
      [{ peft_type: "VERA", bias: "lora_only", target_modules: ["q_proj"] }, "bias"],
      [{ peft_type: "VERA", target_modules: ["nothing_here"] }, "target_modules"],
    ],
    lr: 0.05,
  });
});
