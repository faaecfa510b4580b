import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { MissingFileError, ZipFormatError } from "../errors.js";
import { tensor } from "../tensor.js";
import { adapterFromFiles, adapterToFiles, folderFiles } from "./file-map.js";
import { readAdapterDir, writeAdapterDir } from "./peft-files.js";
import { crc32, readZip, writeZip } from "./zip.js";
import { PEFT_TS_VERSION } from "../util/version.js";

const config = { peft_type: "LORA", r: 2, lora_alpha: 4, target_modules: ["q"] };
const weights = new Map([["base_model.model.q.lora_A.weight", tensor("float32", [2, 3], Float32Array.from([1, 2, 3, 4, 5, 6]))]]);

test("adapterToFiles writes the bytes writeAdapterDir writes, and adapterFromFiles reads them as readAdapterDir does", () => {
  const dir = mkdtempSync(join(tmpdir(), "peft-filemap-"));
  try {
    writeAdapterDir(dir, config, weights);
    const files = adapterToFiles(config, weights);
    for (const name of ["adapter_config.json", "adapter_model.safetensors"]) assert.deepEqual(files.get(name), new Uint8Array(readFileSync(join(dir, name))), name);
    const fromDisk = readAdapterDir(dir);
    const fromMem = adapterFromFiles(new Map([...files].map(([k, v]) => [`my-adapter/${k}`, v])), "picked");
    assert.deepEqual(fromMem.configRaw, fromDisk.configRaw);
    assert.deepEqual(fromMem.weights, fromDisk.weights);
    assert.deepEqual(fromMem.weightsMetadata, { format: "pt", peft_ts_version: PEFT_TS_VERSION });
    assert.equal(fromMem.weightsFile, "picked/adapter_model.safetensors");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("adapterFromFiles names the missing file", () => {
  const files = adapterToFiles(config, weights);
  files.delete("adapter_model.safetensors");
  assert.throws(() => adapterFromFiles(files, "x"), (e) => e instanceof MissingFileError && e.file === "x/adapter_model.safetensors");
});

test("folderFiles strips the folder that holds the marker file", () => {
  const f = folderFiles(new Map([["a/b/config.json", new Uint8Array(1)], ["a/b/w.bin", new Uint8Array(2)], ["other.txt", new Uint8Array(3)]]), "config.json");
  assert.deepEqual([...f.keys()].sort(), ["config.json", "w.bin"]);
});

test("zip: writeZip → readZip round trip; unzip(1) reads it; deflated archives from zip(1) are read", async () => {
  const files = new Map([
    ["adapter_config.json", new TextEncoder().encode('{"r": 2}')],
    ["sub/ünï.bin", Uint8Array.from({ length: 5000 }, (_, i) => i % 7)],
    ["empty", new Uint8Array(0)],
  ]);
  const zip = writeZip(files);
  assert.deepEqual(await readZip(zip), files);
  assert.equal(crc32(new TextEncoder().encode("hello")), 907060870);
  const dir = mkdtempSync(join(tmpdir(), "peft-zip-"));
  try {
    writeFileSync(join(dir, "a.zip"), zip);
    const { spawnSync } = await import("node:child_process");
    const t = spawnSync("unzip", ["-t", join(dir, "a.zip")], { encoding: "utf8" });
    if (t.status !== null && !t.error) assert.equal(t.status, 0, t.stdout + t.stderr);
    writeFileSync(join(dir, "big.txt"), "peft ".repeat(2000));
    const z = spawnSync("zip", ["-q", "-9", join(dir, "d.zip"), "big.txt"], { cwd: dir });
    if (!z.error && z.status === 0) {
      const got = await readZip(new Uint8Array(readFileSync(join(dir, "d.zip"))));
      assert.equal(new TextDecoder().decode(got.get("big.txt")), "peft ".repeat(2000));
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const bad = zip.slice();
  bad[30 + 19 + 2] = bad[30 + 19 + 2]! ^ 0xff; // a byte of the first entry's data (after its 30-byte header and 19-byte name)
  await assert.rejects(readZip(bad, "bad.zip"), (e) => e instanceof ZipFormatError && /CRC-32/.test(e.message));
  await assert.rejects(readZip(new Uint8Array(10), "x.zip"), ZipFormatError);
});
