import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { inspectModelDir } from "../cli/inspect/model.js";
import { saveSafetensors } from "../io/safetensors.js";
import { PeftModel } from "../peft/peft-model.js";
import { modelInfo } from "../peft/model-info.js";
import { loadModel } from "./load.js";
import { parseSimpleCnnConfig, simpleCnnConfigJson } from "./simple-cnn.js";
import { TINY_CNN_RAW, cnnLoops, tinyCnn, tinyCnnWeights, tinyImages } from "./simple-cnn.test-util.js";

const maxDiff = (a: ArrayLike<number>, b: ArrayLike<number>) => Array.from(a).reduce((m, v, i) => Math.max(m, Math.abs(v - b[i]!)), 0);

test("simple_cnn: logits equal the network written out as loops (conv stride 2 + padding, relu, flatten, fc)", async () => {
  const m = tinyCnn(3);
  const pixels = tinyImages(m.config, 5);
  const pm = new PeftModel(m);
  try {
    const got = await pm.forward({ inputIds: pixels });
    assert.deepEqual(got.shape, [5, 4]);
    const want = cnnLoops(m.config, tinyCnnWeights(m.config, 3), pixels);
    assert.ok(maxDiff(got.data as Float32Array, want) < 1e-5, `max diff ${maxDiff(got.data as Float32Array, want)}`);
  } finally {
    await pm.dispose();
  }
});

test("simple_cnn loads from an HF-style folder (config.json + model.safetensors) and reports its conv and linear modules", async () => {
  const dir = mkdtempSync(join(tmpdir(), "peft-cnn-"));
  try {
    const c = parseSimpleCnnConfig(TINY_CNN_RAW, "x");
    writeFileSync(join(dir, "config.json"), JSON.stringify(simpleCnnConfigJson(c)));
    saveSafetensors(join(dir, "model.safetensors"), tinyCnnWeights(c, 3));
    const m = loadModel(dir);
    assert.equal(m.config.modelType, "simple_cnn");
    assert.deepEqual(inspectModelDir(dir).support, { supported: true, problems: [] }, "peft inspect reports it buildable");
    const info = modelInfo(m);
    assert.deepEqual(info.convModules, [
      { name: "conv1", inChannels: 1, outChannels: 2, kernel: [3, 3], stride: [2, 2], padding: [1, 1], dilation: [1, 1] },
      { name: "conv2", inChannels: 2, outChannels: 3, kernel: [3, 3], stride: [2, 2], padding: [1, 1], dilation: [1, 1] },
    ]);
    assert.deepEqual(info.linearModules.map((l) => [l.name, l.inFeatures, l.outFeatures]), [["fc", 12, 4]]);
    const pm = new PeftModel(m);
    const pixels = tinyImages(c, 2);
    const got = await pm.forward({ inputIds: pixels });
    assert.ok(maxDiff(got.data as Float32Array, cnnLoops(c, tinyCnnWeights(c, 3), pixels)) < 1e-5);
    await pm.dispose();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("simple_cnn config errors name the file and key", () => {
  const isConfig = (key: string) => (e: unknown) => (e as { code?: string }).code === "PEFT_ERR_CONFIG" && new RegExp(key).test((e as Error).message) && /c\.json/.test((e as Error).message);
  assert.throws(() => parseSimpleCnnConfig({ ...TINY_CNN_RAW, image_size: 5, padding: 0, conv_channels: [2, 2, 2] }, "c.json"), isConfig("conv_channels"));
  assert.throws(() => parseSimpleCnnConfig({ ...TINY_CNN_RAW, kernel_size: 0 }, "c.json"), isConfig("kernel_size"));
  assert.throws(() => parseSimpleCnnConfig({ ...TINY_CNN_RAW, hidden_size: 3 }, "c.json"), isConfig("hidden_size|Unrecognized"));
  assert.throws(() => parseSimpleCnnConfig({ ...TINY_CNN_RAW, id2label: { 0: "a", 2: "b" } }, "c.json"), isConfig("id2label"));
  assert.equal(parseSimpleCnnConfig({ ...TINY_CNN_RAW, num_labels: undefined, id2label: { 0: "a", 1: "b" } }, "c.json").numLabels, 2);
});

test("prompt learning on simple_cnn is refused (PEFT_ERR_UNSUPPORTED_OPTION)", () => {
  const m = tinyCnn(3);
  assert.throws(
    () => PeftModel.create(m, { peft_type: "PROMPT_TUNING", task_type: "SEQ_CLS", num_virtual_tokens: 2, token_dim: 12, num_layers: 2, num_attention_heads: 1 }).buildGraph(),
    (e: unknown) => (e as { code?: string }).code === "PEFT_ERR_UNSUPPORTED_OPTION" && /simple_cnn takes images/.test((e as Error).message),
  );
});
