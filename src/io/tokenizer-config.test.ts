import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { ConfigError } from "../errors.js";
import { loadTokenizerConfig, parseTokenizerConfig } from "./tokenizer-config.js";

const tmp = mkdtempSync(join(tmpdir(), "peft-tokcfg-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

/** As published with Qwen2-0.5B-Instruct (added tokens shortened to three). */
const QWEN2_CONFIG = {
  add_prefix_space: false,
  added_tokens_decoder: {
    "151643": { content: "<|endoftext|>", lstrip: false, normalized: false, rstrip: false, single_word: false, special: true },
    "151644": { content: "<|im_start|>", lstrip: false, normalized: false, rstrip: false, single_word: false, special: true },
    "151645": { content: "<|im_end|>", lstrip: false, normalized: false, rstrip: false, single_word: false, special: true },
  },
  additional_special_tokens: ["<|im_start|>", "<|im_end|>"],
  bos_token: null,
  chat_template: "{% for message in messages %}{{ message['content'] }}{% endfor %}",
  clean_up_tokenization_spaces: false,
  eos_token: "<|im_end|>",
  errors: "replace",
  model_max_length: 32768,
  pad_token: "<|endoftext|>",
  split_special_tokens: false,
  tokenizer_class: "Qwen2Tokenizer",
  unk_token: null,
};

/** Llama-2 style: special tokens as serialised AddedToken objects, add_bos_token/add_eos_token. */
const LLAMA2_CONFIG = {
  add_bos_token: true,
  add_eos_token: false,
  bos_token: { __type: "AddedToken", content: "<s>", lstrip: false, normalized: false, rstrip: false, single_word: false },
  eos_token: { __type: "AddedToken", content: "</s>", lstrip: false, normalized: false, rstrip: false, single_word: false },
  unk_token: { __type: "AddedToken", content: "<unk>", lstrip: false, normalized: false, rstrip: false, single_word: false },
  pad_token: null,
  model_max_length: 1000000000000000019884624838656,
  padding_side: "right",
  tokenizer_class: "LlamaTokenizer",
  legacy: false,
};

describe("tokenizer_config.json", () => {
  test("Qwen2: special tokens, added tokens, model_max_length, chat template", () => {
    const c = parseTokenizerConfig(QWEN2_CONFIG, "qwen/tokenizer_config.json");
    assert.equal(c.bosToken, null);
    assert.equal(c.eosToken, "<|im_end|>");
    assert.equal(c.padToken, "<|endoftext|>");
    assert.equal(c.unkToken, null);
    assert.deepEqual(c.additionalSpecialTokens, ["<|im_start|>", "<|im_end|>"]);
    assert.equal(c.addBosToken, null);
    assert.equal(c.modelMaxLength, 32768);
    assert.equal(c.chatTemplate, QWEN2_CONFIG.chat_template);
    assert.deepEqual(c.addedTokensDecoder.get(151645), { content: "<|im_end|>", special: true, lstrip: false, rstrip: false, normalized: false, singleWord: false });
    assert.equal(c.tokenizerClass, "Qwen2Tokenizer");
    assert.equal(c.cleanUpTokenizationSpaces, false);
  });

  test("Llama 2: AddedToken objects, add_bos_token/add_eos_token, the 1e30 placeholder", () => {
    const c = parseTokenizerConfig(LLAMA2_CONFIG);
    assert.deepEqual([c.bosToken, c.eosToken, c.unkToken, c.padToken], ["<s>", "</s>", "<unk>", null]);
    assert.equal(c.addBosToken, true);
    assert.equal(c.addEosToken, false);
    assert.equal(c.modelMaxLength, null);
    assert.equal(c.paddingSide, "right");
    assert.equal(c.chatTemplate, null);
  });

  test("the list-of-named-templates form", () => {
    const c = parseTokenizerConfig({ chat_template: [{ name: "default", template: "D" }, { name: "tool_use", template: "T" }] });
    assert.deepEqual(c.chatTemplate, { default: "D", tool_use: "T" });
  });

  test("bad values are ConfigErrors naming the key", () => {
    const bad = (patch: Record<string, unknown>, key: string) =>
      assert.throws(() => parseTokenizerConfig({ ...QWEN2_CONFIG, ...patch }, "t.json"), (e: unknown) => e instanceof ConfigError && e.path === key && e.file === "t.json");
    bad({ eos_token: 5 }, "eos_token");
    bad({ bos_token: { content: 1 } }, "bos_token");
    bad({ add_bos_token: "yes" }, "add_bos_token");
    bad({ add_eos_token: 1 }, "add_eos_token");
    bad({ model_max_length: -1 }, "model_max_length");
    bad({ model_max_length: "4k" }, "model_max_length");
    bad({ added_tokens_decoder: [] }, "added_tokens_decoder");
    bad({ added_tokens_decoder: { x: { content: "a" } } }, "added_tokens_decoder.x");
    bad({ added_tokens_decoder: { "7": { content: "a", special: "yes" } } }, "added_tokens_decoder.7.special");
    bad({ added_tokens_decoder: { "7": "a" } }, "added_tokens_decoder.7");
    bad({ additional_special_tokens: "<x>" }, "additional_special_tokens");
    bad({ additional_special_tokens: ["<x>", null] }, "additional_special_tokens.1");
    bad({ chat_template: 5 }, "chat_template");
    bad({ chat_template: [{ name: "default" }] }, "chat_template.0");
    bad({ chat_template: [{ name: "a", template: "A" }, { name: "a", template: "B" }] }, "chat_template.1.name");
    bad({ padding_side: "middle" }, "padding_side");
    assert.throws(() => parseTokenizerConfig([], "t.json"), ConfigError);
  });

  test("loadTokenizerConfig: undefined without files; chat_template.jinja alone is enough; invalid JSON is a ConfigError", () => {
    assert.equal(loadTokenizerConfig(tmp), undefined);
    writeFileSync(join(tmp, "chat_template.jinja"), "{{ messages[0].content }}");
    assert.equal(loadTokenizerConfig(tmp)?.chatTemplate, "{{ messages[0].content }}");
    writeFileSync(join(tmp, "tokenizer_config.json"), JSON.stringify({ ...QWEN2_CONFIG }));
    const c = loadTokenizerConfig(tmp)!;
    assert.equal(c.chatTemplate, "{{ messages[0].content }}");
    assert.equal(c.eosToken, "<|im_end|>");
    assert.equal(c.file, join(tmp, "tokenizer_config.json"));
    writeFileSync(join(tmp, "tokenizer_config.json"), "{ nope");
    assert.throws(() => loadTokenizerConfig(tmp), ConfigError);
  });
});
