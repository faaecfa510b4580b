/** Test helpers for the trainer: the tiny Llama fixture with a LoRA adapter, and toy token datasets. */
import { loadModel } from "../models/load.js";
import { PeftModel } from "../peft/peft-model.js";
import { fixturePath } from "../util/paths.js";
import { Rng } from "../util/rng.js";
import type { TokenizedExample } from "./trainer.js";

const LLAMA = loadModel(fixturePath("peft-parity", "llama", "base"));

/** A fresh trainable LoRA (r 4, alpha 8, q_proj/v_proj, no dropout) on the tiny Llama fixture. */
export function llamaLora(seed = 1): PeftModel {
  return PeftModel.create(LLAMA, { peft_type: "LORA", r: 4, lora_alpha: 8, target_modules: ["q_proj", "v_proj"], lora_dropout: 0 }, "default", { seed });
}

/** Learnable arithmetic patterns over ids 3..42; `length(rng)` gives each example's length. */
export function patternCorpus(n: number, seed: number, length: (rng: Rng) => number): TokenizedExample[] {
  const rng = new Rng(seed);
  return Array.from({ length: n }, () => {
    const start = 3 + rng.int(8);
    return { ids: Array.from({ length: length(rng) }, (_, j) => 3 + ((start + 3 * j) % 40)) };
  });
}

/** A two-class toy task: label 0 sentences use ids 5..24, label 1 ids 60..79 (6 tokens each). */
export function separableClasses(rng: Rng): (n: number) => TokenizedExample[] {
  return (n) =>
    Array.from({ length: n }, () => {
      const label = rng.int(2);
      return { ids: Array.from({ length: 6 }, () => (label === 0 ? 5 + rng.int(20) : 60 + rng.int(20))), label };
    });
}
