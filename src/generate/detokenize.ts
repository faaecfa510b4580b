/**
 * Streaming detokenisation as transformers' `TextStreamer` does it: decode the output so far
 * and emit the new suffix, except while it ends in U+FFFD (a UTF-8 character split across
 * byte-level BPE or SentencePiece byte-fallback tokens is still incomplete). The last few prompt
 * tokens are decoded in front of the output and cut off again (vLLM's prefix offset), so a
 * SentencePiece word-start space of the first output token is kept. Stop strings are found in
 * the decoded text, across token boundaries; text that could still begin a stop string is held
 * back until it cannot, so the stop text is never emitted.
 */
import type { HfTokenizer } from "../io/tokenizer.js";

const PREFIX_TOKENS = 5;
const INCOMPLETE = "\uFFFD";

export class OutputText {
  private readonly ids: number[] = [];
  private readonly prefix: number[];
  private readonly prefixText: string;
  private emitted = 0;
  private checked = 0;
  private readonly longestStop: number;
  /** The final text once a stop string was found (cut before it). */
  private stoppedAt: string | null = null;

  constructor(
    private readonly tokenizer: HfTokenizer,
    promptIds: readonly number[],
    private readonly stopStrings: readonly string[] = [],
  ) {
    this.prefix = promptIds.slice(-PREFIX_TOKENS).filter((id) => this.decodable(id));
    this.prefixText = this.decodeList(this.prefix);
    this.longestStop = Math.max(0, ...stopStrings.map((s) => s.length));
  }

  private decodable(id: number): boolean {
    return this.tokenizer.idToToken(id) !== undefined;
  }

  private decodeList(ids: readonly number[]): string {
    return ids.length === 0 ? "" : this.tokenizer.decode(ids, { skipSpecialTokens: true });
  }

  /** The whole output decoded (ids outside the tokenizer's vocabulary decode to nothing). */
  get fullText(): string {
    const ids = this.ids.filter((id) => this.decodable(id));
    const withPrefix = this.decodeList([...this.prefix, ...ids]);
    return withPrefix.startsWith(this.prefixText) ? withPrefix.slice(this.prefixText.length) : this.decodeList(ids);
  }

  /** The text emitted so far (the final text after `push(…, true)` or a stop). */
  get text(): string {
    return this.stoppedAt ?? this.fullText.slice(0, this.emitted);
  }

  /**
   * Adds a token; returns the newly valid text and whether a stop string ended the output.
   * `last`: no more tokens follow, so everything left is emitted (even an incomplete character).
   */
  push(id: number, last = false): { delta: string; stop: boolean } {
    if (this.stoppedAt !== null) return { delta: "", stop: true };
    this.ids.push(id);
    const full = this.fullText;
    if (this.longestStop > 0) {
      const from = Math.max(0, this.checked - this.longestStop + 1);
      let at = -1;
      for (const s of this.stopStrings) {
        const i = full.indexOf(s, from);
        if (i >= 0 && (at < 0 || i < at)) at = i;
      }
      this.checked = full.length;
      if (at >= 0) {
        const cut = full.slice(0, Math.max(at, this.emitted));
        const delta = cut.slice(this.emitted);
        this.emitted = cut.length;
        this.stoppedAt = cut;
        return { delta, stop: true };
      }
    }
    let end = full.length;
    if (!last) {
      if (full.endsWith(INCOMPLETE)) return { delta: "", stop: false };
      end -= this.heldBack(full);
    }
    if (end <= this.emitted) return { delta: "", stop: false };
    const delta = full.slice(this.emitted, end);
    this.emitted = end;
    return { delta, stop: false };
  }

  /** Emits whatever is left (the output ended for another reason than a stop string). */
  flush(): string {
    if (this.stoppedAt !== null) return "";
    const full = this.fullText;
    const delta = full.slice(this.emitted);
    this.emitted = full.length;
    return delta;
  }

  /** Characters at the end of `text` that begin some stop string. */
  private heldBack(text: string): number {
    let hold = 0;
    for (const s of this.stopStrings) {
      for (let k = Math.min(s.length - 1, text.length); k > hold; k--) {
        if (text.endsWith(s.slice(0, k))) {
          hold = k;
          break;
        }
      }
    }
    return hold;
  }
}
