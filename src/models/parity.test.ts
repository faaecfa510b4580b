import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { loadSafetensors } from "../io/safetensors.js";
import type { Tensor } from "../tensor.js";
import { fixturePath } from "../util/paths.js";
import { forwardLogits } from "./forward.js";
import { loadModel } from "./load.js";

export function maxAbsDiff(a: Tensor, b: Tensor): number {
  assert.deepEqual([...a.shape], [...b.shape], "shapes differ");
  let m = 0;
  const x = a.data as Float32Array;
  const y = b.data as Float32Array;
  for (let i = 0; i < x.length; i++) m = Math.max(m, Math.abs(x[i]! - y[i]!));
  return m;
}

describe("base model logits match transformers (peft-parity fixtures)", () => {
  for (const arch of ["bert", "gpt2", "llama"]) {
    test(arch, async () => {
      const ref = loadSafetensors(fixturePath("peft-parity", arch, "base.outputs.safetensors")).tensors;
      const model = loadModel(fixturePath("peft-parity", arch, "base"));
      const logits = await forwardLogits(model, ref.get("input_ids") as Tensor<"int64">, ref.get("attention_mask") as Tensor<"int64">);
      const err = maxAbsDiff(logits, ref.get("logits")!);
      console.log(`# parity ${arch}: max |Δlogits| = ${err.toExponential(2)}`);
      assert.ok(err <= 1e-4, `${arch}: max abs diff ${err}`);
    });
  }
});
