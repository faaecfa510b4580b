import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { compeft, reconstruct, type CompeftCompressed } from "./compeft.js";
import { readCompeftFile, writeCompeftFile } from "./file.js";
import { COMPEFT_MAGIC, decodeCompeft, encodeCompeft } from "./format.js";

function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function gaussian(n: number, seed: number, scale = 1): Float32Array {
  const r = rng(seed);
  return Float32Array.from({ length: n }, () => scale * Math.sqrt(-2 * Math.log(1 - r())) * Math.cos(2 * Math.PI * r()));
}

function sample(density = 0.1, sizes = [4096, 2048, 1000]): CompeftCompressed {
  const m = new Map<string, Float32Array>();
  sizes.forEach((n, i) => m.set(`base_model.model.layers.${i}.lora_A.weight`, gaussian(n, 100 + i, 0.01)));
  return compeft(m, { density, alpha: 1.25 });
}

const varintLen = (v: number): number => (v < 2 ** 7 ? 1 : v < 2 ** 14 ? 2 : v < 2 ** 21 ? 3 : v < 2 ** 28 ? 4 : 5);

/** Expected encoded size, computed from the layout: preamble + header + per-tensor varints and sign bytes. */
function expectedSize(c: CompeftCompressed, headerBytes: number): number {
  let size = 16 + headerBytes;
  for (const t of c.tensors) {
    size += varintLen(t.positions.length) + Math.ceil(t.positions.length / 8);
    let prev = -1;
    for (const p of t.positions) {
      size += varintLen(p - prev - 1);
      prev = p;
    }
  }
  return size + 4; // the CRC-32 trailer
}

function headerLength(bytes: Uint8Array): number {
  return new DataView(bytes.buffer, bytes.byteOffset).getUint32(12, true);
}

/** Assemble a file from a header object and a body, for malformed-input tests. */
function build(header: unknown, body: number[], version = 1): Uint8Array {
  const json = typeof header === "string" ? new TextEncoder().encode(header) : new TextEncoder().encode(JSON.stringify(header));
  const out = new Uint8Array(16 + json.length + body.length);
  out.set(COMPEFT_MAGIC);
  const dv = new DataView(out.buffer);
  dv.setUint32(8, version, true);
  dv.setUint32(12, json.length, true);
  out.set(json, 16);
  out.set(body, 16 + json.length);
  return out;
}

const HEADER = {
  format: "compeft",
  version: 1,
  density: 0.5,
  alpha: 1,
  std: 0.5,
  scale: 0.5,
  tensors: [{ name: "w", shape: [2, 3], dtype: "float32", baseline: 0 }],
};

function codeOf(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    return (e as { code?: string }).code ?? String(e);
  }
  return "no error";
}

describe("encode / decode", () => {
  test("round trip is lossless: same entries, bit-identical reconstruction", () => {
    const c = sample();
    const bytes = encodeCompeft(c);
    const d = decodeCompeft(bytes, "mem");
    assert.equal(d.scale, c.scale);
    assert.equal(d.std, c.std);
    assert.equal(d.density, c.density);
    assert.equal(d.alpha, c.alpha);
    assert.deepEqual(d.tensors, c.tensors.map((t) => ({ ...t, shape: [...t.shape] })));
    const a = reconstruct(c);
    const b = reconstruct(d);
    for (const [k, t] of a) assert.deepEqual(b.get(k)!.data, t.data, k);
    assert.deepEqual(encodeCompeft(d), bytes);
  });

  test("the encoded size follows the layout and shrinks with density (bytes per parameter reported)", (t) => {
    const params = 4096 + 2048 + 1000;
    const sizes: number[] = [];
    const bodies: number[] = [];
    for (const density of [0.5, 0.1, 0.01]) {
      const c = sample(density);
      const bytes = encodeCompeft(c);
      assert.equal(bytes.length, expectedSize(c, headerLength(bytes)));
      const body = bytes.length - 16 - headerLength(bytes) - 4;
      const kept = c.tensors.reduce((s, x) => s + x.positions.length, 0);
      // A kept entry costs one varint byte while its gap is < 128 (almost always at density ≥ 0.1,
      // ~28% of gaps need two bytes at 0.01) plus one sign bit; counts and sign padding add a few bytes.
      const perEntry = density >= 0.1 ? 1.125 : 1.5;
      assert.ok(body <= kept * perEntry + 3 * 2 + 3, `body ${body} bytes for ${kept} entries`);
      t.diagnostic(
        `density ${density}: ${bytes.length} bytes, ${(bytes.length / params).toFixed(4)} bytes/param ` +
          `(body ${(body / params).toFixed(4)}), ${((4 * params) / bytes.length).toFixed(1)}× smaller than float32`,
      );
      sizes.push(bytes.length);
      bodies.push(body);
    }
    assert.ok(sizes[0]! > sizes[1]! && sizes[1]! > sizes[2]!);
    // Past the fixed header, density 0.1 costs ≈ 0.1125 bytes/param: > 30× smaller than float32.
    assert.ok((4 * params) / bodies[1]! > 30, "density 0.1 body should be > 30× smaller than dense float32");
  });

  test("empty tensors and a tensor with no kept entries round-trip", () => {
    const m = new Map([
      ["a", gaussian(50, 1)],
      ["empty", new Float32Array(0)],
      ["zeros", new Float32Array(9)],
    ]);
    const c = compeft(m, { density: 0.2, alpha: 1 });
    const d = decodeCompeft(encodeCompeft(c));
    assert.deepEqual(d.tensors.map((t) => t.positions.length), [11, 0, 0]); // ⌊0.2 · 59⌋, all in "a"
    assert.deepEqual(reconstruct(d).get("zeros")!.data, new Float32Array(9));
  });
});

