import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { ConfigError, ShapeMismatchError, UnknownMergeMethodError } from "../errors.js";
import { loadSafetensors } from "../io/safetensors.js";
import { toFloat32 } from "../tensor.js";
import { fixturePath } from "../util/paths.js";
import { matmul } from "./svd.js";
import { type CombinationType, type LoraFactors, type WeightedAdapterSource, addWeightedAdapter } from "./weighted-adapter.js";

function mulberry32(seed: number): { uniform(): number } {
  let a = seed >>> 0;
  return {
    uniform() {
      a = (a + 0x6d2b79f5) >>> 0;
      let t = a;
      t = Math.imul(t ^ (t >>> 15), t | 1);
      t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    },
  };
}

interface AdapterConfigJson {
  r: number;
  lora_alpha: number;
  use_rslora?: boolean;
  rank_pattern?: Record<string, number>;
  alpha_pattern?: Record<string, number>;
  target_modules: string[] | string;
}

/** PEFT's get_pattern_key: the first pattern p with re.match(rf"(.*\.)?({p})$", key). */
function patternValue(pattern: Record<string, number> | undefined, key: string): number | undefined {
  for (const [p, v] of Object.entries(pattern ?? {})) if (new RegExp(`^(.*\\.)?(${p})$`).test(key)) return v;
  return undefined;
}

/** Test-local loader of a PEFT LoRA adapter folder into weighted-adapter sources. */
function loadAdapter(dir: string): { source: WeightedAdapterSource; config: AdapterConfigJson } {
  const config = JSON.parse(readFileSync(join(dir, "adapter_config.json"), "utf8")) as AdapterConfigJson;
  const { tensors } = loadSafetensors(join(dir, "adapter_model.safetensors"));
  const modules = new Map<string, LoraFactors>();
  for (const [key, a] of tensors) {
    if (!key.endsWith(".lora_A.weight")) continue;
    const name = key.slice(0, -".lora_A.weight".length);
    const b = tensors.get(`${name}.lora_B.weight`);
    assert.ok(b, `${name}.lora_B.weight`);
    const moduleKey = name.replace(/^base_model\.model\./, "");
    const r = patternValue(config.rank_pattern, moduleKey) ?? config.r;
    const alpha = patternValue(config.alpha_pattern, moduleKey) ?? config.lora_alpha;
    assert.deepEqual(a.shape[0], r);
    modules.set(name, {
      A: toFloat32(a),
      B: toFloat32(b),
      r,
      inFeatures: a.shape[1]!,
      outFeatures: b.shape[0]!,
      scaling: config.use_rslora ? alpha / Math.sqrt(r) : alpha / r,
    });
  }
  return { source: { modules, r: config.r, rankPattern: config.rank_pattern ?? {}, targetModules: config.target_modules, name: dir }, config };
}

