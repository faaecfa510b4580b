/**
 * Bad adapters and bad calls: each raises its typed error naming the key, module or file, and a
 * failed load or save changes nothing on disk (listings, sizes, mtimes and bytes compared) and
 * nothing in the PeftModel.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { cpSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, truncateSync, unlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import {
  AdapterMismatchError,
  AdapterNameError,
  AdapterStateError,
  ConfigError,
  MissingFileError,
  PeftError,
  SafetensorsFormatError,
  ShapeMismatchError,
  TensorDataError,
  UnknownTunerError,
  UnsupportedOptionError,
} from "../errors.js";
import { loadSafetensors, saveSafetensors } from "../io/safetensors.js";
import { loadModel } from "../models/load.js";
import type { Tensor } from "../tensor.js";
import { fixturePath } from "../util/paths.js";
import { PeftModel } from "./peft-model.js";

const tmpRoot = mkdtempSync(join(tmpdir(), "peft-bad-input-"));
let count = 0;
after(() => rmSync(tmpRoot, { recursive: true, force: true }));

const fx = (...p: string[]): string => fixturePath("peft-parity", ...p);
const llama = loadModel(fx("llama", "base"));
const gpt2 = loadModel(fx("gpt2", "base"));
const bert = loadModel(fx("bert", "base"));

/** A private copy of a fixture adapter folder, optionally edited. */
function copyAdapter(arch: string, name: string): string {
  const dir = join(tmpRoot, `${arch}-${name}-${count++}`);
  cpSync(fx(arch, name), dir, { recursive: true });
  return dir;
}

function editConfig(dir: string, edit: (raw: Record<string, unknown>) => void): void {
  const file = join(dir, "adapter_config.json");
  const raw = JSON.parse(readFileSync(file, "utf8")) as Record<string, unknown>;
  edit(raw);
  writeFileSync(file, JSON.stringify(raw, null, 2));
}

/** Every file under `dir`: size, mtime and a hash of its bytes. */
function snapshot(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (d: string, rel: string): void => {
    for (const name of readdirSync(d).sort()) {
      const p = join(d, name);
      const st = statSync(p);
      if (st.isDirectory()) walk(p, `${rel}${name}/`);
      else out[`${rel}${name}`] = `${st.size} ${st.mtimeMs} ${createHash("sha256").update(readFileSync(p)).digest("hex")}`;
    }
  };
  walk(dir, "");
  return out;
}

/**
 * `fn` throws an instance of `cls` whose message contains every `mentions` string; the folder
 * `watch` is byte-for-byte the same afterwards. Returns the error for further checks.
 */
function rejects<E extends PeftError>(cls: abstract new (...a: never[]) => E, fn: () => unknown, mentions: readonly string[], watch?: string): E {
  const before = watch ? snapshot(watch) : null;
  let caught: unknown = null;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  assert.ok(caught instanceof cls, `expected ${cls.name}, got ${caught instanceof Error ? `${caught.name}: ${caught.message}` : String(caught)}`);
  for (const m of mentions) assert.ok(caught.message.includes(m), `message ${JSON.stringify(caught.message)} should mention ${JSON.stringify(m)}`);
  assert.match(caught.code, /^PEFT_ERR_[A-Z0-9_]+$/u);
  if (watch) assert.deepEqual(snapshot(watch), before, `${watch} was modified by a failed call`);
  return caught;
}

/** A PeftModel with one good adapter, to check that failed loads leave it as it was. */
function withGoodAdapter(): PeftModel {
  return PeftModel.fromPretrained(llama, fx("llama", "lora"), { adapterName: "good" });
}

function assertUnchanged(pm: PeftModel): void {
  assert.deepEqual(pm.adapterNames, ["good"]);
  assert.deepEqual(pm.activeAdapters, ["good"]);
}

