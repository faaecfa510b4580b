import { test, describe, mock } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { AdapterNameError, ConfigError, MissingFileError, PathTraversalError, TensorDataError } from "../errors.js";
import { fixturePath } from "../util/paths.js";
import { f32 } from "../tensor.js";
import { adapterDirFor, formatAdapterConfig, readAdapterDir, safeJoin, validateAdapterName, writeAdapterDir } from "./peft-files.js";
import { loadSafetensors } from "./safetensors.js";
import { PEFT_TS_VERSION } from "../util/version.js";
import { WRITER_METADATA_KEY } from "./writer.js";
import { assertSameSafetensors } from "./writer.test-util.js";

function withDir(fn: (dir: string) => void): void {
  const dir = mkdtempSync(join(tmpdir(), "peft-ts-adapter-"));
  try {
    fn(dir);
  } finally {
    rmSync(dir, { recursive: true });
  }
}

describe("validateAdapterName", () => {
  test("accepts ordinary names", () => {
    for (const n of ["default", "my_task", "task-2", "Ünïcode", "a b"]) assert.equal(validateAdapterName(n), n);
  });
  const bad: [string, RegExp][] = [
    ["", /empty/],
    ["a/b", /path separator/],
    ["a\\b", /path separator/],
    ["..", /'\.\.'/],
    ["x..y", /'\.\.'/],
    ["v1.2", /'\.'/],
    ["nul\u0000byte", /control characters/],
    ["tab\tname", /control characters/],
    [" padded", /whitespace/],
    ["__base__", /reserved/],
    ["x".repeat(256), /at most 255/],
  ];
  for (const [name, why] of bad) {
    test(`rejects ${JSON.stringify(name.length > 20 ? `${name.slice(0, 8)}…` : name)}`, () =>
      assert.throws(() => validateAdapterName(name), (e: unknown) => e instanceof AdapterNameError && e.adapterName === name && why.test(e.message)));
  }
});

describe("safeJoin", () => {
  const root = resolve("/srv/adapters");
  test("joins names inside the root", () => {
    assert.equal(safeJoin(root, "a"), join(root, "a"));
    assert.equal(safeJoin(root, "a/b/c.json"), join(root, "a", "b", "c.json"));
    assert.equal(safeJoin(root, "a\\b"), join(root, "a", "b"));
    assert.equal(safeJoin(root, "./a"), join(root, "a"));
  });
  for (const name of ["..", "../x", "a/../../x", "a/..", "/etc/passwd", "\\\\server\\share", "C:\\x", "c:x", "a\\..\\..\\x", "a\u0000b", ""]) {
    test(`refuses ${JSON.stringify(name)}`, () =>
      assert.throws(() => safeJoin(root, name), (e: unknown) => e instanceof PathTraversalError && e.root === root && e.relPath === name));
  }
  test("adapterDirFor: default adapter in the root, others in a subfolder", () => {
    assert.equal(adapterDirFor(root, "default"), root);
    assert.equal(adapterDirFor(root, "other"), join(root, "other"));
    assert.throws(() => adapterDirFor(root, "../evil"), AdapterNameError);
  });
});

describe("readAdapterDir", () => {
  test("reads a reference PEFT LoRA adapter", () => {
    const dir = fixturePath("peft-parity", "bert", "lora");
    const a = readAdapterDir(dir);
    assert.equal(a.configFile, join(dir, "adapter_config.json"));
    assert.equal(a.weightsFile, join(dir, "adapter_model.safetensors"));
    assert.equal(a.configRaw["peft_type"], "LORA");
    assert.equal(a.configRaw["r"], 4);
    assert.deepEqual(a.weightsMetadata, { format: "pt" });
    const w = a.weights.get("base_model.model.bert.encoder.layer.0.attention.self.query.lora_A.weight");
    assert.ok(w);
    assert.deepEqual(w.shape, [4, 32]);
  });

  test("missing folder, config, weights; pickle-only is refused with a hint", () =>
    withDir((dir) => {
      const missing = join(dir, "nope");
      assert.throws(() => readAdapterDir(missing), (e: unknown) => e instanceof MissingFileError && e.file === missing);
      assert.throws(() => readAdapterDir(dir), (e: unknown) => e instanceof MissingFileError && e.file === join(dir, "adapter_config.json"));
      writeFileSync(join(dir, "adapter_config.json"), '{"peft_type":"LORA"}');
      assert.throws(
        () => readAdapterDir(dir),
        (e: unknown) => e instanceof MissingFileError && e.file === join(dir, "adapter_model.safetensors") && !/adapter_model\.bin/.test(e.message),
      );
      writeFileSync(join(dir, "adapter_model.bin"), "PK");
      assert.throws(
        () => readAdapterDir(dir),
        (e: unknown) => e instanceof MissingFileError && /found adapter_model\.bin, but only safetensors is supported/.test(e.message),
      );
    }));

  test("invalid adapter_config.json", () =>
    withDir((dir) => {
      writeFileSync(join(dir, "adapter_config.json"), "[1]");
      assert.throws(() => readAdapterDir(dir), (e: unknown) => e instanceof ConfigError && e.file === join(dir, "adapter_config.json") && /JSON object/.test(e.issue));
      writeFileSync(join(dir, "adapter_config.json"), "{");
      assert.throws(() => readAdapterDir(dir), (e: unknown) => e instanceof ConfigError && /not valid JSON/.test(e.issue));
    }));
});