describe("decode errors", () => {
  const good = encodeCompeft(sample(0.05, [300, 200]));

  test("bad magic", () => {
    const b = good.slice();
    b[1] = 0x58;
    assert.throws(() => decodeCompeft(b, "x.cpeft"), (e: Error & { code?: string }) => {
      assert.equal(e.code, "PEFT_ERR_COMPEFT_MAGIC");
      assert.match(e.message, /x\.cpeft/);
      assert.match(e.message, /89 58 50/);
      return true;
    });
    assert.equal(codeOf(() => decodeCompeft(new TextEncoder().encode('{"__metadata__": {}}'))), "PEFT_ERR_COMPEFT_MAGIC");
  });

  test("unknown version names it and the supported one", () => {
    const b = good.slice();
    new DataView(b.buffer).setUint32(8, 7, true);
    assert.throws(() => decodeCompeft(b, "f"), (e: Error & { code?: string; version?: number }) => {
      assert.equal(e.code, "PEFT_ERR_COMPEFT_VERSION");
      assert.equal(e.version, 7);
      assert.match(e.message, /version 7/);
      assert.match(e.message, /reads version 1, 2, 3/);
      return true;
    });
  });

  test("every truncation is reported as truncated, naming the tensor and byte where data ran out", () => {
    for (let len = 0; len < good.length; len++) {
      assert.equal(codeOf(() => decodeCompeft(good.subarray(0, len))), "PEFT_ERR_COMPEFT_TRUNCATED", `cut at ${len}`);
    }
    const hl = headerLength(good);
    const cut = 16 + hl + 3; // inside the first tensor's positions
    assert.throws(() => decodeCompeft(good.subarray(0, cut), "f"), (e: Error & { tensor?: string; offset?: number }) => {
      assert.equal(e.tensor, "base_model.model.layers.0.lora_A.weight");
      assert.equal(e.offset, cut);
      assert.match(e.message, /byte \d+/);
      return true;
    });
    assert.throws(() => decodeCompeft(good.subarray(0, good.length - 1)), (e: Error & { tensor?: string }) => {
      assert.equal(e.tensor, "base_model.model.layers.1.lora_A.weight");
      return true;
    });
  });

  test("invalid header JSON and invalid header fields", () => {
    assert.equal(codeOf(() => decodeCompeft(build("{not json", [0]))), "PEFT_ERR_COMPEFT_HEADER");
    assert.equal(codeOf(() => decodeCompeft(build("[1, 2]", []))), "PEFT_ERR_COMPEFT_HEADER");
    const bytes = build(HEADER, [0]);
    bytes[16 + 3] = 0xff; // invalid UTF-8 inside the JSON
    assert.equal(codeOf(() => decodeCompeft(bytes)), "PEFT_ERR_COMPEFT_HEADER");
    const variants: [string, unknown][] = [
      ["format", { ...HEADER, format: "safetensors" }],
      ["version", { ...HEADER, version: 2 }],
      ["density", { ...HEADER, density: 0 }],
      ["scale", { ...HEADER, scale: 0.7 }],
      ["tensors", { ...HEADER, tensors: "w" }],
      ["tensors[0].dtype", { ...HEADER, tensors: [{ ...HEADER.tensors[0], dtype: "int8" }] }],
      ["tensors[0].shape", { ...HEADER, tensors: [{ ...HEADER.tensors[0], shape: [2, -3] }] }],
      ["tensors[1].name", { ...HEADER, tensors: [HEADER.tensors[0], HEADER.tensors[0]] }],
      ["tensors[0].baseline", { ...HEADER, tensors: [{ ...HEADER.tensors[0], baseline: 0.1 }] }],
    ];
    for (const [path, h] of variants) {
      assert.throws(() => decodeCompeft(build(h, [0, 0]), "h.cpeft"), (e: Error & { code?: string; path?: string }) => {
        assert.equal(e.code, "PEFT_ERR_COMPEFT_HEADER", path);
        assert.equal(e.path, path);
        return true;
      });
    }
    // The same header with a valid body decodes.
    assert.equal(decodeCompeft(build(HEADER, [1, 4, 0])).tensors[0]!.positions[0], 4);
  });

  test("counts and positions inconsistent with the shape", () => {
    assert.throws(() => decodeCompeft(build(HEADER, [7, 0, 0, 0, 0, 0, 0, 0, 0]), "c.cpeft"), (e: Error & { code?: string }) => {
      assert.equal(e.code, "PEFT_ERR_COMPEFT_COUNT");
      assert.match(e.message, /7 kept entries/);
      assert.match(e.message, /'w'/);
      return true;
    });
    // count 2: positions 3 and 3 + 1 + 2 = 6 ≥ 6 elements.
    assert.equal(codeOf(() => decodeCompeft(build(HEADER, [2, 3, 2, 0]))), "PEFT_ERR_COMPEFT_COUNT");
  });

  test("malformed bytes: trailing data, non-zero padding bits, over-long varint", () => {
    assert.equal(codeOf(() => decodeCompeft(build(HEADER, [1, 4, 0, 9]))), "PEFT_ERR_COMPEFT_FORMAT");
    assert.equal(codeOf(() => decodeCompeft(build(HEADER, [1, 4, 0b10]))), "PEFT_ERR_COMPEFT_FORMAT");
    assert.equal(codeOf(() => decodeCompeft(build(HEADER, [0x80, 0x80, 0x80, 0x80, 0x80, 0x00]))), "PEFT_ERR_COMPEFT_FORMAT");
    assert.equal(codeOf(() => decodeCompeft(build(HEADER, [0xff, 0xff, 0xff, 0xff, 0x7f]))), "PEFT_ERR_COMPEFT_FORMAT");
  });
});

