/**
 * Live parity against the package's own TF.js runtime (`@energetic-ai/embeddings`, a dev
 * dependency; skipped when it is not installed). Runs in about a second.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { loadUseLite } from "./convert.js";
import { UseLiteEmbedder } from "./embed.js";
import { maxAbsDiff } from "./reference-fixture.js";
import { loadTfjsUseLite, type TfjsUseLite } from "./tfjs-reference.js";

const reference = await loadTfjsUseLite();
const skip = reference ? false : "@energetic-ai/embeddings is not installed";

/** Seeded random strings over ASCII, spaces, accents, CJK, emoji and pieces with ':' (null scores). */
function randomTexts(n: number, seed: number): string[] {
  const pool = [..."abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", " ", " ", " ", "  ", ".", ",", ":", "://", ":)", ":00", ":30",
    "!", "?", "'", "\"", "-", "\t", "\n", "é", "ü", "ß", "ñ", "ﬁ", "ｆ", "①", "中", "語", "😀", "👍🏽", "★", "▁", "\u0301", "the", "ing", "tion", "▁un"];
  let s = seed >>> 0;
  const next = () => (s = (Math.imul(s, 1103515245) + 12345) >>> 0) / 2 ** 32;
  return Array.from({ length: n }, () => Array.from({ length: Math.floor(next() * 25) }, () => pool[Math.floor(next() * pool.length)]!).join(""));
}

describe("USE-lite live against TF.js", { skip }, () => {
  const model = loadUseLite();
  let ref: TfjsUseLite;
  let embedder: UseLiteEmbedder;
  before(async () => {
    ref = reference!;
    embedder = await UseLiteEmbedder.create({ model, threads: 2 });
  });
  after(async () => embedder?.release());

  test("token ids equal the package tokenizer's on 500 random strings", () => {
    const texts = randomTexts(500, 7);
    for (const text of texts) assert.deepEqual(model.tokenizer.encode(text), ref.encode(text), JSON.stringify(text));
  });

  test("embeddings of texts outside the fixture equal TF.js to ≤ 1e-4", async (t) => {
    const texts = ["Is it going to rain tomorrow?", "Ich bin ein Berliner.", ...randomTexts(6, 11).filter((s) => s.trim() !== ""), "Last one."];
    const [mine, theirs] = [await embedder.embed(texts), await ref.embed(texts)];
    assert.equal(theirs.length, texts.length);
    const worst = Math.max(...mine.map((row, i) => maxAbsDiff(row, theirs[i]!)));
    t.diagnostic(`max |peft-ts − TF.js| = ${worst.toExponential(2)}`);
    assert.ok(worst <= 1e-4);
  });
});
