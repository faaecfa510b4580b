import assert from "node:assert/strict";
import { cpSync, existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { AdapterNameError, AdapterStateError } from "../../errors.js";
import { loadSafetensors, saveSafetensors } from "../../io/safetensors.js";
import { type Tensor, toFloat32 } from "../../tensor.js";
import { fixturePath } from "../../util/paths.js";
import { runCli } from "../main.js";
import { adapterNamesForDirs, runForward } from "./forward.js";
import { PEFT_TS_VERSION } from "../../util/version.js";

const tmp = mkdtempSync(join(tmpdir(), "peft-forward-"));
after(() => rmSync(tmp, { recursive: true, force: true }));
let n = 0;
const fx = (...p: string[]): string => fixturePath("peft-parity", ...p);

/** An inputs file with the fixture's input_ids and attention_mask (or the given tensors). */
function inputsFile(arch: string, tensors?: Record<string, Tensor>): string {
  const io = loadSafetensors(fx(arch, "base.outputs.safetensors")).tensors;
  const file = join(tmp, `in${n++}.safetensors`);
  saveSafetensors(file, tensors ?? { input_ids: io.get("input_ids")!, attention_mask: io.get("attention_mask")! });
  return file;
}

function reference(path: string, key = "logits"): Tensor {
  const t = loadSafetensors(fx(path)).tensors.get(key);
  assert.ok(t, `${path} has no ${key}`);
  return t;
}

function readLogits(file: string): Tensor {
  const { tensors, metadata } = loadSafetensors(file);
  assert.deepEqual([...tensors.keys()], ["logits"]);
  assert.deepEqual(metadata, { format: "pt", peft_ts_version: PEFT_TS_VERSION }, "the writer is recorded");
  const t = tensors.get("logits")!;
  assert.equal(t.dtype, "float32");
  return t;
}

function assertClose(got: Tensor, want: Tensor, tol = 1e-4): void {
  assert.deepEqual([...got.shape], [...want.shape]);
  const a = toFloat32(got);
  const b = toFloat32(want);
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i]! - b[i]!));
  assert.ok(d <= tol, `max |Δ| ${d} > ${tol}`);
}

const outFile = (): string => join(tmp, `out${n++}.safetensors`);

