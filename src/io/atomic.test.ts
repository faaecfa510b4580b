import { test, describe, mock } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { tempPathFor, writeFileAtomic, writeFileAtomicWith, writeFilesAtomic } from "./atomic.js";

function withDir(fn: (dir: string) => void): void {
  const dir = mkdtempSync(join(tmpdir(), "peft-ts-atomic-"));
  try {
    fn(dir);
  } finally {
    rmSync(dir, { recursive: true });
  }
}

describe("writeFileAtomic", () => {
  test("writes strings as UTF-8 and bytes verbatim, replacing an existing file", () =>
    withDir((dir) => {
      const p = join(dir, "a.txt");
      writeFileAtomic(p, "héllo");
      assert.equal(readFileSync(p, "utf8"), "héllo");
      const bytes = Uint8Array.from([0, 1, 2, 255]);
      writeFileAtomic(p, bytes.subarray(1));
      assert.deepEqual([...readFileSync(p)], [1, 2, 255]);
      assert.deepEqual(readdirSync(dir), ["a.txt"]);
    }));

  test("the temporary name sits next to the target with pid and random suffix", () => {
    const a = tempPathFor("/x/y/model.safetensors");
    const b = tempPathFor("/x/y/model.safetensors");
    assert.match(a, new RegExp(`^/x/y/model\\.safetensors\\.tmp-${process.pid}-[0-9a-f]{12}$`));
    assert.notEqual(a, b);
  });

  test("a writer that throws leaves the old file and no temporary file", () =>
    withDir((dir) => {
      const p = join(dir, "keep.bin");
      writeFileSync(p, "old");
      assert.throws(
        () =>
          writeFileAtomicWith(p, (fd) => {
            fs.writeSync(fd, "partial new content");
            throw new Error("boom");
          }),
        /boom/,
      );
      assert.equal(readFileSync(p, "utf8"), "old");
      assert.deepEqual(readdirSync(dir), ["keep.bin"]);
    }));

  test("a failing rename (target is a non-empty folder) removes the temporary file", () =>
    withDir((dir) => {
      const p = join(dir, "target");
      mkdirSync(p);
      writeFileSync(join(p, "inside"), "x");
      assert.throws(() => writeFileAtomic(p, "data"));
      assert.deepEqual(readdirSync(dir), ["target"]);
      assert.equal(readFileSync(join(p, "inside"), "utf8"), "x");
    }));

  test("writing into a missing folder fails without creating anything", () =>
    withDir((dir) => {
      assert.throws(() => writeFileAtomic(join(dir, "nope", "f"), "x"), /ENOENT/);
      assert.deepEqual(readdirSync(dir), []);
    }));
});

describe("writeFilesAtomic", () => {
  test("writes several files", () =>
    withDir((dir) => {
      writeFilesAtomic([
        { path: join(dir, "a.json"), data: "{}" },
        { path: join(dir, "b.bin"), write: (fd) => fs.writeSync(fd, Uint8Array.from([7, 8])) },
      ]);
      assert.equal(readFileSync(join(dir, "a.json"), "utf8"), "{}");
      assert.deepEqual([...readFileSync(join(dir, "b.bin"))], [7, 8]);
      assert.deepEqual(readdirSync(dir).sort(), ["a.json", "b.bin"]);
    }));

  test("if the second file fails, neither target changes and all temp files are gone", () =>
    withDir((dir) => {
      const a = join(dir, "a.json");
      const b = join(dir, "b.bin");
      writeFileSync(a, "old-a");
      writeFileSync(b, "old-b");
      assert.throws(
        () =>
          writeFilesAtomic([
            { path: a, data: "new-a" },
            {
              path: b,
              write: () => {
                throw new Error("serialisation failed");
              },
            },
          ]),
        /serialisation failed/,
      );
      assert.equal(readFileSync(a, "utf8"), "old-a");
      assert.equal(readFileSync(b, "utf8"), "old-b");
      assert.deepEqual(readdirSync(dir).sort(), ["a.json", "b.bin"]);
    }));

  test("short writes are completed", () =>
    withDir((dir) => {
      const real = fs.writeSync;
      // Let the OS accept at most 3 bytes per call.
      const spy = mock.method(fs, "writeSync", ((fd: number, buf: Uint8Array, off: number, len: number) =>
        (real as (fd: number, b: Uint8Array, o: number, l: number) => number)(fd, buf, off, Math.min(len, 3))) as typeof fs.writeSync);
      try {
        writeFilesAtomic([{ path: join(dir, "s.txt"), data: "abcdefghij" }]);
      } finally {
        spy.mock.restore();
      }
      assert.equal(readFileSync(join(dir, "s.txt"), "utf8"), "abcdefghij");
    }));
});
