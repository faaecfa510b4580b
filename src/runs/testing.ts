/**
 * Test fixtures for the training commands: a copy of the tiny BERT / GPT-2 parity models with a
 * word-level tokenizer.json written next to them, and a small labelled JSONL dataset whose class
 * is given by one sentiment word (learnable in a few steps by the 2-layer fixture models).
 */
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fixturePath } from "../util/paths.js";
import { Rng } from "../util/rng.js";

const SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"];
const WORDS: Record<string, readonly string[]> = {
  pos: ["good", "great", "lovely", "superb"],
  neg: ["bad", "awful", "poor", "dreadful"],
  neu: ["ok", "fine", "average", "plain"],
};
const FILLER = ["the", "food", "was", "film", "very", "really", "service", "quite", "and", "it"];

/** Every word the tokenizer knows, by id. */
export const TINY_VOCAB: readonly string[] = [...SPECIAL, ...Object.values(WORDS).flat(), ...FILLER];

function special(id: number, content: string) {
  return { id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true };
}

/** A word-level tokenizer.json; BERT gets `[CLS] … [SEP]` from a template post-processor. */
export function tinyTokenizerJson(withSpecialTokens: boolean): Record<string, unknown> {
  return {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: SPECIAL.map((t, i) => special(i, t)),
    normalizer: { type: "Lowercase" },
    pre_tokenizer: { type: "Whitespace" },
    post_processor: withSpecialTokens
      ? {
          type: "TemplateProcessing",
          single: [{ SpecialToken: { id: "[CLS]", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }, { SpecialToken: { id: "[SEP]", type_id: 0 } }],
          pair: [
            { SpecialToken: { id: "[CLS]", type_id: 0 } },
            { Sequence: { id: "A", type_id: 0 } },
            { SpecialToken: { id: "[SEP]", type_id: 0 } },
            { Sequence: { id: "B", type_id: 1 } },
            { SpecialToken: { id: "[SEP]", type_id: 1 } },
          ],
          special_tokens: {
            "[CLS]": { id: "[CLS]", ids: [2], tokens: ["[CLS]"] },
            "[SEP]": { id: "[SEP]", ids: [3], tokens: ["[SEP]"] },
          },
        }
      : null,
    decoder: null,
    model: { type: "WordLevel", unk_token: "[UNK]", vocab: Object.fromEntries(TINY_VOCAB.map((t, i) => [t, i])) },
  };
}

/**
 * Copies the parity fixture `arch`/base into `dir` and adds a tokenizer (tokenizer.json +
 * tokenizer_config.json). The model's own dropout is switched off, so runs are deterministic
 * (in-graph dropout masks restart with each onnxruntime session, e.g. after a resume).
 */
export function makeTinyModelDir(arch: "bert" | "gpt2", dir: string): string {
  mkdirSync(dir, { recursive: true });
  copyFileSync(fixturePath("peft-parity", arch, "base", "model.safetensors"), join(dir, "model.safetensors"));
  const cfg = JSON.parse(readFileSync(fixturePath("peft-parity", arch, "base", "config.json"), "utf8")) as Record<string, unknown>;
  for (const k of ["hidden_dropout_prob", "attention_probs_dropout_prob", "resid_pdrop", "embd_pdrop", "attn_pdrop", "summary_first_dropout"]) if (k in cfg) cfg[k] = 0;
  writeFileSync(join(dir, "config.json"), JSON.stringify(cfg, null, 2));
  writeFileSync(join(dir, "tokenizer.json"), JSON.stringify(tinyTokenizerJson(arch === "bert")));
  writeFileSync(join(dir, "tokenizer_config.json"), JSON.stringify({ pad_token: "[PAD]", model_max_length: 64 }));
  return dir;
}

/**
 * Writes `n` JSONL rows `{text, label}`: three to five words of the class (`pos`/`neg`/`neu`, or
 * only `pos`/`neg` when `classes` is 2) with one filler word somewhere. Returns the file path.
 */
export function writeTinyDataset(file: string, n: number, seed: number, classes: 2 | 3 = 3): string {
  const rng = new Rng(seed);
  const labels = classes === 3 ? ["pos", "neg", "neu"] : ["pos", "neg"];
  const rows: string[] = [];
  for (let i = 0; i < n; i++) {
    const label = labels[i % labels.length]!;
    const words = WORDS[label]!;
    const len = 3 + rng.int(3);
    const text = Array.from({ length: len }, () => words[rng.int(words.length)]!);
    text.splice(rng.int(len + 1), 0, FILLER[rng.int(FILLER.length)]!);
    rows.push(JSON.stringify({ text: text.join(" "), label }));
  }
  writeFileSync(file, `${rows.join("\n")}\n`);
  return file;
}