describe("loading a bad adapter", () => {
  test("an adapter for another architecture: no matching module", () => {
    const dir = copyAdapter("gpt2", "lora");
    const pm = withGoodAdapter();
    const e = rejects(ConfigError, () => pm.loadAdapter(dir, "other"), ["target_modules", "llama", "c_attn", "q_proj"], dir);
    assert.equal(e.path, "target_modules");
    assert.equal(e.file, join(dir, "adapter_config.json"));
    assertUnchanged(pm);
    rejects(ConfigError, () => PeftModel.fromPretrained(gpt2, fx("llama", "lora")), ["gpt2", "q_proj", fx("llama", "lora", "adapter_config.json")]);
    const made = rejects(ConfigError, () => pm.addAdapter("other", { peft_type: "IA3", target_modules: ["c_attn"] }), ["config of adapter 'other'", "c_attn"]);
    assert.equal(made.path, "target_modules");
    assertUnchanged(pm);
  });

  test("a tensor for a module the base does not have", () => {
    const dir = copyAdapter("llama", "lora");
    const file = join(dir, "adapter_model.safetensors");
    const t = loadSafetensors(file).tensors;
    t.set("base_model.model.model.layers.7.self_attn.q_proj.lora_A.weight", t.get("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight")!);
    saveSafetensors(file, t, { format: "pt" });
    const pm = withGoodAdapter();
    const e = rejects(AdapterMismatchError, () => pm.loadAdapter(dir, "other"), ["model.layers.7.self_attn.q_proj.lora_A.weight", file, "llama"], dir);
    assert.equal(e.file, file);
    assertUnchanged(pm);
  });

  test("a lora_A whose in-features do not match the base", () => {
    const dir = copyAdapter("llama", "lora");
    const file = join(dir, "adapter_model.safetensors");
    const t = loadSafetensors(file).tensors;
    const key = "model.layers.1.self_attn.v_proj.lora_A.weight";
    t.set(`base_model.model.${key}`, { dtype: "float32", shape: [4, 31], data: new Float32Array(4 * 31).fill(0.5) });
    saveSafetensors(file, t, { format: "pt" });
    const pm = withGoodAdapter();
    const e = rejects(ShapeMismatchError, () => pm.loadAdapter(dir, "other"), [key, "[4, 32]", "[4, 31]", file], dir);
    assert.equal(e.key, key);
    assert.deepEqual([...e.expected], [4, 32]);
    assert.deepEqual([...e.actual], [4, 31]);
    assertUnchanged(pm);
  });

  test("a missing adapter_model.safetensors (and a pickle-only adapter)", () => {
    const dir = copyAdapter("llama", "lora");
    const file = join(dir, "adapter_model.safetensors");
    unlinkSync(file);
    const pm = withGoodAdapter();
    const e = rejects(MissingFileError, () => pm.loadAdapter(dir, "other"), [file], dir);
    assert.equal(e.file, file);
    writeFileSync(join(dir, "adapter_model.bin"), "not read");
    rejects(MissingFileError, () => pm.loadAdapter(dir, "other"), [file, "adapter_model.bin", "safetensors"], dir);
    rejects(MissingFileError, () => pm.loadAdapter(join(tmpRoot, "no-such-folder"), "other"), ["no-such-folder"]);
    assertUnchanged(pm);
  });

  test("a truncated adapter_model.safetensors", () => {
    const dir = copyAdapter("llama", "lora");
    const file = join(dir, "adapter_model.safetensors");
    truncateSync(file, Math.floor(statSync(file).size / 2));
    const pm = withGoodAdapter();
    const e = rejects(SafetensorsFormatError, () => pm.loadAdapter(dir, "other"), [file], dir);
    assert.equal(e.file, file);
    truncateSync(file, 5); // shorter than the 8-byte header length
    rejects(SafetensorsFormatError, () => pm.loadAdapter(dir, "other"), [file], dir);
    assertUnchanged(pm);
  });

  test("an unknown peft_type", () => {
    const dir = copyAdapter("llama", "lora");
    editConfig(dir, (raw) => (raw.peft_type = "FANCY_NEW_METHOD"));
    const pm = withGoodAdapter();
    const e = rejects(UnknownTunerError, () => pm.loadAdapter(dir, "other"), ["FANCY_NEW_METHOD", join(dir, "adapter_config.json"), "LORA", "IA3", "PROMPT_TUNING"], dir);
    assert.equal(e.peftType, "FANCY_NEW_METHOD");
    rejects(UnknownTunerError, () => PeftModel.create(llama, { peft_type: "VBLORA", target_modules: ["q_proj"] }), ["VBLORA"]);
    assertUnchanged(pm);
  });

  test("an unknown config key", () => {
    const dir = copyAdapter("llama", "lora");
    editConfig(dir, (raw) => (raw.lora_dropuot = 0.1));
    const pm = withGoodAdapter();
    const e = rejects(ConfigError, () => pm.loadAdapter(dir, "other"), ["lora_dropuot", join(dir, "adapter_config.json")], dir);
    assert.equal(e.path, "lora_dropuot");
    assert.equal(e.file, join(dir, "adapter_config.json"));
    rejects(ConfigError, () => PeftModel.create(llama, { peft_type: "IA3", target_modules: ["q_proj"], scaling: 2 }), ["scaling"]);
    assertUnchanged(pm);
  });

  const UNSUPPORTED: readonly [string, unknown][] = [
    ["use_qalora", true],
    ["lora_bias", true],
    ["init_lora_weights", "eva"],
    ["init_lora_weights", "corda"],
    ["layer_replication", [[0, 1]]],
    ["trainable_token_indices", [1, 2]],
  ];
  test("the same options at their defaults are accepted (control)", () => {
    const config = { peft_type: "LORA", r: 4, target_modules: ["q_proj", "v_proj"], use_qalora: false, lora_bias: false, init_lora_weights: true, layer_replication: null, trainable_token_indices: null };
    assert.equal(PeftModel.create(llama, config).adapter("default").tensors.size, 8);
  });
  for (const [option, value] of UNSUPPORTED) {
    test(`${option} = ${JSON.stringify(value)} → UnsupportedOptionError naming the option`, () => {
      const config = { peft_type: "LORA", r: 4, target_modules: ["q_proj", "v_proj"], [option]: value };
      const e = rejects(UnsupportedOptionError, () => PeftModel.create(llama, config), [option]);
      assert.equal(e.option, option);
      assert.deepEqual(e.value, value);
      const dir = copyAdapter("llama", "lora");
      editConfig(dir, (raw) => (raw[option] = value));
      const pm = withGoodAdapter();
      const f = rejects(UnsupportedOptionError, () => pm.loadAdapter(dir, "other"), [option, join(dir, "adapter_config.json")], dir);
      assert.equal(f.file, join(dir, "adapter_config.json"));
      assertUnchanged(pm);
    });
  }

  test("prompt tuning options peft-ts does not implement", () => {
    rejects(UnsupportedOptionError, () => PeftModel.create(gpt2, { peft_type: "PROMPT_TUNING", num_virtual_tokens: 2, prompt_tuning_init: "TEXT", prompt_tuning_init_text: "hi" }), ["prompt_tuning_init", "TEXT"]);
    const dir = copyAdapter("gpt2", "prompt_tuning");
    editConfig(dir, (raw) => (raw.num_transformer_submodules = 2));
    rejects(UnsupportedOptionError, () => PeftModel.fromPretrained(gpt2, dir), ["num_transformer_submodules"], dir);
  });
});

