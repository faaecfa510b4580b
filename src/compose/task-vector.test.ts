import { after, describe, test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ConfigError, MissingTensorError, ShapeMismatchError } from "../errors.js";
import { SafetensorsFile, loadSafetensors, saveSafetensors } from "../io/safetensors.js";
import { type Tensor, f32, floatToHalf, halfToFloat, i64, tensor, toFloat32 } from "../tensor.js";
import { fixturePath } from "../util/paths.js";
import { applyTaskVectors, mergeCheckpoints, taskVectorFromCheckpoints, taskVectorFromLora, taskVectorsFromLora } from "./task-vector.js";
import type { LoraFactors } from "./weighted-adapter.js";

const dir = mkdtempSync(join(tmpdir(), "peft-compose-"));
after(() => rmSync(dir, { recursive: true, force: true }));

function save(name: string, tensors: Record<string, Tensor>): string {
  const p = join(dir, name);
  saveSafetensors(p, tensors);
  return p;
}

const half = (xs: number[]): Tensor => tensor("float16", [xs.length], Uint16Array.from(xs, floatToHalf));

const basePath = save("base.safetensors", {
  "w.weight": f32([2, 2], [1, 2, 3, 4]),
  "b.bias": half([0.5, -0.5]),
  position_ids: i64([3], [0, 1, 2]),
});
const ft1 = save("ft1.safetensors", {
  "w.weight": f32([2, 2], [2, 2, 3, 1]),
  "b.bias": half([1, -0.5]),
  position_ids: i64([3], [0, 1, 2]),
});
const ft2 = save("ft2.safetensors", {
  "w.weight": f32([2, 2], [0, 2, 5, 4]),
  "b.bias": half([0.5, 0.5]),
  position_ids: i64([3], [0, 1, 2]),
});

describe("task vectors", () => {
  test("from checkpoints: τ = θ_ft − θ_base for float tensors, in name order", () => {
    const got = [...taskVectorFromCheckpoints(basePath, ft1)];
    assert.deepEqual(
      got.map(([k]) => k),
      ["b.bias", "w.weight"],
    );
    assert.deepEqual([...got[0]![1]], [0.5, 0]);
    assert.deepEqual([...got[1]![1]], [1, 0, 0, -3]);
    assert.deepEqual(got[1]![2], [2, 2]);
    assert.deepEqual(
      [...taskVectorFromCheckpoints(basePath, ft1, { include: /weight$/ })].map(([k]) => k),
      ["w.weight"],
    );
  });

  test("from checkpoints: missing tensors and shape changes are typed errors", () => {
    const extra = save("extra.safetensors", { "new.weight": f32([1], [1]) });
    assert.throws(() => [...taskVectorFromCheckpoints(basePath, extra)], MissingTensorError);
    const bad = save("bad.safetensors", { "w.weight": f32([4], [1, 2, 3, 4]) });
    assert.throws(() => [...taskVectorFromCheckpoints(basePath, bad)], ShapeMismatchError);
  });

  test("from LoRA: scaling·B·A, transposed for fan_in_fan_out", () => {
    // B = [[1], [2], [0]] (out 3, r 1), A = [[1, −1]] (in 2), scaling 0.5 → ΔW = [[.5, −.5], [1, −1], [0, 0]]
    const f: LoraFactors = { A: Float32Array.of(1, -1), B: Float32Array.of(1, 2, 0), r: 1, inFeatures: 2, outFeatures: 3, scaling: 0.5 };
    assert.deepEqual([...taskVectorFromLora(f)], [0.5, -0.5, 1, -1, 0, 0]);
    assert.deepEqual([...taskVectorFromLora(f, true)], [0.5, 1, 0, -0.5, -1, 0]);
    const [entry] = [...taskVectorsFromLora(new Map([["base_model.model.q", f]]), { fanInFanOut: true, keyOf: (m) => `${m.slice(17)}.weight` })];
    assert.equal(entry![0], "q.weight");
    assert.deepEqual(entry![2], [2, 3]);
  });

  for (const [arch, module, fanInFanOut] of [
    ["bert", "bert.encoder.layer.0.attention.self.query", false],
    ["gpt2", "transformer.h.0.attn.c_attn", true],
  ] as const) {
    test(`from a PEFT fixture (${arch}): base + LoRA task vector equals PEFT's merged weight`, () => {
      const root = fixturePath("peft-parity", arch);
      const base = loadSafetensors(join(root, "base", "model.safetensors")).tensors;
      const merged = loadSafetensors(join(root, "lora.merged.safetensors")).tensors;
      const cfg = JSON.parse(readFileSync(join(root, "lora", "adapter_config.json"), "utf8")) as { r: number; lora_alpha: number; fan_in_fan_out: boolean };
      assert.equal(cfg.fan_in_fan_out, fanInFanOut);
      const ad = loadSafetensors(join(root, "lora", "adapter_model.safetensors")).tensors;
      const a = ad.get(`base_model.model.${module}.lora_A.weight`)!;
      const b = ad.get(`base_model.model.${module}.lora_B.weight`)!;
      const f = { A: toFloat32(a), B: toFloat32(b), r: a.shape[0]!, inFeatures: a.shape[1]!, outFeatures: b.shape[0]!, scaling: cfg.lora_alpha / cfg.r };
      const name = `${module}.weight`;
      const out = applyTaskVectors(new Map([[name, base.get(name)!]]), [taskVectorsFromLora(new Map([[module, f]]), { fanInFanOut })]);
      const want = toFloat32(merged.get(name)!);
      const got = toFloat32(out.get(name)!);
      let diff = 0;
      let change = 0;
      const orig = toFloat32(base.get(name)!);
      for (let i = 0; i < want.length; i++) {
        diff = Math.max(diff, Math.abs(want[i]! - got[i]!));
        change = Math.max(change, Math.abs(want[i]! - orig[i]!));
      }
      assert.ok(diff < 1e-5, `max diff ${diff}`);
      assert.ok(change > 1e-3, "the adapter changes the weight");
    });
  }

  test("apply: θ + Σ w·τ in the base dtype; uncovered tensors unchanged", () => {
    const base = loadSafetensors(basePath).tensors;
    const tv1 = [...taskVectorFromCheckpoints(basePath, ft1)];
    const tv2 = new Map([["w.weight", Float32Array.of(1, 1, 1, 1)]]);
    const out = applyTaskVectors(base, [tv1, tv2], [2, -1]);
    assert.deepEqual([...toFloat32(out.get("w.weight")!)], [1 + 2 - 1, 2 - 1, 3 - 1, 4 - 6 - 1]);
    const bias = out.get("b.bias")!;
    assert.equal(bias.dtype, "float16");
    assert.deepEqual([...(bias.data as Uint16Array)].map(halfToFloat), [1.5, -0.5]);
    assert.equal(out.get("position_ids"), base.get("position_ids"));
    assert.throws(() => applyTaskVectors(base, [new Map([["nope", Float32Array.of(1)]])]), MissingTensorError);
    assert.throws(() => applyTaskVectors(base, [new Map([["w.weight", Float32Array.of(1)]])]), ShapeMismatchError);
  });
});

