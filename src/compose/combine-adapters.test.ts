import { after, describe, test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { runCli } from "../cli/main.js";
import { ArgumentError, ConfigError, UnsupportedOptionError } from "../errors.js";
import { loadSafetensors } from "../io/safetensors.js";
import { loadModel } from "../models/load.js";
import { PeftModel } from "../peft/peft-model.js";
import type { Tensor } from "../tensor.js";
import { fixturePath } from "../util/paths.js";
import { addWeightedLoraAdapter, combineAdapterDirs } from "./combine-adapters.js";

const BERT = fixturePath("peft-parity", "bert");
const BASE = join(BERT, "base");
const A = join(BERT, "multi_a");
const B = join(BERT, "multi_b");
const inputs = loadSafetensors(join(BERT, "base.outputs.safetensors")).tensors;
const reference = loadSafetensors(join(BERT, "multi_and_merge.outputs.safetensors")).tensors;

const tmp = mkdtempSync(join(tmpdir(), "peft-combine-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

async function logitsOf(adapterDir: string): Promise<Float32Array> {
  const pm = PeftModel.fromPretrained(loadModel(BASE), adapterDir);
  try {
    const out = await pm.forward({ inputIds: inputs.get("input_ids") as Tensor<"int64">, attentionMask: inputs.get("attention_mask") as Tensor<"int64"> });
    return out.data as Float32Array;
  } finally {
    await pm.dispose();
  }
}

describe("peft combine", () => {
  for (const [type, extra] of [
    ["linear", []],
    ["ties", ["--density", "0.5"]],
    ["cat", []],
    ["magnitude_prune", ["--density", "0.5"]],
    ["svd", ["--svd-rank", "4"]],
  ] as const) {
    test(`--type ${type} of multi_a, multi_b (0.7, 0.5) gives PEFT's logits (≤ 1e-6, logits are ~3e-2)`, async (t) => {
      const out = join(tmp, `w_${type}`);
      const r = await runCli(["combine", "--adapters", `${A},${B}`, "--weights", "0.7,0.5", "--type", type, ...extra, "--base", BASE, "-o", out]);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, new RegExp(`${type} of 2 adapters`));
      const cfg = JSON.parse(readFileSync(join(out, "adapter_config.json"), "utf8")) as Record<string, unknown>;
      assert.equal(cfg.peft_type, "LORA");
      assert.equal(cfg.r, type === "cat" ? 8 : 4);
      assert.equal(cfg.lora_alpha, cfg.r);
      assert.deepEqual(cfg.target_modules, ["query", "value"]);
      const keys = [...loadSafetensors(join(out, "adapter_model.safetensors")).tensors.keys()];
      assert.ok(keys.length === 8 && keys.every((k) => k.startsWith("base_model.model.bert.encoder.layer.")), keys.join(","));
      const got = await logitsOf(out);
      const want = reference.get(`logits_w_${type}`)!.data as Float32Array;
      const d = maxAbsDiff(got, want);
      t.diagnostic(`max |Δlogits| = ${d.toExponential(2)}`);
      assert.ok(d <= 1e-6, `max |Δ| ${d}`);
      // the comparison can fail: the combination's logits differ from either source adapter's by far more
      assert.ok(maxAbsDiff(got, reference.get("logits_a")!.data as Float32Array) > 5e-5);
      assert.ok(maxAbsDiff(got, reference.get("logits_b")!.data as Float32Array) > 5e-5);
    });
  }

  test("a mismatched weight count is a ConfigError naming --weights; nothing is written", async () => {
    const out = join(tmp, "never");
    const r = await runCli(["combine", "--adapters", `${A},${B}`, "--weights", "0.7", "--type", "linear", "--base", BASE, "-o", out]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /PEFT_ERR_CONFIG.*--weights/);
    assert.equal(existsSync(out), false);
  });

  test("ties without --density is a ConfigError; an unknown --type is refused by the parser", async () => {
    assert.throws(() => combineAdapterDirs({ base: BASE, adapters: [A, B], weights: [1, 1], combinationType: "ties", outDir: join(tmp, "x") }), ConfigError);
    const r = await runCli(["combine", "--adapters", `${A},${B}`, "--weights", "1,1", "--type", "bogus", "--base", BASE, "-o", join(tmp, "y")]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /bogus/);
  });

  test("a failed combine leaves an existing output folder untouched", () => {
    const out = join(tmp, "keep");
    combineAdapterDirs({ base: BASE, adapters: [A, B], weights: [0.7, 0.5], combinationType: "linear", outDir: out });
    const before = readFileSync(join(out, "adapter_model.safetensors"));
    assert.throws(() => combineAdapterDirs({ base: BASE, adapters: [A, B], weights: [0.7, Number.NaN], combinationType: "linear", outDir: out }), ArgumentError);
    assert.deepEqual(readFileSync(join(out, "adapter_model.safetensors")), before);
    assert.deepEqual(readdirSync(out).sort(), ["adapter_config.json", "adapter_model.safetensors"]);
  });

  test("onModule reports each module once, in order, counting 1…total (what peft combine's progress bar draws)", () => {
    const calls: [string, number, number][] = [];
    const out = join(tmp, "progress");
    const r = combineAdapterDirs({ base: BASE, adapters: [A, B], weights: [0.7, 0.5], combinationType: "svd", svdRank: 4, outDir: out, onModule: (m, i, total) => void calls.push([m, i, total]) });
    const written = new Set([...loadSafetensors(join(out, "adapter_model.safetensors")).tensors.keys()].map((k) => k.replace(/^base_model\.model\./, "").replace(/\.lora_[AB]\.weight$/, "")));
    assert.equal(r.modules, 4);
    assert.deepEqual(calls.map((c) => c[1]), [1, 2, 3, 4]);
    assert.ok(calls.every((c) => c[2] === r.modules), "the total is known from the first call");
    assert.deepEqual(new Set(calls.map((c) => c[0])), written, "one call per module written");
  });

  test("non-LoRA adapters are refused", () => {
    assert.throws(() => combineAdapterDirs({ base: BASE, adapters: [join(BERT, "ia3"), A], weights: [1, 1], combinationType: "linear", outDir: join(tmp, "ia3") }), UnsupportedOptionError);
  });

  test("two adapters saving the same module cannot be combined (as in PEFT)", () => {
    const pm = PeftModel.fromPretrained(loadModel(BASE), join(BERT, "lora"), { adapterName: "x" });
    pm.loadAdapter(join(BERT, "lora"), "y");
    assert.ok(pm.adapter("x").config.modulesToSave.length > 0, "fixture 'lora' saves its classifier");
    assert.throws(() => addWeightedLoraAdapter(pm, ["x", "y"], [1, 1], "z", { combinationType: "linear" }), /modules_to_save/);
    // one saving adapter is fine: the new adapter's copy starts from the base module, as PEFT does
    const { adapter } = addWeightedLoraAdapter(pm, ["x"], [0.5], "single", { combinationType: "linear" });
    const head = adapter.tensors.get("classifier.weight")!;
    assert.deepEqual(head.data, pm.base.weights.get("classifier.weight").data);
  });

  test("adapter validation: a folder for another architecture is refused before combining", () => {
    const bad = join(tmp, "gpt2-adapter");
    const dir = fixturePath("peft-parity", "gpt2", "lora");
    rmSync(bad, { recursive: true, force: true });
    assert.ok(existsSync(dir));
    assert.throws(() => combineAdapterDirs({ base: BASE, adapters: [A, dir], weights: [1, 1], combinationType: "linear", outDir: bad }));
    assert.equal(existsSync(bad), false);
  });
});