describe("adapter names", () => {
  const BAD = ["a/b", "a\\b", "..", "../escape", "x..y", "", "__base__"];
  for (const name of BAD) {
    test(`${JSON.stringify(name)} is refused everywhere, and nothing is written`, () => {
      const dir = copyAdapter("llama", "lora");
      const pm = withGoodAdapter();
      rejects(AdapterNameError, () => pm.loadAdapter(dir, name), [JSON.stringify(name)], dir);
      rejects(AdapterNameError, () => pm.addAdapter(name, { peft_type: "LORA", target_modules: ["q_proj"] }), [JSON.stringify(name)]);
      rejects(AdapterNameError, () => PeftModel.fromPretrained(llama, dir, { adapterName: name }), [JSON.stringify(name)], dir);
      rejects(AdapterNameError, () => PeftModel.create(llama, { peft_type: "LORA", target_modules: ["q_proj"] }, name), [JSON.stringify(name)]);
      assertUnchanged(pm);
      const out = join(tmpRoot, `save-${count++}`);
      mkdirSync(out);
      pm.savePretrained(out, { selectedAdapters: ["good"] });
      rejects(AdapterNameError, () => pm.savePretrained(out, { selectedAdapters: [name] }), [JSON.stringify(name)], tmpRoot);
      rejects(AdapterNameError, () => pm.savePretrained(out, { selectedAdapters: ["good", name] }), [JSON.stringify(name)], out);
    });
  }
});

describe("failed saves leave the disk as it was", () => {
  test("a corrupt tensor: no file replaced, no temporary file left, even when another adapter was fine", () => {
    const pm = PeftModel.fromPretrained(gpt2, fx("gpt2", "multi_a"));
    pm.loadAdapter(fx("gpt2", "multi_b"), "b");
    const out = join(tmpRoot, `save-${count++}`);
    pm.savePretrained(out);
    // make the saved "default" different from the in-memory one, so a rewrite would show
    pm.updateAdapterTensors("default", new Map([...pm.adapter("default").tensors].map(([k, t]) => [k, { ...t, data: Float32Array.from(t.data as Float32Array, (x) => x * 2) } as Tensor])));
    const key = [...pm.adapter("b").tensors.keys()][0]!;
    pm.adapter("b").tensors.set(key, { dtype: "float32", shape: [4, 32], data: new Float32Array(5) });
    rejects(TensorDataError, () => pm.savePretrained(out), [key], out);
    rejects(TensorDataError, () => pm.savePretrained(out, { selectedAdapters: ["b"] }), [key], out);
  });

  test("saving an adapter that is not loaded", () => {
    const pm = withGoodAdapter();
    const out = join(tmpRoot, `save-${count++}`);
    mkdirSync(out);
    rejects(AdapterStateError, () => pm.savePretrained(out, { selectedAdapters: ["good", "missing"] }), ["missing"], out);
    assert.deepEqual(readdirSync(out), []);
  });
});