describe("mergeCheckpoints", () => {
  test("streams a TIES merge into a valid safetensors file", () => {
    const outPath = join(dir, "merged.safetensors");
    const seen: string[] = [];
    const res = mergeCheckpoints({
      base: basePath,
      models: [
        { path: ft1, params: { weight: 1 } },
        { path: ft2, params: { weight: 1 } },
      ],
      method: "ties",
      outPath,
      metadata: { merged_by: "peft-ts" },
      onTensor: (name) => seen.push(name),
    });
    assert.deepEqual(res.merged, ["b.bias", "w.weight"]);
    assert.deepEqual(seen, ["b.bias", "position_ids", "w.weight"]);
    const f = SafetensorsFile.open(outPath);
    try {
      assert.equal(f.metadata.merged_by, "peft-ts");
      assert.equal(f.metadata.format, "pt");
      // τ1 = [1, 0, 0, −3], τ2 = [−1, 0, 2, 0]; density 1. Signs of the sum: [+(0), +, +, −].
      // e0: only τ1 (+1) agrees → 1; e1: nobody → 0; e2: τ2 → 2; e3: τ1 → −3.
      assert.deepEqual([...toFloat32(f.get("w.weight"))], [1 + 1, 2, 3 + 2, 4 - 3]);
      // bias τ1 = [.5, 0], τ2 = [0, 1] → [.5, 1] added to [.5, −.5], stored as float16
      const bias = f.get("b.bias");
      assert.equal(bias.dtype, "float16");
      assert.deepEqual([...(bias.data as Uint16Array)].map(halfToFloat), [1, 0.5]);
      assert.deepEqual([...(f.get("position_ids").data as BigInt64Array)], [0n, 1n, 2n]);
    } finally {
      f.close();
    }
    assert.equal(res.bytes, readFileSync(outPath).byteLength);
  });

  test("excluded tensors are copied; bad input fails before anything is written", () => {
    const outPath = join(dir, "linear.safetensors");
    mergeCheckpoints({ base: basePath, models: [{ path: ft1 }, { path: ft2 }], method: "linear", outPath, include: (n) => n === "w.weight" });
    const out = loadSafetensors(outPath).tensors;
    // mean of the task vectors: ([1, 0, 0, −3] + [−1, 0, 2, 0]) / 2
    assert.deepEqual([...toFloat32(out.get("w.weight")!)], [1, 2, 4, 2.5]);
    assert.deepEqual([...(out.get("b.bias")!.data as Uint16Array)].map(halfToFloat), [0.5, -0.5]);

    const missing = save("partial.safetensors", { "w.weight": f32([2, 2], [1, 1, 1, 1]) });
    const target = join(dir, "never.safetensors");
    assert.throws(() => mergeCheckpoints({ base: basePath, models: [{ path: missing }], method: "linear", outPath: target }), MissingTensorError);
    assert.throws(() => mergeCheckpoints({ base: basePath, models: [{ path: ft1 }], method: "dare_ties", outPath: target }), ConfigError);
    assert.throws(() => mergeCheckpoints({ base: basePath, models: [{ path: ft1 }], method: "concat", outPath: target }), ConfigError);
    assert.throws(() => mergeCheckpoints({ base: basePath, models: [{ path: ft1, params: { density: 0.5 } }], method: "linear", outPath: target }), ConfigError);
    assert.equal(existsSync(target), false);
    assert.deepEqual(
      readdirSync(dir).filter((n) => n.includes(".tmp-")),
      [],
    );
  });
});
