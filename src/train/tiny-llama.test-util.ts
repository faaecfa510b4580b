/** Test helpers: the tiny Llama fixture with a LoRA r 4 adapter on q/v, and toy token corpora. */
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
