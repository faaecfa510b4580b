import assert from "node:assert/strict";
import { test } from "node:test";
import { idxExamples, parseIdx } from "./idx.js";

function idx(shape: number[], data: number[]): Uint8Array {
  const out = new Uint8Array(4 + 4 * shape.length + data.length);
  out.set([0, 0, 8, shape.length]);
  const v = new DataView(out.buffer);
  shape.forEach((d, i) => v.setUint32(4 + 4 * i, d, false));
  out.set(data, 4 + 4 * shape.length);
  return out;
}

test("IDX: images [n, h, w] and labels [n] parse into pixel-byte examples", () => {
  const images = parseIdx(idx([2, 2, 3], [0, 1, 2, 3, 4, 5, 250, 251, 252, 253, 254, 255]), "img");
  assert.deepEqual(images.shape, [2, 2, 3]);
  const labels = parseIdx(idx([2], [7, 3]), "lab");
  const ex = idxExamples(images, labels, "img");
  assert.deepEqual(ex.map((e) => [Array.from(e.pixels), e.label]), [[[0, 1, 2, 3, 4, 5], 7], [[250, 251, 252, 253, 254, 255], 3]]);
});

test("IDX: malformed files are DatasetErrors naming the file", () => {
  const bad = (bytes: Uint8Array, re: RegExp) =>
    assert.throws(() => parseIdx(bytes, "f.idx"), (e: unknown) => (e as { code?: string }).code === "PEFT_ERR_DATASET" && /f\.idx/.test((e as Error).message) && re.test((e as Error).message));
  bad(Uint8Array.of(0x1f, 0x8b, 8, 0), /gzip/);
  bad(Uint8Array.of(0, 0, 0x0d, 1, 0, 0, 0, 1, 0, 0, 0, 0), /element type 0xd/);
  bad(idx([2, 2], [1, 2, 3]), /needs 4 bytes/);
  bad(Uint8Array.of(0, 0, 8, 2, 0, 0), /truncated/);
  assert.throws(() => idxExamples(parseIdx(idx([2, 1, 1], [1, 2]), "i"), parseIdx(idx([3], [1, 2, 3]), "l"), "i"), /do not match/);
});
