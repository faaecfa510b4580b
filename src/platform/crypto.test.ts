import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { test } from "node:test";
import { sha256Hex as browserSha256 } from "./crypto.browser.js";
import { sha256Hex } from "./crypto.js";

test("the browser SHA-256 equals node:crypto's on edge lengths and mixed parts", () => {
  const enc = new TextEncoder();
  for (const n of [0, 1, 55, 56, 63, 64, 65, 119, 120, 1000, 70_001]) {
    const bytes = Uint8Array.from({ length: n }, (_, i) => (i * 131 + n) & 255);
    const want = createHash("sha256").update(bytes).digest("hex");
    assert.equal(browserSha256(bytes), want, `length ${n}`);
    assert.equal(sha256Hex(bytes), want);
  }
  const parts = ["héllo ✓", enc.encode("bytes"), "", "tail"] as const;
  assert.equal(browserSha256(...parts), sha256Hex(...parts));
  assert.equal(browserSha256("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
});