describe("peft forward", () => {
  test("one adapter: the logits of Python PEFT (gpt2/lora)", async () => {
    const out = outFile();
    const r = await runCli(["forward", "--model", fx("gpt2", "base"), "--adapter", fx("gpt2", "lora"), "--inputs", inputsFile("gpt2"), "--out", out]);
    assert.equal(r.code, 0, r.stderr);
    assertClose(readLogits(out), reference("gpt2/lora.outputs.safetensors"));
    assert.match(r.stdout, /adapters {2}lora \(/u);
    assert.match(r.stdout, /wrote {5}logits float32 \[2, 10, 128\]/u);
    assert.deepEqual(readdirSync(tmp).filter((f) => f.includes(".tmp-")), [], "no temporary file left");
  });

  test("no adapter: the base model's logits; prompt tuning: the virtual tokens too", async () => {
    const out = outFile();
    const r = await runCli(["forward", "--model", fx("bert", "base"), "--inputs", inputsFile("bert"), "--out", out]);
    assert.equal(r.code, 0, r.stderr);
    assertClose(readLogits(out), reference("bert/base.outputs.safetensors"));
    // the prompt-tuning reference ran on its own (unpadded) ids, without a mask
    const ptIds = reference("gpt2/prompt_tuning.outputs.safetensors", "input_ids");
    const pt = outFile();
    const p = await runCli(["forward", "--model", fx("gpt2", "base"), "--adapter", fx("gpt2", "prompt_tuning"), "--inputs", inputsFile("gpt2", { input_ids: ptIds }), "--out", pt]);
    assert.equal(p.code, 0, p.stderr);
    assertClose(readLogits(pt), reference("gpt2/prompt_tuning.outputs.safetensors"));
  });

  test("several adapters and --adapter-names: a mixed batch, one adapter per row", async () => {
    const args = ["forward", "--model", fx("bert", "base"), "--adapter", fx("bert", "multi_a"), "--adapter", fx("bert", "multi_b"), "--inputs", inputsFile("bert")];
    const ref = "bert/multi_and_merge.outputs.safetensors";
    const o1 = outFile();
    const r1 = await runCli([...args, "--adapter-names", "multi_a,__base__", "--out", o1]);
    assert.equal(r1.code, 0, r1.stderr);
    assertClose(readLogits(o1), reference(ref, "logits_mixed_a_base"));
    const o2 = outFile();
    assert.equal((await runCli([...args, "--adapter-names", "multi_b, default", "--out", o2])).code, 0, "default names the first adapter");
    assertClose(readLogits(o2), reference(ref, "logits_mixed_b_a"));
    const o3 = outFile();
    assert.equal((await runCli([...args, "--out", o3])).code, 0);
    assertClose(readLogits(o3), reference(ref, "logits_a"), 1e-4);
  });

  test("--merge merges the active adapter first (llama/lora); --json reports it", async () => {
    const out = outFile();
    const r = await runCli(["forward", "--model", fx("llama", "base"), "--adapter", fx("llama", "lora"), "--merge", "--json", "--inputs", inputsFile("llama"), "--out", out]);
    assert.equal(r.code, 0, r.stderr);
    assertClose(readLogits(out), reference("llama/lora.outputs.safetensors"));
    const rep = JSON.parse(r.stdout) as { merged: string[]; active: string[]; shape: number[]; adapters: { name: string }[] };
    assert.deepEqual(rep.merged, ["lora"]);
    assert.deepEqual(rep.active, ["lora"]);
    assert.deepEqual(rep.shape, [2, 10, 128]);
    assert.deepEqual(rep.adapters.map((a) => a.name), ["lora"]);
  });

  test("runForward (in-process API) gives the same logits as the CLI", async () => {
    const out = outFile();
    const res = await runForward({ model: fx("gpt2", "base"), adapters: [fx("gpt2", "ia3")], inputs: inputsFile("gpt2"), out, threads: 1 });
    assert.deepEqual(res.active, ["ia3"]);
    assertClose(readLogits(out), reference("gpt2/ia3.outputs.safetensors"));
  });
});

describe("peft forward: bad input leaves --out untouched", () => {
  const io = loadSafetensors(fx("gpt2", "base.outputs.safetensors")).tensors;
  const ids = io.get("input_ids") as Tensor<"int64">;
  const mask = io.get("attention_mask") as Tensor<"int64">;

  /** Runs `peft forward` on gpt2/lora with `inputs` over an existing --out; expects `code` in stderr and an unchanged --out. */
  async function fails(inputs: string, code: string, mention: string, extra: string[] = []): Promise<void> {
    const out = outFile();
    writeFileSync(out, "previous contents");
    const before = statSync(out).mtimeMs;
    const r = await runCli(["forward", "--model", fx("gpt2", "base"), "--adapter", fx("gpt2", "lora"), "--inputs", inputs, "--out", out, "--overwrite", ...extra]);
    assert.equal(r.code, 1);
    assert.ok(r.stderr.startsWith(`error [${code}]: `), r.stderr);
    assert.ok(r.stderr.includes(mention), `${r.stderr} should mention ${mention}`);
    assert.equal(readFileSync(out, "utf8"), "previous contents");
    assert.equal(statSync(out).mtimeMs, before);
  }

  test("missing input_ids, or missing inputs file", async () => {
    const f = inputsFile("gpt2", { attention_mask: mask });
    await fails(f, "PEFT_ERR_MISSING_TENSOR", "input_ids");
    await fails(join(tmp, "nope.safetensors"), "PEFT_ERR_MISSING_FILE", "nope.safetensors");
  });

  test("wrong dtype, rank, extra tensors, mask values, out-of-vocabulary ids, too long", async () => {
    const i32: Tensor = { dtype: "int32", shape: ids.shape, data: Int32Array.from(ids.data, Number) };
    await fails(inputsFile("gpt2", { input_ids: i32 }), "PEFT_ERR_INPUT_TENSOR", "must be int64");
    await fails(inputsFile("gpt2", { input_ids: { dtype: "int64", shape: [20], data: ids.data } }), "PEFT_ERR_SHAPE_MISMATCH", "input_ids");
    await fails(inputsFile("gpt2", { input_ids: ids, token_type_ids: ids }), "PEFT_ERR_INPUT_TENSOR", "token_type_ids");
    await fails(inputsFile("gpt2", { input_ids: ids, attention_mask: { dtype: "int64", shape: [2, 9], data: mask.data.slice(0, 18) } }), "PEFT_ERR_SHAPE_MISMATCH", "attention_mask");
    const twos = BigInt64Array.from(mask.data, (v) => v * 2n);
    await fails(inputsFile("gpt2", { input_ids: ids, attention_mask: { dtype: "int64", shape: mask.shape, data: twos } }), "PEFT_ERR_INPUT_TENSOR", "attention_mask");
    const big = ids.data.slice();
    big[13] = 128n;
    await fails(inputsFile("gpt2", { input_ids: { dtype: "int64", shape: ids.shape, data: big } }), "PEFT_ERR_INPUT_TENSOR", "id 128 at [1, 3]");
    const long = { dtype: "int64" as const, shape: [1, 65], data: new BigInt64Array(65).fill(5n) };
    await fails(inputsFile("gpt2", { input_ids: long }), "PEFT_ERR_INPUT_TENSOR", "exceeds the 64 positions");
  });

  test("bad --adapter-names, --merge with --adapter-names, --merge without an adapter", async () => {
    const f = inputsFile("gpt2");
    await fails(f, "PEFT_ERR_ADAPTER_STATE", "1 entries for a batch of 2", ["--adapter-names", "lora"]);
    await fails(f, "PEFT_ERR_ADAPTER_STATE", "nope", ["--adapter-names", "lora,nope"]);
    const r = await runCli(["forward", "--model", fx("gpt2", "base"), "--adapter", fx("gpt2", "lora"), "--merge", "--adapter-names", "lora,lora", "--inputs", f, "--out", outFile()]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /cannot be used with/u);
    await assert.rejects(runForward({ model: fx("gpt2", "base"), merge: true, inputs: f, out: outFile() }), AdapterStateError);
  });

  test("an adapter for another architecture, a folder for --out", async () => {
    const out = outFile();
    const r = await runCli(["forward", "--model", fx("gpt2", "base"), "--adapter", fx("llama", "lora"), "--inputs", inputsFile("gpt2"), "--out", out]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^error \[PEFT_ERR_CONFIG\]: .*target_modules/u);
    assert.ok(!existsSync(out));
    const folder = mkdtempSync(join(tmp, "out-folder-"));
    const d = await runCli(["forward", "--model", fx("gpt2", "base"), "--inputs", inputsFile("gpt2"), "--out", folder]);
    assert.match(d.stderr, /^error \[PEFT_ERR_UNSUPPORTED_FILE_TYPE\]/u);
  });
});

describe("adapterNamesForDirs", () => {
  test("folder names; an unusable first folder name becomes 'default'; clashes are refused", () => {
    assert.deepEqual(adapterNamesForDirs(["runs/sst2", "/x/y/ia3/"]), ["sst2", "ia3"]);
    assert.deepEqual(adapterNamesForDirs(["runs/v1.2"]), ["default"]);
    assert.throws(() => adapterNamesForDirs(["a/x", "b/v1.2"]), AdapterNameError);
    assert.throws(() => adapterNamesForDirs(["a/x", "b/default"]), AdapterNameError);
    assert.throws(() => adapterNamesForDirs(["a/lora", "b/lora"]), (e: unknown) => e instanceof AdapterStateError && e.message.includes("a/lora") && e.message.includes("b/lora"));
    const copy = join(tmp, "multi_a");
    cpSync(fx("bert", "multi_a"), copy, { recursive: true });
    assert.throws(() => adapterNamesForDirs([fx("bert", "multi_a"), copy]), AdapterStateError);
  });
});
