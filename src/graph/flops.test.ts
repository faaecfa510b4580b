import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { loadModel } from "../models/load.js";
import { tinyCnn } from "../models/simple-cnn.test-util.js";
import { PeftModel } from "../peft/peft-model.js";
import { examplesPerStep, modelMatmulTerms } from "../train/flops.js";
import { fixturePath } from "../util/paths.js";
import { dimValue, forwardFlops, trainingFlops } from "./flops.js";

describe("matmul FLOP counting", () => {
  test("BERT fixture with LoRA on query/value: the graph's products match the hand count", () => {
    const model = loadModel(fixturePath("peft-parity", "bert", "base"));
    const pm = PeftModel.create(model, { peft_type: "LORA", r: 4, lora_alpha: 8, target_modules: ["query", "value"], task_type: "SEQ_CLS" });
    const terms = modelMatmulTerms(pm);
    // hidden 32, intermediate 64, 2 layers, 2 heads of 16, 3 labels
    const [B, S] = [3, 7];
    const T = B * S;
    const perLayer = 4 * 2 * T * 32 * 32 + 2 * T * 32 * 64 + 2 * T * 64 * 32 + 2 * (2 * B * 2 * S * S * 16);
    const base = 2 * perLayer + 2 * B * 32 * 32; // + pooler
    const lora = 2 * 2 * (2 * T * 32 * 4 + 2 * T * 4 * 32); // 2 layers × {query, value} × (A, B)
    const head = 2 * B * 32 * 3; // the trainable modules_to_save classifier
    const f = forwardFlops(terms, B, S);
    assert.equal(f.base, base);
    assert.equal(f.trainable, lora + head);
    assert.equal(trainingFlops(terms, B, S), 2 * base + 3 * (lora + head));
    assert.equal(terms.filter((t) => t.trainable).length, 9);
  });

  test("convolutions count as products over in-channels × kernel window: tiny CNN with LoRA on conv1/conv2", () => {
    // 6×6×1 image; conv1 1→2 and conv2 2→3, kernel 3, stride 2, padding 1: 3×3 then 2×2; fc 12 → 4
    const pm = PeftModel.create(tinyCnn(), { peft_type: "LORA", r: 2, lora_alpha: 4, target_modules: ["conv1", "conv2"] });
    const terms = modelMatmulTerms(pm);
    const B = 5;
    const base = 2 * B * (2 * 3 * 3) * (1 * 9) + 2 * B * (3 * 2 * 2) * (2 * 9) + 2 * B * 4 * 12;
    // lora_A: a conv to r = 2 channels with the layer's kernel; lora_B: a 1×1 conv from r
    const lora = 2 * B * (2 * 3 * 3) * (1 * 9) + 2 * B * (2 * 3 * 3) * 2 + 2 * B * (2 * 2 * 2) * (2 * 9) + 2 * B * (3 * 2 * 2) * 2;
    const f = forwardFlops(terms, B, 36);
    assert.equal(f.base, base);
    assert.equal(f.trainable, lora);
    assert.equal(terms.filter((t) => t.trainable).length, 4);
  });

  test("symbolic dims: batch, seq, products and sums", () => {
    assert.equal(dimValue("batch*seq", 3, 7), 21);
    assert.equal(dimValue("seq+8", 3, 7), 15);
    assert.equal(dimValue(5, 3, 7), 5);
    assert.equal(dimValue("batch", 3, 7), 3);
  });

  test("examplesPerStep follows the trainer: short last batch, accumulation across the epoch boundary", () => {
    assert.deepEqual(examplesPerStep(10, 4, 1, 5), [4, 4, 2, 4, 4]);
    assert.deepEqual(examplesPerStep(10, 4, 2, 3), [8, 6, 6]);
  });
});