describe("mixed-adapter batches", () => {
  const io = loadSafetensors(fx("bert", "base.outputs.safetensors")).tensors;
  const inputIds = io.get("input_ids") as Tensor<"int64">;
  const attentionMask = io.get("attention_mask") as Tensor<"int64">;

  const rejectsAsync = async (fn: () => Promise<unknown>, mentions: readonly string[]): Promise<void> => {
    await assert.rejects(fn, (e: unknown) => {
      assert.ok(e instanceof AdapterStateError, `expected AdapterStateError, got ${String(e)}`);
      for (const m of mentions) assert.ok(e.message.includes(m), `${e.message} should mention ${m}`);
      return true;
    });
  };

  test("DoRA adapters and saved module copies are refused; (IA)³ rows (whose tuner declares mixedBatch) match the adapter alone", async () => {
    const pm = PeftModel.fromPretrained(bert, fx("bert", "dora"), { adapterName: "d" });
    await rejectsAsync(() => pm.forward({ inputIds, attentionMask, adapterNames: ["d", "__base__"] }), ["d", "DoRA"]);
    const withHead = PeftModel.fromPretrained(bert, fx("bert", "ia3"), { adapterName: "h" });
    await rejectsAsync(() => withHead.forward({ inputIds, attentionMask, adapterNames: ["__base__", "h"] }), ["h", "classifier"]);
    const ia = PeftModel.fromPretrained(bert, fx("bert", "multi_a"), { adapterName: "a" });
    ia.addAdapter("v", { peft_type: "IA3", target_modules: ["key", "value", "output.dense"], feedforward_modules: ["output.dense"], init_ia3_weights: false }, { seed: 5 });
    const mixed = await ia.forward({ inputIds, attentionMask, adapterNames: ["a", "v"] });
    ia.setAdapter("v");
    const alone = await ia.forward({ inputIds, attentionMask });
    ia.setAdapter("a");
    const aAlone = await ia.forward({ inputIds, attentionMask });
    const row = mixed.data.length / 2;
    const close = (x: ArrayLike<number>, y: ArrayLike<number>, from: number) => {
      for (let i = from; i < from + row; i++) assert.ok(Math.abs(Number(x[i]) - Number(y[i])) < 1e-5, `logit ${i}: ${x[i]} vs ${y[i]}`);
    };
    close(mixed.data as Float32Array, aAlone.data as Float32Array, 0);
    close(mixed.data as Float32Array, alone.data as Float32Array, row);
    await pm.dispose();
    await withHead.dispose();
    await ia.dispose();
  });

  test("a wrong number of names, an unknown name, merged adapters", async () => {
    const pm = PeftModel.fromPretrained(bert, fx("bert", "multi_a"), { adapterName: "a" });
    pm.loadAdapter(fx("bert", "multi_b"), "b");
    await rejectsAsync(() => pm.forward({ inputIds, attentionMask, adapterNames: ["a"] }), ["1 entries for a batch of 2"]);
    await rejectsAsync(() => pm.forward({ inputIds, attentionMask, adapterNames: ["a", "b", "a"] }), ["3 entries for a batch of 2"]);
    await rejectsAsync(() => pm.forward({ inputIds, attentionMask, adapterNames: ["a", "nope"] }), ["nope", "not loaded"]);
    const ok = await pm.forward({ inputIds, attentionMask, adapterNames: ["b", "a"] });
    pm.mergeAdapter(["a"]);
    await rejectsAsync(() => pm.forward({ inputIds, attentionMask, adapterNames: ["b", "a"] }), ["a", "merged", "unmergeAdapter"]);
    pm.unmergeAdapter();
    assert.deepEqual(await pm.forward({ inputIds, attentionMask, adapterNames: ["b", "a"] }), ok);
    await pm.dispose();
  });
});