describe("files", () => {
  test("write atomically and read back; errors name the file", () => {
    const dir = mkdtempSync(join(tmpdir(), "compeft-"));
    try {
      const path = join(dir, "adapter.cpeft");
      const c = sample(0.1, [500, 300]);
      writeCompeftFile(path, c);
      assert.deepEqual(readdirSync(dir), ["adapter.cpeft"]); // no temporary file left behind
      assert.deepEqual(readFileSync(path), Buffer.from(encodeCompeft(c)));
      const back = readCompeftFile(path);
      for (const [k, t] of reconstruct(c)) assert.deepEqual(reconstruct(back).get(k)!.data, t.data);

      // Overwrite replaces the whole file.
      const c2 = sample(0.01, [50]);
      writeCompeftFile(path, c2);
      assert.equal(readCompeftFile(path).tensors.length, 1);

      const bad = join(dir, "bad.cpeft");
      writeFileSync(bad, Buffer.from(encodeCompeft(c).subarray(0, 40)));
      assert.throws(() => readCompeftFile(bad), (e: Error & { code?: string }) => {
        assert.equal(e.code, "PEFT_ERR_COMPEFT_TRUNCATED");
        assert.ok(e.message.startsWith(bad));
        return true;
      });
      assert.throws(() => readCompeftFile(join(dir, "absent.cpeft")), { code: "PEFT_ERR_MISSING_FILE" });
      // Writing into a missing folder fails without creating anything.
      assert.throws(() => writeCompeftFile(join(dir, "missing", "x.cpeft"), c));
      assert.equal(existsSync(join(dir, "missing")), false);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("format version 2: dense tensors and metadata", () => {
  const dense = [
    { name: "head.bias", tensor: { dtype: "float16", shape: [3], data: Uint16Array.of(0x3c00, 0xbc00, 0x7e00) } },
    { name: "head.weight", tensor: { dtype: "float32", shape: [2, 2], data: Float32Array.of(1.5, -2, NaN, 1e-30) } },
    { name: "norm", tensor: { dtype: "bfloat16", shape: [1], data: Uint16Array.of(0x3f80) } },
    { name: "wide", tensor: { dtype: "float64", shape: [2], data: Float64Array.of(Math.PI, -0) } },
  ] as const;
  const withDense = (): CompeftCompressed => ({ ...sample(0.1, [300, 200]), dense, metadata: { adapter_config: { peft_type: "LORA", r: 8 }, note: [1, "x", null] } });

  test("dense tensors round-trip bit for bit after the sparse ones; metadata as JSON", () => {
    const c = withDense();
    const bytes = encodeCompeft(c);
    assert.equal(new DataView(bytes.buffer).getUint32(8, true), 3);
    const back = decodeCompeft(bytes);
    assert.deepEqual(back.metadata, c.metadata);
    assert.deepEqual(back.dense!.map((d) => [d.name, d.tensor.dtype, d.tensor.shape]), dense.map((d) => [d.name, d.tensor.dtype, d.tensor.shape]));
    back.dense!.forEach((d, i) => assert.deepEqual(new Uint8Array(d.tensor.data.buffer), new Uint8Array(dense[i]!.tensor.data.buffer.slice(0))));
    // dense values are the last bytes of the file, in header order
    const tail = 6 + 16 + 2 + 16 + 4; // + the CRC-32 trailer
    assert.deepEqual(bytes.subarray(bytes.length - tail, bytes.length - tail + 6), new Uint8Array(dense[0].tensor.data.buffer));
    const rec = reconstruct(back, "source");
    assert.equal(rec.get("wide")!.dtype, "float64");
    assert.equal(reconstruct(back).get("norm")!.dtype, "float32");
    assert.deepEqual(reconstruct(back).get("norm")!.data, Float32Array.of(1));
  });

  test("truncation inside dense data names the tensor; bad v2 headers are header errors", () => {
    const bytes = encodeCompeft(withDense());
    assert.throws(() => decodeCompeft(bytes.subarray(0, bytes.length - 3), "d.cpeft"), (e: Error & { code?: string; tensor?: string }) => {
      assert.equal(e.code, "PEFT_ERR_COMPEFT_TRUNCATED");
      assert.equal(e.tensor, "wide");
      return true;
    });
    const v2 = { ...HEADER, version: 2, dense: [], metadata: {} };
    assert.equal(decodeCompeft(build(v2, [1, 4, 0], 2)).tensors[0]!.positions[0], 4);
    const variants: [string, unknown][] = [
      ["dense", { ...v2, dense: undefined }],
      ["metadata", { ...v2, metadata: [1] }],
      ["dense[0].name", { ...v2, dense: [{ name: "w", shape: [1], dtype: "float32" }] }],
      ["dense[0].dtype", { ...v2, dense: [{ name: "d", shape: [1], dtype: "int64" }] }],
      ["dense[0].shape", { ...v2, dense: [{ name: "d", shape: [-1], dtype: "float32" }] }],
    ];
    for (const [path, h] of variants) {
      assert.throws(() => decodeCompeft(build(h, [1, 4, 0, 0, 0, 0, 0], 2)), (e: Error & { code?: string; path?: string }) => {
        assert.equal(e.code, "PEFT_ERR_COMPEFT_HEADER", path);
        assert.equal(e.path, path);
        return true;
      });
    }
  });

  test("the encoder refuses dense tensors it cannot store", () => {
    const c = sample(0.1, [100]);
    const bad = (d: unknown) => () => encodeCompeft({ ...c, dense: [d as never] });
    assert.throws(bad({ name: "i", tensor: { dtype: "int64", shape: [1], data: BigInt64Array.of(1n) } }), { code: "PEFT_ERR_COMPEFT_HEADER" });
    assert.throws(bad({ name: "s", tensor: { dtype: "float32", shape: [3], data: Float32Array.of(1) } }), { code: "PEFT_ERR_COMPEFT_HEADER" });
    assert.throws(bad({ name: c.tensors[0]!.name, tensor: { dtype: "float32", shape: [1], data: Float32Array.of(1) } }), { code: "PEFT_ERR_COMPEFT_HEADER" });
  });
});
