/**
 * Loading from files held in memory (what peft-ts/web does after a file picker or a fetch) gives
 * the same model, adapter and outputs as loading the folders from disk.
 */
import assert from "node:assert/strict";
import { readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { modelFromFiles } from "../models/from-files.js";
import { loadModel } from "../models/load.js";
import { loadUseLite } from "../models/use-lite/convert.js";
import { useLiteFromFiles, useLiteTfjsFileNames } from "../models/use-lite/files.js";
import { useLitePackageDir } from "../models/use-lite/weights.js";
import { tensor } from "../tensor.js";
import { assertSameSafetensors } from "../io/writer.test-util.js";
import { fixturePath } from "../util/paths.js";
import { PEFT_TS_VERSION } from "../util/version.js";
import { PeftModel } from "./peft-model.js";

function folder(dir: string, prefix = ""): Map<string, Uint8Array> {
  return new Map(readdirSync(dir).map((f) => [`${prefix}${f}`, new Uint8Array(readFileSync(join(dir, f)))]));
}

test("bert + LoRA from files in memory: same weights, same logits, and adapterFiles() is what savePretrained writes", async () => {
  const base = fixturePath("peft-parity", "bert", "base");
  const adapter = fixturePath("peft-parity", "bert", "lora");
  const disk = PeftModel.fromPretrained(loadModel(base), adapter);
  const mem = PeftModel.fromFiles(modelFromFiles(folder(base, "base/"), "picked-model"), folder(adapter, "lora/"));
  try {
    assert.deepEqual({ ...mem.base.config, file: "" }, { ...disk.base.config, file: "" });
    assert.equal((mem.base.config as { file?: string }).file, "picked-model/config.json");
    assert.deepEqual(mem.base.weights.keys().sort(), disk.base.weights.keys().sort());
    const ids = tensor("int64", [1, 5], BigInt64Array.from([1n, 5n, 7n, 2n, 9n]));
    const mask = tensor("int64", [1, 5], BigInt64Array.from([1n, 1n, 1n, 1n, 1n]));
    const [a, b] = [await disk.forward({ inputIds: ids, attentionMask: mask }), await mem.forward({ inputIds: ids, attentionMask: mask })];
    assert.deepEqual(b.data, a.data);
    const files = mem.adapterFiles();
    // Python's header and data bytes; peft-ts adds only its writer record to __metadata__
    assertSameSafetensors(files.get("adapter_model.safetensors")!, new Uint8Array(readFileSync(join(adapter, "adapter_model.safetensors"))), PEFT_TS_VERSION);
  } finally {
    await disk.dispose();
    await mem.dispose();
  }
});

test("USE-lite from the npm package's files in memory equals loadUseLite()", () => {
  const dir = useLitePackageDir();
  const modelJson = JSON.parse(readFileSync(join(dir, "model.json"), "utf8")) as Record<string, unknown>;
  const names = useLiteTfjsFileNames(modelJson);
  assert.equal(names[0], "model.json");
  assert.ok(names.includes("vocab.json") && names.some((n) => n.startsWith("group1-shard")));
  const files = new Map(names.map((n) => [n, new Uint8Array(readFileSync(join(dir, n)))]));
  const mem = useLiteFromFiles(files, "fetched");
  const disk = loadUseLite();
  assert.deepEqual([...mem.weights.keys()].sort(), [...disk.weights.keys()].sort());
  for (const [k, t] of disk.weights) assert.deepEqual(mem.weights.get(k)!.data, t.data, k);
  assert.deepEqual(mem.tokenizer.encode("Hello, adapters in the browser!"), disk.tokenizer.encode("Hello, adapters in the browser!"));
});