function delta(f: LoraFactors): Float64Array {
  const d = matmul(f.B, f.A, f.outFeatures, f.r, f.inFeatures);
  return d.map((x) => x * f.scaling);
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

const PARITY: { type: CombinationType; density?: number; svdRank?: number }[] = [
  { type: "linear" },
  { type: "cat" },
  { type: "svd", svdRank: 4 },
  { type: "ties", density: 0.5 },
  { type: "ties_svd", density: 0.5, svdRank: 4 },
  { type: "magnitude_prune", density: 0.5 },
];

for (const arch of ["bert", "gpt2"]) {
  describe(`add_weighted_adapter parity with PEFT 0.21 (${arch})`, () => {
    const a = loadAdapter(fixturePath("peft-parity", arch, "multi_a"));
    const b = loadAdapter(fixturePath("peft-parity", arch, "multi_b"));
    for (const c of PARITY) {
      test(`${c.type}: scaling·B·A equals the fixture's to 1e-4`, () => {
        const res = addWeightedAdapter([a.source, b.source], [0.7, 0.5], {
          combinationType: c.type,
          density: c.density ?? null,
          svdRank: c.svdRank ?? null,
        });
        const ref = loadAdapter(fixturePath("peft-parity", arch, `weighted_${c.type}`));
        assert.equal(res.config.r, ref.config.r);
        assert.equal(res.config.loraAlpha, ref.config.lora_alpha);
        assert.deepEqual(res.config.targetModules, [...(ref.config.target_modules as string[])].sort());
        assert.deepEqual([...res.modules.keys()].sort(), [...ref.source.modules.keys()].sort());
        for (const [name, f] of res.modules) {
          const want = delta(ref.source.modules.get(name)!);
          const diff = maxAbsDiff(delta(f), want);
          assert.ok(diff <= 1e-4, `${name}: max |ΔW − ΔW_ref| = ${diff}`);
          assert.ok(Math.max(...want.map(Math.abs)) > 1e-3, "the reference ΔW is not trivially zero");
        }
      });
    }

    /**
     * Each dare entry is a function of which of the two source entries survived the drop
     * (4 cases); the PEFT fixture and our result must both be one of the 4 candidates everywhere.
     */
    for (const type of ["dare_linear", "dare_ties"] as const) {
      test(`${type}: every entry is one of the drop outcomes, in the fixture and in ours`, () => {
        const density = 0.5;
        const res = addWeightedAdapter([a.source, b.source], [0.7, 0.5], { combinationType: type, density, rng: mulberry32(9) });
        const ref = loadAdapter(fixturePath("peft-parity", arch, `weighted_${type}`));
        assert.equal(res.config.r, 4);
        let kept = 0;
        let total = 0;
        for (const [name, f] of res.modules) {
          const fa = a.source.modules.get(name)!;
          const fb = b.source.modules.get(name)!;
          const ra = ref.source.modules.get(name)!;
          assert.equal(f.A.length, ra.A.length);
          assert.equal(f.B.length, ra.B.length);
          for (const side of ["A", "B"] as const) {
            const wa = Math.sqrt(0.7 * fa.scaling);
            const wb = Math.sqrt(0.5 * fb.scaling);
            for (let k = 0; k < f[side].length; k++) {
              const x = fa[side][k]! / density;
              const y = fb[side][k]! / density;
              const cands = [0, wa * x, wb * y];
              if (type === "dare_linear") cands.push(wa * x + wb * y);
              else {
                // both kept: TIES elects sign(x + y) on unweighted values, averages the agreeing weighted ones
                const s = x + y >= 0 ? 1 : -1;
                const agree = [Math.sign(x) === s ? wa * x : null, Math.sign(y) === s ? wb * y : null].filter((z): z is number => z !== null);
                cands.push(agree.reduce((p, q) => p + q, 0) / Math.max(agree.length, 1));
              }
              for (const [label, val] of [
                ["ours", f[side][k]!],
                ["fixture", ra[side][k]!],
              ] as const) {
                const best = Math.min(...cands.map((cv) => Math.abs(cv - val)));
                assert.ok(best <= 1e-5 * (1 + Math.abs(val)), `${label} ${name}.${side}[${k}] = ${val} is no drop outcome`);
              }
              total++;
              if (Math.abs(f[side][k]! - wa * x) < 1e-6 || Math.abs(f[side][k]! - (wa * x + wb * y)) < 1e-6) kept++;
            }
          }
        }
        if (type === "dare_linear") assert.ok(Math.abs(kept / total - density) < 0.1, `kept fraction of adapter a: ${kept / total}`);
      });
    }
  });
}

function factors(r: number, inF: number, outF: number, scaling: number, seed: number): LoraFactors {
  const rng = mulberry32(seed);
  return {
    A: Float32Array.from({ length: r * inF }, () => rng.uniform() - 0.5),
    B: Float32Array.from({ length: outF * r }, () => rng.uniform() - 0.5),
    r,
    inFeatures: inF,
    outFeatures: outF,
    scaling,
  };
}

describe("add_weighted_adapter semantics", () => {
  const f1 = factors(2, 5, 3, 2, 1);
  const f2 = factors(2, 5, 3, 0.5, 2);
  const src = (f: LoraFactors, name: string, targets: string[] = ["q"]): WeightedAdapterSource => ({ name, modules: new Map([["m", f]]), targetModules: targets });

  test("linear combines A's and B's separately with √|w·s| (sign on A)", () => {
    const res = addWeightedAdapter([src(f1, "x"), src(f2, "y")], [0.8, -1.5], { combinationType: "linear" });
    const c1 = Math.sqrt(0.8 * 2);
    const c2 = Math.sqrt(1.5 * 0.5);
    const A = f1.A.map((v, i) => c1 * v - c2 * f2.A[i]!);
    const B = f1.B.map((v, i) => c1 * v + c2 * f2.B[i]!);
    const got = res.modules.get("m")!;
    assert.ok(maxAbsDiff(got.A, A) < 1e-6 && maxAbsDiff(got.B, B) < 1e-6);
    assert.equal(got.scaling, 1);
    assert.deepEqual(res.config, { r: 2, loraAlpha: 2, useRslora: false, targetModules: ["q"], rankPattern: {}, alphaPattern: {} });
  });

  test("cat gives exactly Σ w·s·B·A with rank Σ r; ranks may differ", () => {
    const f3 = factors(3, 5, 3, 1.5, 3);
    const res = addWeightedAdapter([src(f1, "x", ["q"]), src(f3, "y", ["v", "q"])], [0.8, -1.5], { combinationType: "cat" });
    const got = res.modules.get("m")!;
    assert.equal(got.r, 5);
    const want = delta(f1).map((v, i) => 0.8 * v - 1.5 * delta(f3)[i]!);
    assert.ok(maxAbsDiff(delta(got), want) < 1e-6);
    assert.deepEqual(res.config.targetModules, ["q", "v"]);
  });

  test("svd factorises Σ w·s·B·A (scaling applied once, as in peft 0.21) and clamps on request", () => {
    const res = addWeightedAdapter([src(f1, "x"), src(f2, "y")], [0.8, 0.3], { combinationType: "svd", svdRank: 3 });
    const want = delta(f1).map((v, i) => 0.8 * v + 0.3 * delta(f2)[i]!);
    assert.ok(maxAbsDiff(delta(res.modules.get("m")!), want) < 1e-6, "rank 3 = min(3, 5) ≥ rank of the sum: exact");
    assert.throws(() => addWeightedAdapter([src(f1, "x"), src(f2, "y")], [0.8, 0.3], { combinationType: "svd", svdRank: 4 }), /svd_rank': 4 is above the rank of module 'm' \(a \[3, 5\] layer has rank at most 3\)/);
    const clamped = addWeightedAdapter([src(f1, "x"), src(f2, "y")], [0.8, 0.3], { combinationType: "svd", svdRank: 3, svdClamp: 0.5 });
    const g = clamped.modules.get("m")!;
    const all = [...g.A.slice(0, 3 * 5), ...g.B].map(Math.abs);
    assert.ok(Math.max(...all) < Math.max(...[...res.modules.get("m")!.B].map(Math.abs)));
  });

  test("a single adapter is combined linearly; rsLoRA keeps scaling √r", () => {
    const res = addWeightedAdapter([src(f1, "x")], [0.5], { combinationType: "ties", useRslora: true });
    assert.equal(res.combinationType, "linear");
    const got = res.modules.get("m")!;
    assert.ok(Math.abs(got.scaling - Math.sqrt(2)) < 1e-12);
    const want = delta(f1).map((v) => 0.5 * v);
    assert.ok(maxAbsDiff(delta({ ...got, scaling: 1 }), want) < 1e-6);
  });

  test("modules missing from some adapters and rank_pattern ranks are padded to the new rank", () => {
    const small = factors(1, 5, 3, 1, 4);
    const a: WeightedAdapterSource = { name: "a", modules: new Map([["m", f1], ["n", factors(2, 4, 4, 1, 5)]]), r: 2 };
    const b: WeightedAdapterSource = { name: "b", modules: new Map([["m", f2]]), r: 2 };
    const res = addWeightedAdapter([a, b], [1, 1], { combinationType: "linear" });
    assert.deepEqual([...res.modules.keys()], ["m", "n"]);
    const p: WeightedAdapterSource = { name: "p", modules: new Map([["m", small]]), r: 2, rankPattern: { m: 1 } };
    const res2 = addWeightedAdapter([p, p], [1, 1], { combinationType: "linear" });
    const got = res2.modules.get("m")!;
    assert.equal(got.r, 2);
    assert.equal(got.A.length, 2 * 5);
    assert.ok(got.A.slice(5).every((x) => x === 0));
  });

  test("bad input gives typed errors", () => {
    const f3 = factors(3, 5, 3, 1, 3);
    assert.throws(() => addWeightedAdapter([src(f1, "x"), src(f3, "y")], [1, 1], { combinationType: "linear" }), ConfigError);
    assert.throws(() => addWeightedAdapter([src(f1, "x"), src(f2, "y")], [1], {}), ConfigError);
    assert.throws(() => addWeightedAdapter([src(f1, "x"), src(f2, "y")], [1, 1], { combinationType: "ties" }), (e: unknown) => e instanceof ConfigError && /density/.test(e.message));
    assert.throws(() => addWeightedAdapter([src(f1, "x"), src(f2, "y")], [1, 1], { combinationType: "dare_linear", density: 0.5 }), ConfigError);
    assert.throws(
      () => addWeightedAdapter([src(f1, "x"), src(f2, "y")], [1, 1], { combinationType: "slerp" as CombinationType }),
      UnknownMergeMethodError,
    );
    const wrongIn = factors(2, 6, 3, 1, 6);
    assert.throws(() => addWeightedAdapter([src(f1, "x"), src(wrongIn, "y")], [1, 1], { combinationType: "cat" }), ShapeMismatchError);
    assert.throws(() => addWeightedAdapter([src({ ...f1, A: f1.A.slice(1) }, "x"), src(f2, "y")], [1, 1], {}), ShapeMismatchError);
  });
});
