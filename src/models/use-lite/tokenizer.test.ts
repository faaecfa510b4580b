import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { TokenizerError } from "../../errors.js";
import { readUseLiteReference } from "./reference-fixture.js";
import { UseLiteTokenizer } from "./tokenizer.js";
import { useLitePackageDir } from "./weights.js";

const RESERVED: [string, number][] = [["\ufffd", 0], ["<s>", 0], ["</s>", 0], ["extra_token_id_1", 0], ["extra_token_id_2", 0], ["extra_token_id_3", 0]];

/** A tokenizer over the reserved rows plus `pieces` (ids 6, 7, …). */
function tiny(pieces: [string, number | null][]): UseLiteTokenizer {
  return UseLiteTokenizer.fromVocab([...RESERVED, ...pieces], "tiny-vocab");
}

describe("UseLiteTokenizer against the package tokenizer (committed fixture)", () => {
  const ref = readUseLiteReference();
  const tok = UseLiteTokenizer.load(join(useLitePackageDir(), "vocab.json"));

  test("the fixture covers ~30 varied texts, the empty string among them", () => {
    assert.ok(ref.tokenization.length >= 30);
    assert.ok(ref.tokenization.some((r) => r.text === ""));
    assert.ok(ref.tokenization.some((r) => r.ids.includes(0)), "some text has unknown characters");
  });

  for (const { text, ids } of ref.tokenization) {
    test(`ids of ${JSON.stringify(text.length > 40 ? `${text.slice(0, 40)}…` : text)}`, () => {
      assert.deepEqual(tok.encode(text), ids);
    });
  }

  test("vocabulary size and piece strings", () => {
    assert.equal(tok.vocabSize, 8000);
    assert.deepEqual(tok.pieces(tok.encode("Hello world.")), ["\u2581H", "ello", "\u2581world", "."]);
    assert.throws(() => tok.pieces([8000]), TokenizerError);
  });
});

describe("UseLiteTokenizer rules", () => {
  test("normalisation: NFKC, spaces to ▁, one leading ▁, empty stays empty", () => {
    assert.equal(UseLiteTokenizer.normalize(""), "");
    assert.equal(UseLiteTokenizer.normalize("a  b"), "\u2581a\u2581\u2581b");
    assert.equal(UseLiteTokenizer.normalize("\ufb01ne\tX"), "\u2581fine\tX");
  });

  test("Viterbi picks the best total score", () => {
    // ▁a(−1.5)+b(−2) = −3.5 beats ▁(−1)+ab(−3) = −4 and ▁+a+b = −5
    const t = tiny([["\u2581", -1], ["a", -2], ["b", -2], ["ab", -3], ["\u2581a", -1.5]]);
    assert.deepEqual(t.encode("ab"), [10, 8]);
  });

  test("unknown characters get id 0 and consecutive unknowns merge", () => {
    const t = tiny([["\u2581", -1], ["a", -2]]);
    assert.deepEqual(t.encode("a c"), [6, 7, 6, 0]);
    assert.deepEqual(t.encode("ccc a"), [6, 0, 6, 7]);
    assert.deepEqual(t.encode(""), []);
  });

  test("ties go to the later start", () => {
    // "▁x": ▁x (−2) ties with ▁ (−1) + x (−1); the later start (x) wins
    const t = tiny([["x", -1], ["\u2581", -1], ["\u2581x", -2]]);
    assert.deepEqual(t.encode("x"), [7, 6]);
  });

  test("a best score of exactly 0 counts as unset (reference quirk)", () => {
    // end 2: ▁q scores 0 first, then ▁+q (−2) replaces it because best === 0 reads as unset
    const t = tiny([["\u2581q", 0], ["\u2581", -1], ["q", -1]]);
    assert.deepEqual(t.encode("q"), [7, 8]);
    // with a non-zero score the better piece is kept
    const u = tiny([["\u2581q", -0.5], ["\u2581", -1], ["q", -1]]);
    assert.deepEqual(u.encode("q"), [6]);
  });

  test("a null score counts as 0, the later of duplicate pieces wins", () => {
    const t = tiny([["\u2581", -1], ["z", null], ["z", -9], ["zz", -3]]);
    // z has id 8 with score −9 (the later row): ▁ + zz (−4) beats ▁ + z + z (−19)
    assert.deepEqual(t.encode("zz"), [6, 9]);
    const n = tiny([["\u2581", -1], ["z", null], ["zz", -3]]);
    // null → 0: ▁ + z + z (−1) beats ▁ + zz (−4)
    assert.deepEqual(n.encode("zz"), [6, 7, 7]);
  });

  test("encodeBatch pads right, truncates to maxLength and keeps width ≥ 1", () => {
    const t = tiny([["\u2581", -1], ["a", -2], ["\u2581a", -1.5]]);
    const b = t.encodeBatch(["a a a", "", "a"], { maxLength: 2 });
    assert.deepEqual(b.inputIds.shape, [3, 2]);
    assert.deepEqual(Array.from(b.inputIds.data, Number), [8, 8, 0, 0, 8, 0]);
    assert.deepEqual(Array.from(b.attentionMask.data, Number), [1, 1, 0, 0, 1, 0]);
    assert.deepEqual(b.lengths, [2, 0, 1]);
    const empty = t.encodeBatch(["", ""]);
    assert.deepEqual(empty.inputIds.shape, [2, 1]);
    assert.deepEqual(Array.from(empty.attentionMask.data, Number), [0, 0]);
    const fixed = t.encodeBatch(["a"], { padding: "max_length", maxLength: 4 });
    assert.deepEqual(fixed.inputIds.shape, [1, 4]);
    assert.throws(() => t.encodeBatch(["a"], { maxLength: 0 }), TokenizerError);
  });
});

describe("UseLiteTokenizer input errors", () => {
  const dir = mkdtempSync(join(tmpdir(), "use-lite-tok-"));
  after(() => rmSync(dir, { recursive: true, force: true }));

  test("a vocab that is not a list of [piece, score] rows names the file and row", () => {
    const f = join(dir, "vocab.json");
    writeFileSync(f, JSON.stringify([...RESERVED, ["ok", -1], ["bad", "x"]]));
    assert.throws(() => UseLiteTokenizer.load(f), (e: unknown) => e instanceof TokenizerError && e.file === f && /row 7/.test(e.message));
    writeFileSync(f, JSON.stringify({ pieces: [] }));
    assert.throws(() => UseLiteTokenizer.load(f), TokenizerError);
    assert.throws(() => tiny([["", -1]]), /row 6/);
  });
});
