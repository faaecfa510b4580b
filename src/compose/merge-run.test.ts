import { after, describe, test } from "node:test";
import assert from "node:assert/strict";
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { runCli } from "../cli/main.js";
import { ConfigError } from "../errors.js";
import { loadSafetensors, saveSafetensors } from "../io/safetensors.js";
import { loadModel } from "../models/load.js";
import { PeftModel } from "../peft/peft-model.js";
import { type Tensor, halfToFloat, tensor, toFloat32, toFloat64 } from "../tensor.js";
import { loraDeltaWeight } from "../tuners/lora/merge.js";
import { fixturePath } from "../util/paths.js";
import { Rng } from "../util/rng.js";
import { parseMergeConfigYaml } from "./merge-config.js";
import { runMergeConfig } from "./merge-run.js";
import { mergeTaskTensors } from "./methods.js";
import { PEFT_TS_VERSION } from "../util/version.js";

const BERT = fixturePath("peft-parity", "bert");
const BASE = join(BERT, "base");
const tmp = mkdtempSync(join(tmpdir(), "peft-merge-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

const baseTensors = loadSafetensors(join(BASE, "model.safetensors")).tensors;
const inputs = loadSafetensors(join(BERT, "base.outputs.safetensors")).tensors;

/** A "fine-tuned" copy of the fixture base: every float tensor plus seeded noise (std 0.02). */
function fineTuned(name: string, seed: number): string {
  const dir = join(tmp, name);
  mkdirSync(dir, { recursive: true });
  copyFileSync(join(BASE, "config.json"), join(dir, "config.json"));
  const rng = new Rng(seed);
  const out = new Map<string, Tensor>();
  for (const [k, t] of baseTensors) {
    if (t.dtype !== "float32") out.set(k, t);
    else out.set(k, tensor("float32", t.shape, Float32Array.from(t.data as Float32Array, (v) => v + 0.02 * rng.normal())));
  }
  saveSafetensors(join(dir, "model.safetensors"), out);
  return dir;
}

const FT_A = fineTuned("ft_a", 1);
const FT_B = fineTuned("ft_b", 2);
const tensorsOf = (dir: string) => loadSafetensors(join(dir, "model.safetensors")).tensors;
/** A merged model's tensors; its file records peft-ts as the writer. */
const mergedTensorsOf = (dir: string) => {
  const { tensors, metadata } = loadSafetensors(join(dir, "model.safetensors"));
  assert.equal(metadata.peft_ts_version, PEFT_TS_VERSION, "the writer is recorded");
  return tensors;
};
const A = tensorsOf(FT_A);
const B = tensorsOf(FT_B);

function writeYaml(name: string, text: string): string {
  const p = join(tmp, name);
  writeFileSync(p, text);
  return p;
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

function tau(ft: Map<string, Tensor>, k: string): Tensor {
  const b = toFloat64(baseTensors.get(k)!);
  const x = toFloat64(ft.get(k)!);
  return tensor("float64", baseTensors.get(k)!.shape, Float64Array.from(x, (v, i) => v - b[i]!));
}

async function logits(pm: PeftModel): Promise<Float32Array> {
  const out = await pm.forward({ inputIds: inputs.get("input_ids") as Tensor<"int64">, attentionMask: inputs.get("attention_mask") as Tensor<"int64"> });
  return out.data as Float32Array;
}

describe("peft merge: full models", () => {
  test("ties: every float tensor is θ_base + ties(τ_a, τ_b); the base listed under models is not a task vector", async () => {
    const cfg = writeYaml(
      "ties.yml",
      `merge_method: ties\nbase_model: ${BASE}\nmodels:\n  - model: ${BASE}\n  - model: ${FT_A}\n    parameters: { weight: 0.7, density: 0.5 }\n  - model: ${FT_B}\n    parameters: { weight: 0.5 }\nparameters: { density: 0.3 }\n`,
    );
    const out = join(tmp, "out_ties");
    const r = await runCli(["merge", cfg, "-o", out]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /wrote model/);
    const got = mergedTensorsOf(out);
    assert.deepEqual([...got.keys()].sort(), [...baseTensors.keys()].sort());
    assert.deepEqual(JSON.parse(readFileSync(join(out, "config.json"), "utf8")).model_type, "bert");
    let checked = 0;
    for (const [k, b] of baseTensors) {
      if (b.dtype !== "float32") {
        assert.deepEqual(got.get(k)!.data, b.data);
        continue;
      }
      const merged = mergeTaskTensors("ties", [tau(A, k), tau(B, k)], { perModel: [{ weight: 0.7, density: 0.5 }, { weight: 0.5, density: 0.3 }] });
      const bd = toFloat32(b);
      const want = Float32Array.from(merged.data, (v, i) => v + bd[i]!);
      assert.ok(maxAbsDiff(toFloat32(got.get(k)!), want) <= 1e-6, k);
      checked++;
    }
    assert.ok(checked > 20);
    // the merged model loads and runs
    const pm = new PeftModel(loadModel(out));
    const l = await logits(pm);
    assert.ok(l.every(Number.isFinite));
    await pm.dispose();
  });

  test("task_arithmetic with normalize: Σ w_i τ_i / Σ w_i over the fine-tuned models only", () => {
    const cfg = parseMergeConfigYaml(
      `merge_method: task_arithmetic\nbase_model: ${BASE}\nmodels:\n  - model: ${BASE}\n  - model: ${FT_A}\n    parameters: { weight: 0.7 }\n  - model: ${FT_B}\n    parameters: { weight: 0.5 }\nparameters: { normalize: true }\n`,
      "ta.yml",
    );
    const out = join(tmp, "out_ta");
    runMergeConfig(cfg, { outDir: out });
    const got = mergedTensorsOf(out);
    const k = "bert.encoder.layer.0.attention.self.query.weight";
    const b = toFloat64(baseTensors.get(k)!);
    const [ta, tb] = [toFloat64(tau(A, k)), toFloat64(tau(B, k))];
    const want = b.map((v, i) => v + (0.7 * ta[i]! + 0.5 * tb[i]!) / 1.2);
    assert.ok(maxAbsDiff(toFloat32(got.get(k)!), want) <= 1e-6);
  });

  test("linear (no base model): the weighted average of the models, or their weighted sum without normalize", () => {
    for (const normalize of [true, false]) {
      const out = join(tmp, `out_linear_${normalize}`);
      runMergeConfig(
        parseMergeConfigYaml(`merge_method: linear\nmodels:\n  - model: ${FT_A}\n    parameters: { weight: 0.7 }\n  - model: ${FT_B}\n    parameters: { weight: 0.5 }\nparameters: { normalize: ${normalize} }\n`, "lin.yml"),
        { outDir: out },
      );
      const got = mergedTensorsOf(out);
      for (const k of ["bert.embeddings.word_embeddings.weight", "classifier.bias"]) {
        const [a, b] = [toFloat64(A.get(k)!), toFloat64(B.get(k)!)];
        const want = a.map((v, i) => (0.7 * v + 0.5 * b[i]!) / (normalize ? 1.2 : 1));
        assert.ok(maxAbsDiff(toFloat32(got.get(k)!), want) <= 1e-6, `${k} normalize=${normalize}`);
      }
    }
  });

  test("dtype float16 stores every float tensor as float16 and records it in config.json", () => {
    const out = join(tmp, "out_f16");
    runMergeConfig(
      parseMergeConfigYaml(`merge_method: task_arithmetic\nbase_model: ${BASE}\nmodels:\n  - model: ${FT_A}\n    parameters: { weight: 1 }\ndtype: float16\n`, "f16.yml"),
      { outDir: out },
    );
    const got = mergedTensorsOf(out);
    for (const [k, b] of baseTensors) assert.equal(got.get(k)!.dtype, b.dtype === "float32" ? "float16" : b.dtype, k);
    const k = "bert.encoder.layer.1.output.dense.weight";
    const f16 = Float32Array.from(got.get(k)!.data as Uint16Array, halfToFloat);
    // weight 1: the result is the fine-tuned tensor, rounded to float16
    assert.ok(maxAbsDiff(f16, toFloat32(A.get(k)!)) <= 1e-3);
    // transformers 5 writes "dtype" (older releases "torch_dtype"): the key the base uses is updated
    const conf = JSON.parse(readFileSync(join(out, "config.json"), "utf8")) as Record<string, unknown>;
    assert.equal(conf.dtype, "float16");
    assert.equal(conf.torch_dtype, undefined);
  });

  test("a missing model folder is a ConfigError naming models[i].model; nothing is written", () => {
    const out = join(tmp, "out_missing");
    const cfg = parseMergeConfigYaml(`merge_method: ties\nbase_model: ${BASE}\nmodels:\n  - model: ${FT_A}\n  - model: ${join(tmp, "nope")}\n`, "m.yml");
    assert.throws(
      () => runMergeConfig(cfg, { outDir: out }),
      (e: unknown) => e instanceof ConfigError && e.path === "models[1].model",
    );
    assert.equal(existsSync(out), false);
  });

  test("the CLI reports bad configs with the key and prints warnings", async () => {
    const bad = writeYaml("bad.yml", `merge_method: ties\nbase_model: ${BASE}\nmodels:\n  - model: ${FT_A}\n    parameters: { weight: heavy }\n`);
    const r = await runCli(["merge", bad, "-o", join(tmp, "out_bad")]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /PEFT_ERR_CONFIG.*models\[0\]\.parameters\.weight/);
    const warn = writeYaml("warn.yml", `merge_method: task_arithmetic\nbase_model: ${BASE}\nmodels:\n  - model: ${FT_A}\ntokenizer_source: union\n`);
    const w = await runCli(["merge", warn, "-o", join(tmp, "out_warn")]);
    assert.equal(w.code, 0, w.stderr);
    assert.match(w.stderr, /warning: .*tokenizer_source/);
  });
});

describe("peft merge: LoRA adapters", () => {
  const MA = join(BERT, "multi_a");
  const MB = join(BERT, "multi_b");

  function deltas(dir: string): Map<string, Float64Array> {
    const pm = PeftModel.fromPretrained(loadModel(BASE), dir);
    const a = pm.adapter("default");
    const scaling = (a.config as unknown as { loraAlpha: number; r: number }).loraAlpha / (a.config as unknown as { r: number }).r;
    const out = new Map<string, Float64Array>();
    for (const [k, t] of a.tensors) {
      if (!k.endsWith(".lora_A.weight")) continue;
      const m = k.slice(0, -".lora_A.weight".length);
      out.set(m, loraDeltaWeight(t, a.tensors.get(`${m}.lora_B.weight`)!, scaling));
    }
    return out;
  }

  test("task_arithmetic of two adapters is an adapter whose ΔW = 0.7·ΔW_a + 0.5·ΔW_b, and equals the full-model merge", async () => {
    const cfg = writeYaml("lora_ta.yml", `merge_method: task_arithmetic\nbase_model: ${BASE}\nmodels:\n  - model: ${MA}\n    parameters: { weight: 0.7 }\n  - model: ${MB}\n    parameters: { weight: 0.5 }\n`);
    const out = join(tmp, "lora_ta");
    const r = await runCli(["merge", cfg, "-o", out]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /wrote adapter/);
    const conf = JSON.parse(readFileSync(join(out, "adapter_config.json"), "utf8")) as Record<string, unknown>;
    assert.equal(conf.r, 8);
    assert.equal(conf.lora_alpha, 8);
    const [da, db, dm] = [deltas(MA), deltas(MB), deltas(out)];
    assert.equal(dm.size, 4);
    for (const [m, d] of dm) {
      const want = da.get(m)!.map((v, i) => 0.7 * v + 0.5 * db.get(m)![i]!);
      assert.ok(maxAbsDiff(d, want) <= 1e-6, m);
    }
    // the same merge on full models (each adapter merged into the base) gives the same logits
    const dirs = [MA, MB].map((d, i) => {
      const dir = join(tmp, `unloaded_${i}`);
      mkdirSync(dir, { recursive: true });
      copyFileSync(join(BASE, "config.json"), join(dir, "config.json"));
      const m = PeftModel.fromPretrained(loadModel(BASE), d).mergeAndUnload();
      saveSafetensors(join(dir, "model.safetensors"), new Map(m.weights.keys().map((k) => [k, m.weights.get(k)])));
      return dir;
    });
    const full = join(tmp, "full_ta");
    runMergeConfig(parseMergeConfigYaml(`merge_method: task_arithmetic\nbase_model: ${BASE}\nmodels:\n  - model: ${dirs[0]}\n    parameters: { weight: 0.7 }\n  - model: ${dirs[1]}\n    parameters: { weight: 0.5 }\n`, "f.yml"), { outDir: full });
    const viaAdapter = PeftModel.fromPretrained(loadModel(BASE), out);
    const viaModel = new PeftModel(loadModel(full));
    const [la, lm] = [await logits(viaAdapter), await logits(viaModel)];
    assert.ok(maxAbsDiff(la, lm) <= 1e-6);
    assert.ok(maxAbsDiff(la, inputs.get("logits")!.data as Float32Array) > 5e-5, "the merge changes the base logits");
    await viaAdapter.dispose();
    await viaModel.dispose();
  });

  test("ties on adapters with lora_rank = full rank reproduces ties on the ΔW exactly", () => {
    const out = join(tmp, "lora_ties");
    runMergeConfig(
      parseMergeConfigYaml(`merge_method: ties\nbase_model: ${BASE}\nlora_rank: 32\nmodels:\n  - model: ${MA}\n    parameters: { weight: 0.7, density: 0.5 }\n  - model: ${MB}\n    parameters: { weight: 0.5, density: 0.5 }\n`, "t.yml"),
      { outDir: out },
    );
    const [da, db, dm] = [deltas(MA), deltas(MB), deltas(out)];
    for (const [m, d] of dm) {
      const t = (x: Float64Array) => tensor("float64", [32, 32], x);
      const want = mergeTaskTensors("ties", [t(da.get(m)!), t(db.get(m)!)], { perModel: [{ weight: 0.7, density: 0.5 }, { weight: 0.5, density: 0.5 }] });
      assert.ok(maxAbsDiff(d, want.data) <= 1e-5, m);
    }
  });

  test("adapters and full models cannot be mixed; adapters need base_model", () => {
    assert.throws(
      () => runMergeConfig(parseMergeConfigYaml(`merge_method: ties\nbase_model: ${BASE}\nmodels:\n  - model: ${MA}\n  - model: ${FT_A}\n`, "x.yml"), { outDir: join(tmp, "mix") }),
      (e: unknown) => e instanceof ConfigError && e.path === "models",
    );
    assert.throws(
      () => runMergeConfig(parseMergeConfigYaml(`merge_method: linear\nmodels:\n  - model: ${MA}\n  - model: ${MB}\n`, "y.yml"), { outDir: join(tmp, "nobase") }),
      (e: unknown) => e instanceof ConfigError && e.path === "base_model",
    );
  });
});
