import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { ConfigError, MissingFileError, UnsupportedOptionError } from "../../errors.js";
import { floatToHalf } from "../../tensor.js";
import { loadTfjsWeights, readTfjsModelJson } from "./tfjs-weights.js";
import { useLitePackageDir } from "./weights.js";

const dir = mkdtempSync(join(tmpdir(), "use-lite-tfjs-"));
after(() => rmSync(dir, { recursive: true, force: true }));

function bytesOf(a: ArrayBufferView): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

/** Writes model.json + shards into a fresh folder; `groups` gives each group's weights and raw stream. */
function writeModel(name: string, groups: { weights: unknown[]; stream: Uint8Array; shardSize: number }[], extra: Record<string, unknown> = {}): string {
  const d = join(dir, name);
  mkdirSync(d);
  const manifest = groups.map((grp, gi) => {
    const paths: string[] = [];
    for (let off = 0, k = 0; off < grp.stream.byteLength || k === 0; off += grp.shardSize, k++) {
      const p = `group${gi + 1}-shard${k + 1}`;
      writeFileSync(join(d, p), grp.stream.subarray(off, off + grp.shardSize));
      paths.push(p);
    }
    return { paths, weights: grp.weights };
  });
  const file = join(d, "model.json");
  writeFileSync(file, JSON.stringify({ modelTopology: { node: [{ name: "x", op: "Placeholder", attr: {} }] }, weightsManifest: manifest, ...extra }));
  return file;
}

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.byteLength;
  }
  return out;
}

describe("TF.js weight decoding (as tf.io.decodeWeights)", () => {
  const f32 = Float32Array.of(1.5, -2.25, 3.125, 1e-3, -7);
  const i32 = Int32Array.of(-3, 0, 2147483647);
  const bools = Uint8Array.of(1, 0, 1);
  const u8 = Uint8Array.of(0, 1, 255, 7);
  const u16 = Uint16Array.of(0, 3, 10);
  const halves = [1, -2, 1 / 3, 65504];
  const f16 = Uint16Array.from(halves, floatToHalf);
  const q8 = { dtype: "uint8", scale: 0.1, min: -1 };
  const q16 = { dtype: "uint16", scale: 0.4, min: -1 };

  const file = writeModel("ok", [
    {
      weights: [
        { name: "f32", shape: [5], dtype: "float32" },
        { name: "i32", shape: [3], dtype: "int32" },
        { name: "bool", shape: [3], dtype: "bool" },
      ],
      stream: concat(bytesOf(f32), bytesOf(i32), bools),
      shardSize: 7, // weights straddle shard boundaries
    },
    {
      weights: [
        { name: "q8", shape: [2, 2], dtype: "float32", quantization: q8 },
        { name: "q16", shape: [3], dtype: "int32", quantization: q16 },
        { name: "f16", shape: [4], dtype: "float32", quantization: { dtype: "float16" } },
      ],
      stream: concat(u8, bytesOf(u16), bytesOf(f16)),
      shardSize: 1024,
    },
  ]);

  test("plain, quantised and multi-shard weights decode to their values", () => {
    const w = loadTfjsWeights(readTfjsModelJson(file));
    assert.deepEqual([...w.keys()], ["f32", "i32", "bool", "q8", "q16", "f16"]);
    assert.deepEqual(Array.from(w.get("f32")!.data as Float32Array), Array.from(f32));
    assert.deepEqual(Array.from(w.get("i32")!.data as Int32Array), Array.from(i32));
    assert.equal(w.get("bool")!.dtype, "bool");
    assert.deepEqual(Array.from(w.get("bool")!.data as Uint8Array), Array.from(bools));
    const q8w = w.get("q8")!;
    assert.deepEqual(q8w.shape, [2, 2]);
    // q·scale + min in double precision, rounded once to float32
    assert.deepEqual(Array.from(q8w.data as Float32Array), Array.from(u8, (q) => Math.fround(q * q8.scale + q8.min)));
    assert.deepEqual(Array.from(w.get("q16")!.data as Int32Array), Array.from(u16, (q) => Math.round(q * q16.scale + q16.min)));
    assert.deepEqual(Array.from(w.get("f16")!.data as Float32Array), halves.map((h) => Math.fround(h === 1 / 3 ? 0.333251953125 : h)));
  });

  test("a truncated shard, a missing shard or unused bytes raise typed errors", () => {
    const short = writeModel("short", [{ weights: [{ name: "a", shape: [4], dtype: "float32" }], stream: new Uint8Array(12), shardSize: 100 }]);
    assert.throws(() => loadTfjsWeights(readTfjsModelJson(short)), (e: unknown) => e instanceof ConfigError && e.file === short && /'a' needs bytes 0\.\.16/.test(e.message));
    const extra = writeModel("extra", [{ weights: [{ name: "a", shape: [1], dtype: "float32" }], stream: new Uint8Array(8), shardSize: 100 }]);
    assert.throws(() => loadTfjsWeights(readTfjsModelJson(extra)), ConfigError);
    const gone = writeModel("gone", [{ weights: [{ name: "a", shape: [1], dtype: "float32" }], stream: new Uint8Array(4), shardSize: 100 }]);
    rmSync(join(gone, "..", "group1-shard1"));
    assert.throws(() => loadTfjsWeights(readTfjsModelJson(gone)), MissingFileError);
  });

  test("unsupported dtypes and malformed quantization are rejected, not skipped", () => {
    const str = writeModel("str", [{ weights: [{ name: "s", shape: [1], dtype: "string" }], stream: new Uint8Array(8), shardSize: 100 }]);
    assert.throws(() => loadTfjsWeights(readTfjsModelJson(str)), (e: unknown) => e instanceof UnsupportedOptionError && /weights\[0\]\.dtype/.test(e.message));
    const q4 = writeModel("q4", [{ weights: [{ name: "q", shape: [1], dtype: "float32", quantization: { dtype: "int4" } }], stream: new Uint8Array(1), shardSize: 100 }]);
    assert.throws(() => readTfjsModelJson(q4), UnsupportedOptionError);
    const noScale = writeModel("noscale", [{ weights: [{ name: "q", shape: [1], dtype: "float32", quantization: { dtype: "uint8", min: 0 } }], stream: new Uint8Array(1), shardSize: 100 }]);
    assert.throws(() => readTfjsModelJson(noScale), (e: unknown) => e instanceof ConfigError && /quantization\.scale/.test(e.message));
    const f16int = writeModel("f16int", [{ weights: [{ name: "q", shape: [1], dtype: "int32", quantization: { dtype: "float16" } }], stream: new Uint8Array(2), shardSize: 100 }]);
    assert.throws(() => loadTfjsWeights(readTfjsModelJson(f16int)), UnsupportedOptionError);
    const layers = join(dir, "layers.json");
    writeFileSync(layers, JSON.stringify({ modelTopology: { class_name: "Sequential" }, weightsManifest: [] }));
    assert.throws(() => readTfjsModelJson(layers), (e: unknown) => e instanceof ConfigError && e.path === "modelTopology.node");
  });
});

describe("the installed USE-lite graph", () => {
  test("model.json parses and every manifest weight decodes", () => {
    const m = readTfjsModelJson(join(useLitePackageDir(), "model.json"));
    assert.equal(m.nodes.length, 317);
    const specs = m.weightsManifest.flatMap((g) => g.weights);
    assert.ok(specs.every((s) => s.quantization === undefined), "the package weights are not quantised");
    const w = loadTfjsWeights(m);
    assert.equal(w.size, specs.length);
    for (const s of specs) assert.deepEqual(w.get(s.name)!.shape, s.shape);
  });
});
