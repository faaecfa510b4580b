import { test, describe } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Tokenizer } from "@huggingface/tokenizers";
import { ConfigError, MissingFileError, TokenizerError } from "../errors.js";
import { HfTokenizer, loadTokenizer } from "./tokenizer.js";

const special = (id: number, content: string) => ({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });

/** A tiny BERT-style WordPiece tokenizer, in the layout the Rust library saves. */
function bertJson(): Record<string, unknown> {
  const vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "hello", "world", "the", "cat", "sat", "on", "mat", "##s", "!", "a"];
  return {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: [special(0, "[PAD]"), special(1, "[UNK]"), special(2, "[CLS]"), special(3, "[SEP]")],
    normalizer: { type: "BertNormalizer", clean_text: true, handle_chinese_chars: true, strip_accents: null, lowercase: true },
    pre_tokenizer: { type: "BertPreTokenizer" },
    post_processor: {
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
    },
    decoder: { type: "WordPiece", prefix: "##", cleanup: true },
    model: {
      type: "WordPiece",
      unk_token: "[UNK]",
      continuing_subword_prefix: "##",
      max_input_chars_per_word: 100,
      vocab: Object.fromEntries(vocab.map((t, i) => [t, i])),
    },
  };
}

/** A tiny GPT-2-style byte-level BPE tokenizer without a pad token. */
function gpt2Json(): Record<string, unknown> {
  const vocab = ["h", "e", "l", "o", "Ġ", "w", "r", "d", "he", "ll", "hell", "hello", "<|endoftext|>"];
  return {
    version: "1.0",
    added_tokens: [special(12, "<|endoftext|>")],
    normalizer: null,
    pre_tokenizer: { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true },
    post_processor: { type: "ByteLevel", add_prefix_space: true, trim_offsets: false, use_regex: true },
    decoder: { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: "BPE",
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: "",
      end_of_word_suffix: "",
      fuse_unk: false,
      byte_fallback: false,
      vocab: Object.fromEntries(vocab.map((t, i) => [t, i])),
      merges: ["h e", "l l", "he ll", "hell o"],
    },
  };
}

const bert = (cfg: Record<string, unknown> = { pad_token: "[PAD]", model_max_length: 512 }) => HfTokenizer.fromJson(bertJson(), cfg, "bert/tokenizer.json");

