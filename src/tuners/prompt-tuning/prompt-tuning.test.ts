/**
 * Prompt tuning on USE-lite's structure, whose token embeddings (256 wide) are narrower than its
 * hidden size (512): the virtual tokens have the embedding width. This once failed to build with
 * "Add shapes [, 8+seq, 512] and [, , 256]" (the prompt was hidden_size wide). The tiny model here
 * has embeddings of width 8 and a hidden size of 16.
 */
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import { syntheticTask, tinyModel, TINY_CONFIG } from "../../compose/atlas/tiny-model.test-util.js";
import { ConfigError, PeftError } from "../../errors.js";
import { forwardLogits } from "../../models/forward.js";
import { USE_LITE_WORD_EMBEDDINGS } from "../../models/use-lite/weights.js";
import { loadSafetensors, saveSafetensors } from "../../io/safetensors.js";
import { PeftModel } from "../../peft/peft-model.js";
import { type Tensor, toFloat32 } from "../../tensor.js";
import { Trainer } from "../../train/trainer.js";
import { maxDiff } from "../../train/method-suite.test-util.js";

const CONFIG = { peft_type: "PROMPT_TUNING", task_type: "SEQ_CLS", num_virtual_tokens: 3 };
const ids = (rows: number[][]): Tensor<"int64"> => ({ dtype: "int64", shape: [rows.length, rows[0]!.length], data: BigInt64Array.from(rows.flat(), BigInt) });

describe("prompt tuning on USE-lite (token embeddings narrower than the hidden size)", () => {
  test("the virtual tokens have the embedding width; token_dim is saved as that width", () => {
    const pm = PeftModel.create(tinyModel(), CONFIG);
    const t = pm.adapter("default").tensors.get("prompt_embeddings")!;
    assert.deepEqual(t.shape, [3, TINY_CONFIG.embeddingSize]);
    assert.notEqual(TINY_CONFIG.embeddingSize, TINY_CONFIG.hiddenSize);
    const dir = mkdtempSync(join(tmpdir(), "peft-pt-uselite-"));
    try {
      pm.savePretrained(dir);
      const cfg = JSON.parse(readFileSync(join(dir, "adapter_config.json"), "utf8")) as Record<string, unknown>;
      assert.equal(cfg.token_dim, TINY_CONFIG.embeddingSize);
      assert.equal(cfg.peft_type, "PROMPT_TUNING");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("forward = the base model with the virtual tokens' rows of the embedding table as real tokens in front", async () => {
    const model = tinyModel(3, 2);
    const pm = PeftModel.create(model, CONFIG);
    // virtual tokens equal to the embeddings of tokens 11, 5 and 20: the model must then see
    // exactly [11, 5, 20, …ids] (positions of the timing signal counted from the first virtual token)
    const table = toFloat32(model.weights.get(USE_LITE_WORD_EMBEDDINGS));
    const d = TINY_CONFIG.embeddingSize;
    const prefix = [11, 5, 20];
    const prompt = new Float32Array(prefix.length * d);
    prefix.forEach((tok, i) => prompt.set(table.subarray(tok * d, (tok + 1) * d), i * d));
    pm.updateAdapterTensors("default", new Map([["prompt_embeddings", { dtype: "float32", shape: [3, d], data: prompt } as Tensor]]));
    const rows = [
      [9, 14, 30, 7, 22],
      [12, 8, 17, 0, 0],
    ];
    const mask = ids([
      [1, 1, 1, 1, 1],
      [1, 1, 1, 0, 0],
    ]);
    const got = await pm.forward({ inputIds: ids(rows), attentionMask: mask });
    const want = await forwardLogits(
      model,
      ids(rows.map((r) => [...prefix, ...r])),
      ids([
        [1, 1, 1, 1, 1, 1, 1, 1],
        [1, 1, 1, 1, 1, 1, 0, 0],
      ]),
    );
    assert.deepEqual(got.shape, [2, 2]);
    assert.ok(maxDiff(got.data as Float32Array, want.data as Float32Array) < 1e-5, "prompted forward");
    const base = await pm.disableAdapter(() => pm.forward({ inputIds: ids(rows), attentionMask: mask }));
    assert.ok(maxDiff(got.data as Float32Array, base.data as Float32Array) > 1e-4, "the prompt changes the logits");
    await pm.dispose();
  });

  test("trains through the Trainer (sequence classification): the loss falls; save → load gives the same logits", async () => {
    const model = tinyModel(2, 2);
    const pm = PeftModel.create(model, { ...CONFIG, modules_to_save: ["classifier"] }, "default", { seed: 1 });
    const fit = await new Trainer(pm, { task: "seq-cls", epochs: 100, maxSteps: 12, batchSize: 16, lr: 0.05, seed: 0, schedule: "constant", dropout: false }, syntheticTask(16, 4)).fit();
    const losses = fit.history.steps.map((s) => s.loss);
    console.log(`# prompt tuning on tiny USE-lite: loss ${losses[0]!.toFixed(4)} → ${losses.at(-1)!.toFixed(4)}`);
    assert.ok(losses.at(-1)! < losses[0]! - 0.02, `loss fell: ${losses.join(", ")}`);
    const dir = mkdtempSync(join(tmpdir(), "peft-pt-uselite-"));
    try {
      pm.savePretrained(dir);
      const pm2 = PeftModel.fromPretrained(model, dir);
      const x = ids([[9, 14, 30, 7, 22]]);
      assert.deepEqual((await pm2.forward({ inputIds: x })).data, (await pm.forward({ inputIds: x })).data);
      await pm2.dispose();
      // PEFT's keys for a SEQ_CLS prompt: the classifier copy under `base_model.` (PeftModel wraps the model itself)
      const file = join(dir, "adapter_model.safetensors");
      const saved = loadSafetensors(file).tensors;
      assert.deepEqual([...saved.keys()].sort(), ["base_model.classifier.bias", "base_model.classifier.weight", "prompt_embeddings"]);
      // files peft-ts wrote before (copies without the prefix) still load
      saveSafetensors(file, new Map([...saved].map(([k, v]) => [k.replace(/^base_model\./u, ""), v])));
      const pm3 = PeftModel.fromPretrained(model, dir);
      assert.deepEqual((await pm3.forward({ inputIds: x })).data, (await pm.forward({ inputIds: x })).data);
      await pm3.dispose();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    await pm.dispose();
  });

  test("a token_dim other than the embedding width is rejected naming token_dim", () => {
    assert.throws(
      () => PeftModel.create(tinyModel(), { ...CONFIG, token_dim: TINY_CONFIG.hiddenSize }),
      (e: unknown) => e instanceof ConfigError && e instanceof PeftError && /token_dim/u.test(e.message) && /width 8/u.test(e.message),
    );
  });
});
