import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { loadSafetensors } from "../io/safetensors.js";
import { loadModel } from "../models/load.js";
import { modelInfo } from "../peft/model-info.js";
import { fixturePath } from "./paths.js";
import { Rng } from "./rng.js";
import { TorchGenerator, fmaFloat32, kaimingUniformBound } from "./torch-generator.js";

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

  test("fmaFloat32 rounds a·b + c once, like a fused multiply-add (exact BigInt reference), including sums that land on a float32 midpoint in float64", () => {
    // every float32 is an integer multiple of 2^-149
    const big = (v: number) => BigInt(v * 2 ** 149);
    const exact = (a: number, b: number, c: number): number => {
      const S = big(a) * big(b) + big(c) * 2n ** 149n; // (a·b + c)·2^298
      if (S === 0n) return 0;
      const neg = S < 0n;
      const m = neg ? -S : S;
      const ulpExp = Math.max(m.toString(2).length - 24 - 298, -149);
      const shift = BigInt(ulpExp + 298);
      let q = m >> shift;
      const rest = m - (q << shift);
      const half = 1n << (shift - 1n);
      if (rest > half || (rest === half && (q & 1n) === 1n)) q += 1n;
      const v = Number(q) * 2 ** ulpExp;
      return neg ? -v : v;
    };
    // 1 + 2^-24 is the midpoint between 1 and 1 + 2^-23; a·b = 2^-24 + 2^-60 lifts the exact sum just above it
    const a = Math.fround(1 + 2 ** -12);
    const b = Math.fround(2 ** -24 * (1 - 2 ** -12 + 2 ** -24));
    assert.equal(Math.fround(a * b + 1), 1, "two roundings (float64, then float32) land on the midpoint and round to even");
    assert.equal(fmaFloat32(a, b, 1), Math.fround(1 + 2 ** -23));
    assert.equal(fmaFloat32(-a, b, -1), -Math.fround(1 + 2 ** -23));
    assert.equal(fmaFloat32(a, -b, 1), exact(a, -b, 1));
    const rng = new Rng(3);
    const f = (scale: number) => Math.fround((rng.uniform() * 2 - 1) * scale);
    for (let i = 0; i < 20000; i++) {
      const x = Math.fround(rng.int(2 ** 24) * 2 ** -24);
      const [p, q] = i % 2 ? [x, f(2)] : [f(2 ** rng.int(40) * 2 ** -20), f(2 ** rng.int(40) * 2 ** -20)];
      const c = f(2 ** rng.int(60) * 2 ** -30);
      assert.equal(fmaFloat32(p, q, c), exact(p, q, c), `${p}·${q} + ${c}`);
    }
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
          // a fresh nn.Linear(in, out) (init_lora_weights=False keeps it): kaiming_uniform_(a=√5), i.e. U(±1/√in)
          const bound = kaimingUniformBound(inn, Math.sqrt(5));
          const got = g.uniform(out * inn, -bound, bound);
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
