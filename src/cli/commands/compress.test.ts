import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { readCompeftFile } from "../../compress/compeft/file.js";
import { readAdapterDir } from "../../io/peft-files.js";
import { fixturePath } from "../../util/paths.js";
import { runCli } from "../main.js";

const lora = fixturePath("peft-parity", "bert", "lora");

describe("peft compress compeft / peft decompress", () => {
  test("round trip through the CLI, text and JSON output", async () => {
    const dir = mkdtempSync(join(tmpdir(), "cli-compeft-"));
    try {
      const file = join(dir, "a.cpeft");
      const r = await runCli(["compress", "compeft", "--density", "0.2", "--alpha", "1.5", lora, "-o", file]);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /^wrote .*a\.cpeft: ComPEFT of a LORA adapter, kept \d+ of 1,024 entries \(density 0\.2, alpha 1\.5\), 2 tensors stored dense/);
      const c = readCompeftFile(file);
      assert.equal(c.density, 0.2);
      assert.equal(c.alpha, 1.5);
      const j = await runCli(["compress", "compeft", lora, "-o", join(dir, "b.cpeft"), "--json"]);
      const rep = JSON.parse(j.stdout) as { density: number; alpha: number; kept: number; sparseParams: number; bytes: number; sourceBytes: number };
      assert.deepEqual([rep.density, rep.alpha, rep.kept, rep.sparseParams], [0.1, 1, 102, 1024], "defaults: density 0.1, alpha 1");
      assert.ok(rep.bytes < rep.sourceBytes);

      const out = join(dir, "restored");
      const d = await runCli(["decompress", file, "-o", out]);
      assert.equal(d.code, 0, d.stderr);
      assert.match(d.stdout, /wrote PEFT adapter .*restored \(10 tensors\)/);
      assert.deepEqual(readAdapterDir(out).configRaw, readAdapterDir(lora).configRaw);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("bad options and corrupt files exit 1 with the error code, writing nothing", async () => {
    const dir = mkdtempSync(join(tmpdir(), "cli-compeft-"));
    try {
      const file = join(dir, "a.cpeft");
      const bad = await runCli(["compress", "compeft", "--density", "1.5", lora, "-o", file]);
      assert.equal(bad.code, 1);
      assert.match(bad.stderr, /--density.*must be a number in \(0, 1\]/);
      const missing = await runCli(["compress", "compeft", lora]);
      assert.equal(missing.code, 1);
      assert.match(missing.stderr, /required option '-o, --out <file>'/);
      assert.equal(existsSync(file), false);
      assert.equal((await runCli(["compress", "compeft", lora, "-o", file])).code, 0);
      const bytes = readFileSync(file);
      writeFileSync(file, bytes.subarray(0, bytes.length - 5));
      const out = join(dir, "out");
      const r = await runCli(["decompress", file, "-o", out]);
      assert.equal(r.code, 1);
      assert.match(r.stderr, /^error \[PEFT_ERR_COMPEFT_TRUNCATED\]: .*a\.cpeft: truncated ComPEFT data/);
      assert.equal(existsSync(out), false);
      const v = Buffer.from(bytes);
      v.writeUInt32LE(99, 8);
      writeFileSync(file, v);
      assert.match((await runCli(["decompress", file, "-o", out])).stderr, /^error \[PEFT_ERR_COMPEFT_VERSION\]: .*version 99 is not supported/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
