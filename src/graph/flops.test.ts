import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { loadModel } from "../models/load.js";
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
