/** Tiny tokenizers for generation tests: GPT-2 byte-level BPE and SentencePiece-style byte fallback. */
import { HfTokenizer } from "../io/tokenizer.js";

/** GPT-2's bytes_to_unicode: the printable stand-in of every byte, in vocabulary order. */
export function byteLevelAlphabet(): string[] {
  const bs: number[] = [];
  for (let b = 33; b <= 126; b++) bs.push(b);
  for (let b = 161; b <= 172; b++) bs.push(b);
  for (let b = 174; b <= 255; b++) bs.push(b);
  const cs = [...bs];
  let n = 0;
  for (let b = 0; b < 256; b++) {
    if (!bs.includes(b)) {
      bs.push(b);
      cs.push(256 + n++);
    }
  }
  const byByte = new Array<string>(256);
  bs.forEach((b, i) => (byByte[b] = String.fromCodePoint(cs[i]!)));
  return bs.map((b) => byByte[b]!);
}

/** Byte-level BPE over the 256 byte symbols (ids in bytes_to_unicode order) plus `merges` and `<|endoftext|>` last. */
export function byteLevelTokenizerJson(merges: readonly [string, string][] = []): Record<string, unknown> {
  const vocab = byteLevelAlphabet();
  for (const [a, b] of merges) vocab.push(a + b);
  const eos = vocab.length;
  vocab.push("<|endoftext|>");
  return {
    version: "1.0",
    added_tokens: [{ id: eos, content: "<|endoftext|>", single_word: false, lstrip: false, rstrip: false, normalized: true, special: true }],
    normalizer: null,
    pre_tokenizer: { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true },
    post_processor: null,
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
      merges: merges.map(([a, b]) => `${a} ${b}`),
    },
  };
}

export function byteLevelTokenizer(merges: readonly [string, string][] = []): HfTokenizer {
  return HfTokenizer.fromJson(byteLevelTokenizerJson(merges), {}, "byte-level/tokenizer.json");
}

/** A SentencePiece (Llama-style) BPE with byte fallback: `<0xXX>` tokens for bytes not in the vocabulary. */
export function sentencePieceTokenizer(pieces: readonly string[]): HfTokenizer {
  const vocab = ["<unk>", "<s>", "</s>", ...Array.from({ length: 256 }, (_, b) => `<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`), ...pieces];
  const json = {
    version: "1.0",
    added_tokens: [
      { id: 0, content: "<unk>", single_word: false, lstrip: false, rstrip: false, normalized: false, special: true },
      { id: 1, content: "<s>", single_word: false, lstrip: false, rstrip: false, normalized: false, special: true },
      { id: 2, content: "</s>", single_word: false, lstrip: false, rstrip: false, normalized: false, special: true },
    ],
    normalizer: { type: "Sequence", normalizers: [{ type: "Prepend", prepend: "▁" }, { type: "Replace", pattern: { String: " " }, content: "▁" }] },
    pre_tokenizer: null,
    post_processor: null,
    decoder: {
      type: "Sequence",
      decoders: [{ type: "Replace", pattern: { String: "▁" }, content: " " }, { type: "ByteFallback" }, { type: "Fuse" }, { type: "Strip", content: " ", start: 1, stop: 0 }],
    },
    model: {
      type: "BPE",
      dropout: null,
      unk_token: "<unk>",
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: true,
      byte_fallback: true,
      vocab: Object.fromEntries(vocab.map((t, i) => [t, i])),
      merges: [],
    },
  };
  return HfTokenizer.fromJson(json, {}, "sentencepiece/tokenizer.json");
}