describe("tokenizer: WordPiece with a template post-processor", () => {
  test("encode adds [CLS]/[SEP], lowercases and splits sub-words", () => {
    const e = bert().encode("Hello cats!");
    assert.deepEqual(e.tokens, ["[CLS]", "hello", "cat", "##s", "!", "[SEP]"]);
    assert.deepEqual(e.ids, [2, 4, 7, 11, 12, 3]);
    assert.deepEqual(e.attentionMask, [1, 1, 1, 1, 1, 1]);
    assert.deepEqual(e.tokenTypeIds, [0, 0, 0, 0, 0, 0]);
  });

  test("agrees with the library's own encode for single texts", () => {
    const lib = new Tokenizer(bertJson(), {});
    const t = bert();
    for (const s of ["the cat sat on a mat", "Hello world!", "zebra", ""]) {
      assert.deepEqual(t.encode(s).ids, lib.encode(s).ids, s);
    }
  });

  test("unknown words map to [UNK]; addSpecialTokens: false leaves them out", () => {
    assert.deepEqual(bert().encode("zebra cat", { addSpecialTokens: false }).ids, [1, 7]);
  });

  test("pairs get segment ids 0/1", () => {
    const e = bert().encode("the cat", { textPair: "sat on a mat" });
    assert.deepEqual(e.ids, [2, 6, 7, 3, 8, 9, 13, 10, 3]);
    assert.deepEqual(e.tokenTypeIds, [0, 0, 0, 0, 1, 1, 1, 1, 1]);
  });

  test("truncation keeps the special tokens (single, both sides)", () => {
    const t = bert();
    assert.deepEqual(t.encode("the cat sat on a mat", { truncation: true, maxLength: 5 }).ids, [2, 6, 7, 8, 3]);
    const left = HfTokenizer.fromJson(bertJson(), { pad_token: "[PAD]", truncation_side: "left" });
    assert.deepEqual(left.encode("the cat sat on a mat", { truncation: true, maxLength: 5 }).ids, [2, 9, 13, 10, 3]);
  });

  test("pair truncation follows longest_first", () => {
    // budget 6 - 3 specials = 3 for lengths 2 and 4: the Rust tokenizers keep 1 and 2.
    const e = bert().encode("the cat", { textPair: "sat on a mat", truncation: true, maxLength: 6 });
    assert.deepEqual(e.ids, [2, 6, 3, 8, 9, 3]);
    // Only the longer one is cut while the shorter fits.
    const f = bert().encode("the", { textPair: "sat on a mat", truncation: true, maxLength: 7 });
    assert.deepEqual(f.ids, [2, 6, 3, 8, 9, 13, 3]);
  });

  test("truncation without maxLength uses model_max_length, else asks for one", () => {
    const t = bert({ pad_token: "[PAD]", model_max_length: 4 });
    assert.deepEqual(t.encode("the cat sat", { truncation: true }).ids, [2, 6, 7, 3]);
    const none = bert({ pad_token: "[PAD]", model_max_length: 1e30 });
    assert.equal(none.modelMaxLength, null);
    assert.throws(() => none.encode("the cat", { truncation: true }), TokenizerError);
  });

  test("batch: right padding to the longest row, int64 tensors", () => {
    const b = bert().encodeBatch(["the cat sat", "hello"]);
    assert.deepEqual(b.inputIds.shape, [2, 5]);
    assert.equal(b.inputIds.dtype, "int64");
    assert.deepEqual([...b.inputIds.data], [2n, 6n, 7n, 8n, 3n, 2n, 4n, 3n, 0n, 0n]);
    assert.deepEqual([...b.attentionMask.data], [1n, 1n, 1n, 1n, 1n, 1n, 1n, 1n, 0n, 0n]);
    assert.deepEqual(b.lengths, [5, 3]);
  });

  test("batch: max_length padding, pairs, left padding", () => {
    const b = HfTokenizer.fromJson(bertJson(), { pad_token: "[PAD]", padding_side: "left" }).encodeBatch(["the", "cat"], {
      pairs: ["mat", "on a mat"],
      padding: "max_length",
      maxLength: 8,
    });
    assert.deepEqual(b.inputIds.shape, [2, 8]);
    assert.deepEqual([...b.inputIds.data].slice(0, 8), [0n, 0n, 0n, 2n, 6n, 3n, 10n, 3n]);
    assert.deepEqual([...b.tokenTypeIds.data].slice(8), [0n, 0n, 0n, 0n, 1n, 1n, 1n, 1n]);
    assert.deepEqual([...b.attentionMask.data].slice(0, 8), [0n, 0n, 0n, 1n, 1n, 1n, 1n, 1n]);
    assert.throws(() => bert().encodeBatch(["the cat sat on a mat"], { padding: "max_length", maxLength: 4 }), /pass truncation: true/);
    assert.throws(() => bert().encodeBatch(["a", "b"], { pairs: ["c"] }), TokenizerError);
  });

  test("decode joins word pieces and can skip special tokens", () => {
    const t = bert();
    const e = t.encode("the cats sat");
    assert.equal(t.decode(e.ids, { skipSpecialTokens: true }), "the cats sat");
    assert.equal(t.decode(BigInt64Array.from([2n, 7n, 11n, 3n])), "[CLS] cats [SEP]");
    assert.equal(t.decode([]), "");
    assert.throws(() => t.decode([999]), /cannot decode id 999/);
  });
});