describe("writeAdapterDir", () => {
  test("round-trips a reference adapter; config written like PEFT (sorted, indent 2)", () =>
    withDir((dir) => {
      const src = readAdapterDir(fixturePath("peft-parity", "gpt2", "lora"));
      const out = join(dir, "nested", "copy");
      const { configFile, weightsFile } = writeAdapterDir(out, src.configRaw, src.weights);
      const back = readAdapterDir(out);
      assert.deepEqual(back.configRaw, src.configRaw);
      assert.deepEqual([...back.weights.keys()], [...src.weights.keys()]);
      for (const [k, t] of src.weights) assert.deepEqual([...back.weights.get(k)!.data], [...t.data], k);
      // Same header and data bytes as the Python writer for the weights; only the writer record is added
      assert.equal(src.weightsMetadata[WRITER_METADATA_KEY], undefined, "the fixture was written by Python");
      assertSameSafetensors(readFileSync(weightsFile), readFileSync(src.weightsFile), PEFT_TS_VERSION, "adapter_model.safetensors");
      assert.deepEqual(back.weightsMetadata, { format: "pt", peft_ts_version: PEFT_TS_VERSION });
      // The config matches PEFT's text except that Python prints whole floats as "0.0".
      const pythonText = readFileSync(src.configFile, "utf8").replace(/^(\s*"[^"]+": -?\d+)\.0(,?)$/gm, "$1$2");
      assert.equal(readFileSync(configFile, "utf8"), pythonText);
      assert.deepEqual(readdirSync(out).sort(), ["adapter_config.json", "adapter_model.safetensors"]);
    }));

  test("formatAdapterConfig escapes non-ASCII like json.dumps and sorts nested keys", () => {
    assert.equal(formatAdapterConfig({ b: { z: 1, a: "é\u007f" }, a: [] }), '{\n  "a": [],\n  "b": {\n    "a": "\\u00e9\\u007f",\n    "z": 1\n  }\n}');
    assert.throws(() => formatAdapterConfig({ n: 1n } as unknown as Record<string, unknown>, "cfg.json"), (e: unknown) => e instanceof ConfigError && e.file === "cfg.json");
  });

  test("a failure never leaves a half-written adapter", () =>
    withDir((dir) => {
      const w1 = { "base_model.model.x.lora_A.weight": f32([1, 2], [1, 2]) };
      writeAdapterDir(dir, { r: 1 }, w1);
      const beforeCfg = readFileSync(join(dir, "adapter_config.json"));
      const beforeW = readFileSync(join(dir, "adapter_model.safetensors"));
      // Invalid tensor: rejected before any write.
      assert.throws(() => writeAdapterDir(dir, { r: 2 }, { bad: { dtype: "float32", shape: [3], data: new Float32Array(2) } }), TensorDataError);
      // The disk fails while writing the second (config) file: the new weights must not land either.
      const realWrite = fs.writeSync;
      let calls = 0;
      const spy = mock.method(fs, "writeSync", ((...args: Parameters<typeof fs.writeSync>) => {
        calls++;
        if (calls > 2) throw Object.assign(new Error("EIO: i/o error"), { code: "EIO" });
        return (realWrite as (...a: Parameters<typeof fs.writeSync>) => number)(...args);
      }) as typeof fs.writeSync);
      try {
        assert.throws(() => writeAdapterDir(dir, { r: 2 }, { "base_model.model.x.lora_A.weight": f32([1, 2], [7, 8]) }), /EIO/);
      } finally {
        spy.mock.restore();
      }
      assert.ok(calls > 2);
      assert.equal(Buffer.compare(readFileSync(join(dir, "adapter_config.json")), beforeCfg), 0);
      assert.equal(Buffer.compare(readFileSync(join(dir, "adapter_model.safetensors")), beforeW), 0);
      assert.deepEqual(readdirSync(dir).sort(), ["adapter_config.json", "adapter_model.safetensors"]);
      // And a successful write replaces both.
      writeAdapterDir(dir, { r: 2 }, { "base_model.model.x.lora_A.weight": f32([1, 2], [7, 8]) });
      assert.deepEqual(readAdapterDir(dir).configRaw, { r: 2 });
      assert.deepEqual([...loadSafetensors(join(dir, "adapter_model.safetensors")).tensors.values()][0]!.data, Float32Array.from([7, 8]));
    }));

  test("creates the folder, including parents", () =>
    withDir((dir) => {
      const out = join(dir, "a", "b");
      mkdirSync(join(dir, "a"));
      writeAdapterDir(out, { peft_type: "IA3" }, new Map());
      assert.deepEqual(readAdapterDir(out).weights.size, 0);
    }));
});
