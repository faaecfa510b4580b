/**
 * Fixtures for the fine-tuning tests: the tiny GPT-2 with a chat template that renders turn by
 * turn (so assistant tokens can be located), and small chat / prompt-completion JSONL files whose
 * answers a few LoRA steps can learn.
 */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { Rng } from "../../util/rng.js";
import { makeTinyModelDir } from "../testing.js";

/** `user <text> assistant <reply> …`, ending with `assistant` for the generation prompt. */
export const TURN_TEMPLATE = "{% for m in messages %}{{ m['role'] }} {{ m['content'] }} {% endfor %}{% if add_generation_prompt %}assistant {% endif %}";

/** The tiny GPT-2 (dropout off, word-level tokenizer) with `TURN_TEMPLATE`, in `dir/gpt2`. */
export function tinyFineTuneModel(dir: string): string {
  const model = makeTinyModelDir("gpt2", join(dir, "gpt2"));
  writeFileSync(join(model, "tokenizer_config.json"), JSON.stringify({ pad_token: "[PAD]", model_max_length: 64, chat_template: TURN_TEMPLATE }));
  return model;
}

const POS = ["good", "great", "lovely", "superb"];
const NEG = ["bad", "awful", "poor", "dreadful"];

/** `n` chats: the user names a food with a positive or negative word, the assistant answers `great` or `awful`. */
export function writeChatJsonl(file: string, n: number, seed: number): string {
  const rng = new Rng(seed);
  const rows: string[] = [];
  for (let i = 0; i < n; i++) {
    const pos = i % 2 === 0;
    const words = pos ? POS : NEG;
    const user = `the food was ${words[rng.int(words.length)]!}`;
    rows.push(JSON.stringify({ messages: [{ role: "system", content: "film" }, { role: "user", content: user }, { role: "assistant", content: pos ? "great great" : "awful awful" }] }));
  }
  writeFileSync(file, `${rows.join("\n")}\n`);
  return file;
}
