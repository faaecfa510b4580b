import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { OutputText } from "./detokenize.js";
import { byteLevelTokenizer, sentencePieceTokenizer } from "./test-tokenizers.test-util.js";

/** Feeds `ids` one by one; returns the deltas and the final text. */
function run(t: OutputText, ids: readonly number[]): { deltas: string[]; stop: boolean } {
  const deltas: string[] = [];
  let stop = false;
  ids.forEach((id, i) => {
    const r = t.push(id, i === ids.length - 1);
    deltas.push(r.delta);
    stop ||= r.stop;
  });
  return { deltas, stop };
}

describe("streaming detokenisation", () => {
  test("byte-level BPE: a character split across tokens is emitted once it is complete", () => {
    const tok = byteLevelTokenizer();
    const ids = tok.encode("aé€b", { addSpecialTokens: false }).ids; // é = 2 bytes, € = 3 bytes: one token per byte
    assert.equal(ids.length, 1 + 2 + 3 + 1);
    const t = new OutputText(tok, tok.encode("x", { addSpecialTokens: false }).ids);
    const { deltas } = run(t, ids);
    assert.deepEqual(deltas, ["a", "", "é", "", "", "€", "b"]);
    assert.equal(t.text, "aé€b");
    assert.ok(!deltas.join("").includes("\uFFFD"));
  });

  test("SentencePiece byte fallback: <0xXX> pieces join into one character; the word-start space after the prompt is kept", () => {
    const tok = sentencePieceTokenizer(["▁hello", "▁world", "▁", "o"]);
    const id = (p: string) => tok.tokenToId(p)!;
    const prompt = [1, id("▁hello")];
    // " world" then "é" as two byte pieces, then " "
    const ids = [id("▁world"), id("<0xC3>"), id("<0xA9>"), id("▁")];
    const t = new OutputText(tok, prompt);
    const { deltas } = run(t, ids.slice(0, 3));
    assert.deepEqual(deltas, [" world", "", "é"]);
    assert.equal(t.text, " worldé");
  });

  test("a stop string spanning tokens ends the text before it and is never emitted", () => {
    const tok = byteLevelTokenizer();
    const ids = tok.encode("one STOP two", { addSpecialTokens: false }).ids;
    const t = new OutputText(tok, [], ["STOP"]);
    const { deltas, stop } = run(t, ids);
    assert.ok(stop);
    assert.equal(t.text, "one ");
    assert.equal(deltas.join(""), "one ");
    assert.ok(deltas.every((d) => !d.includes("S")), "the start of the stop string was held back, not streamed");
  });

  test("held-back text that does not become a stop string is released", () => {
    const tok = byteLevelTokenizer();
    const ids = tok.encode("a STOX", { addSpecialTokens: false }).ids;
    const t = new OutputText(tok, [], ["STOP"]);
    const deltas = ids.map((id) => t.push(id).delta);
    assert.equal(deltas.slice(0, -1).join(""), "a "); // "STO" could still begin "STOP"…
    assert.equal(deltas.at(-1), "STOX"); // …until X
    assert.equal(t.flush(), "");
    assert.equal(t.text, "a STOX");
  });
});
