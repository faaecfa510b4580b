import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { loadSafetensors } from "../io/safetensors.js";
import { loadModel } from "../models/load.js";
import { modelInfo } from "../peft/model-info.js";
import { fixturePath } from "./paths.js";
import { TorchGenerator, kaimingUniformBound, torchLinearInit } from "./torch-generator.js";

const round4 = (a: ArrayLike<number>) => Array.from(a, (v) => Math.round(v * 1e4) / 1e4);

describe("TorchGenerator (torch's CPU mt19937)", () => {
  test("mt19937 reference: seed 5489 gives 3499211612 first; the 10000th output of the default seed is 4123659995", () => {
    assert.equal(new TorchGenerator(5489).random(), 3499211612);
    const g = new TorchGenerator(5489);
    let v = 0;
    for (let i = 0; i < 10000; i++) v = g.random();
    assert.equal(v, 4123659995); // the C++ standard's check value for std::mt19937
  });

  test("torch.manual_seed(s); torch.rand(n) as published", () => {
    assert.deepEqual(round4(new TorchGenerator(0).rand(5)), [0.4963, 0.7682, 0.0885, 0.132, 0.3074]);
    assert.deepEqual(round4(new TorchGenerator(42).rand(10)), [0.8823, 0.915, 0.3829, 0.9593, 0.3904, 0.6009, 0.2566, 0.7936, 0.9408, 0.1332]);
  });

  test("seeds use their low 32 bits, negative ones as two's complement (torch's manual_seed); uniform draws stay in [from, to)", () => {
    assert.deepEqual(new TorchGenerator(2 ** 32 + 3).rand(4), new TorchGenerator(3).rand(4));
    assert.deepEqual(new TorchGenerator(-1).rand(4), new TorchGenerator(2 ** 32 - 1).rand(4));
    const u = new TorchGenerator(1).uniform(10000, -0.25, 0.5);
    assert.ok(u.every((v) => v >= -0.25 && v < 0.5));
    assert.throws(() => new TorchGenerator(0.5), RangeError);
  });

  test("kaiming_uniform_ bound: a = √5 is U(±1/√fan_in) up to float64 rounding", () => {
    for (const fan of [4, 32, 96, 768]) assert.ok(Math.abs(kaimingUniformBound(fan, Math.sqrt(5)) - 1 / Math.sqrt(fan)) < 1e-15);
    assert.equal(kaimingUniformBound(8, 0), Math.sqrt(3) * (Math.sqrt(2) / Math.sqrt(8)));
  });

  // The Python-PEFT fixtures (make_fixtures.py) seed torch's global generator right before
  // get_peft_model(…, LoraConfig(init_lora_weights=False)) / add_adapter: PEFT then keeps
  // nn.Linear's default initialisation of lora_A and lora_B, drawn in module order (A then B per
  // adapted layer). Regenerating them here must give the saved tensors bit for bit.
  const cases: [arch: "bert" | "gpt2" | "llama", adapter: string, seed: number][] = [
    ["gpt2", "lora", 42],
    ["llama", "lora", 42],
    ["bert", "lora", 42],
    ["gpt2", "rslora_all_linear", 7],
    ["bert", "rslora_all_linear", 7],
    ["gpt2", "lora_patterns", 8],
    ["bert", "lora_patterns", 8],
    ["gpt2", "dora", 9],
    ["bert", "dora", 9],
    ["gpt2", "multi_a", 11],
    ["gpt2", "multi_b", 12],
    ["bert", "multi_a", 11],
    ["bert", "multi_b", 12],
  ];
  for (const [arch, adapter, seed] of cases) {
    test(`regenerates the PEFT fixture ${arch}/${adapter} (seed ${seed}) bit-exactly`, () => {
      const info = modelInfo(loadModel(fixturePath("peft-parity", arch, "base")));
      const { tensors } = loadSafetensors(fixturePath("peft-parity", arch, adapter, "adapter_model.safetensors"));
      const g = new TorchGenerator(seed);
      let modules = 0;
      let values = 0;
      for (const m of info.linearModules) {
        const key = (ab: "A" | "B") => `base_model.model.${m.name}.lora_${ab}.weight`;
        if (!tensors.has(key("A"))) continue;
        modules++;
        for (const ab of ["A", "B"] as const) {
          const want = tensors.get(key(ab))!;
          const [out, inn] = want.shape as [number, number];
          const got = torchLinearInit(g, out, inn).weight;
          assert.equal(want.dtype, "float32");
          assert.deepEqual(got, want.data, `${key(ab)} differs`);
          values += got.length;
        }
      }
      assert.ok(modules >= 1 && values > 0);
      assert.equal(modules * 2, [...tensors.keys()].filter((k) => /\.lora_[AB]\.weight$/.test(k)).length, "every adapted module was checked");
    });
  }
});