describe("tokenizer: byte-level BPE without a pad token", () => {
  test("BPE merges and byte-level decode round-trip", () => {
    const t = HfTokenizer.fromJson(gpt2Json(), {});
    const e = t.encode("hello world");
    assert.deepEqual(e.tokens, ["hello", "Ġ", "w", "o", "r", "l", "d"]);
    assert.deepEqual(e.ids, [11, 4, 5, 3, 6, 2, 7]);
    assert.equal(t.decode(e.ids), "hello world");
    assert.equal(t.vocabSize, 13);
  });

  test("padding needs a pad token; an override (EOS) supplies it", () => {
    const t = HfTokenizer.fromJson(gpt2Json(), {});
    assert.equal(t.padTokenId, null);
    assert.throws(() => t.encodeBatch(["hello", "hello world"]), (e: unknown) => e instanceof TokenizerError && /no pad token/.test(e.message));
    // Rows of equal length need no padding.
    assert.deepEqual(t.encodeBatch(["hello", "hello"]).inputIds.shape, [2, 1]);
    const p = HfTokenizer.fromJson(gpt2Json(), {}, "t.json", { padToken: "<|endoftext|>", paddingSide: "left" });
    const b = p.encodeBatch(["hello", "hello world"]);
    assert.deepEqual([...b.inputIds.data].slice(0, 7), [12n, 12n, 12n, 12n, 12n, 12n, 11n]);
    assert.deepEqual([...b.attentionMask.data].slice(0, 7), [0n, 0n, 0n, 0n, 0n, 0n, 1n]);
  });

  test("WordLevel: unk token comes from tokenizer.json; without one, an unknown word is an error", () => {
    const wordLevel = (unk: string | undefined) => ({
      model: { type: "WordLevel", vocab: { "<unk>": 0, hi: 1, there: 2 }, ...(unk ? { unk_token: unk } : {}) },
      pre_tokenizer: { type: "WhitespaceSplit" },
    });
    assert.deepEqual(HfTokenizer.fromJson(wordLevel("<unk>"), {}).encode("hi you there").ids, [1, 0, 2]);
    const t = HfTokenizer.fromJson(wordLevel(undefined), {});
    assert.deepEqual(t.encode("there hi").ids, [2, 1]);
    assert.throws(() => t.encode("hi you"), (e: unknown) => e instanceof TokenizerError && /'you'.*no unk token/.test(e.message));
  });
});

describe("tokenizer: files and configuration errors", () => {
  test("loadTokenizer reads tokenizer.json and tokenizer_config.json (AddedToken pad_token)", () => {
    const dir = mkdtempSync(join(tmpdir(), "peft-ts-tok-"));
    try {
      assert.throws(() => loadTokenizer(dir), (e: unknown) => e instanceof MissingFileError && e.file === join(dir, "tokenizer.json"));
      writeFileSync(join(dir, "tokenizer.json"), JSON.stringify(bertJson()));
      assert.equal(loadTokenizer(dir).padTokenId, null);
      writeFileSync(join(dir, "tokenizer_config.json"), JSON.stringify({ pad_token: { content: "[SEP]", __type: "AddedToken" }, padding_side: "left" }));
      const t = loadTokenizer(dir);
      assert.equal(t.padTokenId, 3);
      assert.equal(t.paddingSide, "left");
      writeFileSync(join(dir, "tokenizer_config.json"), JSON.stringify({ pad_token: "<nope>" }));
      assert.throws(() => loadTokenizer(dir), (e: unknown) => e instanceof ConfigError && e.path === "pad_token" && e.file === join(dir, "tokenizer_config.json"));
      writeFileSync(join(dir, "tokenizer_config.json"), JSON.stringify({ padding_side: "middle" }));
      assert.throws(() => loadTokenizer(dir), (e: unknown) => e instanceof ConfigError && e.path === "padding_side");
    } finally {
      rmSync(dir, { recursive: true });
    }
  });

  test("pad token and side default from tokenizer.json's padding section", () => {
    const json = { ...bertJson(), padding: { strategy: "BatchLongest", direction: "Left", pad_id: 0, pad_type_id: 0, pad_token: "[PAD]" } };
    const t = HfTokenizer.fromJson(json, {});
    assert.equal(t.padTokenId, 0);
    assert.equal(t.paddingSide, "left");
  });

  test("malformed tokenizer.json", () => {
    assert.throws(() => HfTokenizer.fromJson([], {}, "x.json"), (e: unknown) => e instanceof ConfigError && e.file === "x.json");
    assert.throws(() => HfTokenizer.fromJson({ version: "1.0" }, {}, "x.json"), (e: unknown) => e instanceof ConfigError && e.path === "model");
    assert.throws(() => HfTokenizer.fromJson({ model: { type: "Mystery" } }, {}, "x.json"), (e: unknown) => e instanceof ConfigError && /cannot build/.test(e.message));
  });
});
