import { test, describe, mock } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import { mkdtempSync, readFileSync, readdirSync, writeFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { FileClosedError, MissingFileError, MissingTensorError, SafetensorsFormatError, TensorDataError } from "../errors.js";
import { fixturePath } from "../util/paths.js";
import { floatToBf16, floatToHalf, tensor, type DType, type Tensor } from "../tensor.js";
import {
  SafetensorsFile,
  loadSafetensors,
  parseSafetensors,
  saveSafetensors,
  serializeSafetensors,
} from "./safetensors.js";

const tmp = (): string => mkdtempSync(join(tmpdir(), "peft-ts-st-"));

/** Builds a safetensors file from a raw header string and data bytes (no validation). */
function rawFile(header: string, data: Uint8Array = new Uint8Array(0), declaredLength?: bigint): Uint8Array {
  const h = Buffer.from(header, "utf8");
  const out = new Uint8Array(8 + h.byteLength + data.byteLength);
  new DataView(out.buffer).setBigUint64(0, declaredLength ?? BigInt(h.byteLength), true);
  out.set(h, 8);
  out.set(data, 8 + h.byteLength);
  return out;
}

function expectFault(bytes: Uint8Array, pattern: RegExp): void {
  assert.throws(
    () => parseSafetensors(bytes, "bad.safetensors"),
    (e: unknown) => {
      assert.ok(e instanceof SafetensorsFormatError, `expected SafetensorsFormatError, got ${String(e)}`);
      assert.equal(e.file, "bad.safetensors");
      assert.match(e.fault, pattern);
      assert.match(e.message, /^bad\.safetensors: /);
      return true;
    },
  );
}

const entry = (dtype: string, shape: number[], b: number, e: number): string =>
  JSON.stringify({ dtype, shape, data_offsets: [b, e] });

describe("safetensors malformed input", () => {
  test("file shorter than 8 bytes", () => expectFault(new Uint8Array(5), /shorter than the 8-byte/));
  test("header length over 100 MB", () => expectFault(rawFile("{}", undefined, 100_000_001n), /exceeds the 100000000-byte limit/));
  test("header length beyond end of file", () => expectFault(rawFile("{}", undefined, 64n), /truncated header/));
  test("header not UTF-8", () => {
    const b = rawFile("{}  ");
    b[9] = 0xff;
    expectFault(b, /not valid UTF-8/);
  });
  test("header not JSON", () => expectFault(rawFile('{"a":'), /not valid JSON/));
  test("header not an object", () => expectFault(rawFile("[1,2]"), /must be a JSON object/));
  test("entry not an object", () => expectFault(rawFile('{"w":[1]}'), /tensor 'w': header entry must be an object/));
  test("entry missing data_offsets", () => expectFault(rawFile('{"w":{"dtype":"F32","shape":[1]}}'), /missing 'data_offsets'/));
  test("unknown dtype", () => expectFault(rawFile(`{"w":${entry("F31", [1], 0, 4)}}`, new Uint8Array(4)), /dtype 'F31' is not a safetensors dtype/));
  test("valid but unsupported dtype", () => expectFault(rawFile(`{"w":${entry("U16", [1], 0, 2)}}`, new Uint8Array(2)), /'U16' is not supported by peft-ts/));
  test("negative shape", () => expectFault(rawFile(`{"w":${entry("F32", [-1], 0, 4)}}`, new Uint8Array(4)), /'shape' must be an array of non-negative integers/));
  test("fractional shape", () => expectFault(rawFile(`{"w":${entry("F32", [1.5], 0, 4)}}`, new Uint8Array(4)), /non-negative integers/));
  test("data_offsets with one element", () => expectFault(rawFile('{"w":{"dtype":"F32","shape":[1],"data_offsets":[0]}}', new Uint8Array(4)), /'data_offsets' must be \[begin, end\]/));
  test("begin > end", () => expectFault(rawFile(`{"w":${entry("F32", [0], 4, 0)}}`, new Uint8Array(4)), /begin 4 > end 0/));
  test("byte length differs from numel × size", () =>
    expectFault(rawFile(`{"w":${entry("F32", [2], 0, 4)}}`, new Uint8Array(4)), /span 4 bytes but shape \[2\] of F32 needs 8/));
  test("not starting at 0", () => expectFault(rawFile(`{"w":${entry("F32", [1], 4, 8)}}`, new Uint8Array(8)), /hole of 4 bytes .* before tensor 'w'/));
  test("hole between tensors", () =>
    expectFault(rawFile(`{"a":${entry("F32", [1], 0, 4)},"b":${entry("F32", [1], 8, 12)}}`, new Uint8Array(12)), /hole of 4 bytes .* between tensor 'a'/));
  test("overlapping tensors", () =>
    expectFault(rawFile(`{"a":${entry("F32", [2], 0, 8)},"b":${entry("F32", [1], 4, 8)}}`, new Uint8Array(8)), /overlaps tensor 'a'/));
  test("trailing garbage after the last tensor", () => expectFault(rawFile(`{"w":${entry("F32", [1], 0, 4)}}`, new Uint8Array(7)), /3 trailing bytes/));
  test("truncated data", () => expectFault(rawFile(`{"w":${entry("F32", [2], 0, 8)}}`, new Uint8Array(6)), /truncated data: the tensors need 8 data bytes but the file has 6/));
  test("__metadata__ value not a string", () => expectFault(rawFile('{"__metadata__":{"format":1}}'), /'__metadata__' value for 'format' must be a string/));
  test("__metadata__ not an object", () => expectFault(rawFile('{"__metadata__":"pt"}'), /'__metadata__' must be an object/));
  test("duplicate tensor name", () =>
    expectFault(rawFile(`{"w":${entry("F32", [1], 0, 4)},"\\u0077":${entry("F32", [1], 0, 4)}}`, new Uint8Array(4)), /key "w" more than once/));
  test("duplicate field inside an entry", () =>
    expectFault(rawFile('{"w":{"dtype":"F32","dtype":"F32","shape":[1],"data_offsets":[0,4]}}', new Uint8Array(4)), /key "w.dtype" more than once/));
  test("open() of a missing file raises MissingFileError", () =>
    assert.throws(() => SafetensorsFile.open("/nonexistent/x.safetensors"), (e: unknown) => e instanceof MissingFileError && e.file === "/nonexistent/x.safetensors"));
  test("open() reports the path of a malformed file", () => {
    const dir = tmp();
    try {
      const p = join(dir, "x.safetensors");
      writeFileSync(p, rawFile(`{"w":${entry("F32", [1], 0, 4)}}`, new Uint8Array(5)));
      assert.throws(() => SafetensorsFile.open(p), (e: unknown) => e instanceof SafetensorsFormatError && e.file === p && /trailing/.test(e.fault));
    } finally {
      rmSync(dir, { recursive: true });
    }
  });
  test("accepts unpadded headers, empty tensors and a null __metadata__", () => {
    const { tensors, metadata } = parseSafetensors(rawFile(`{"__metadata__":null,"e":${entry("I8", [0, 3], 0, 0)},"w":${entry("I8", [2], 0, 2)}}`, new Uint8Array([7, 250])));
    assert.deepEqual(metadata, {});
    assert.deepEqual(tensors.get("e")!.shape, [0, 3]);
    assert.deepEqual([...(tensors.get("w")!.data as Int8Array)], [7, -6]);
  });
});

function sampleTensors(): Map<string, Tensor> {
  const m = new Map<string, Tensor>();
  m.set("f64", tensor("float64", [2, 2], Float64Array.from([1.5, -2.25, 1e300, Number.MIN_VALUE])));
  m.set("f32", tensor("float32", [3], Float32Array.from([0.1, -7, 3.5e38])));
  m.set("f16", tensor("float16", [2], Uint16Array.from([floatToHalf(1.5), floatToHalf(-65504)])));
  m.set("bf16", tensor("bfloat16", [2], Uint16Array.from([floatToBf16(3.140625), floatToBf16(-1e30)])));
  m.set("i64", tensor("int64", [2], BigInt64Array.from([-(2n ** 63n), 2n ** 62n + 3n])));
  m.set("i32", tensor("int32", [1, 2], Int32Array.from([-2147483648, 7])));
  m.set("i16", tensor("int16", [3], Int16Array.from([-32768, 0, 32767])));
  m.set("i8", tensor("int8", [2], Int8Array.from([-128, 127])));
  m.set("u8", tensor("uint8", [2], Uint8Array.from([0, 255])));
  m.set("bool", tensor("bool", [3], Uint8Array.from([1, 0, 1])));
  m.set("scalar", tensor("float32", [], Float32Array.from([42])));
  m.set("empty", tensor("int32", [0, 4], new Int32Array(0)));
  return m;
}

describe("safetensors round trip", () => {
  test("every dtype survives serialize → parse exactly", () => {
    const src = sampleTensors();
    const { tensors, metadata } = parseSafetensors(serializeSafetensors(src, { format: "pt", note: "é" }));
    assert.deepEqual(metadata, { format: "pt", note: "é" });
    assert.deepEqual([...tensors.keys()].sort(), [...src.keys()].sort());
    for (const [k, t] of src) {
      const back = tensors.get(k)!;
      assert.equal(back.dtype, t.dtype, k);
      assert.deepEqual(back.shape, t.shape, k);
      assert.equal(back.data.constructor, t.data.constructor, k);
      assert.deepEqual([...back.data], [...t.data], k);
    }
  });

  test("save → open/get and load agree, with aligned arrays", () => {
    const dir = tmp();
    try {
      const p = join(dir, "all.safetensors");
      const src = sampleTensors();
      saveSafetensors(p, Object.fromEntries(src));
      const f = SafetensorsFile.open(p);
      assert.deepEqual(f.keys(), [...src.keys()].sort());
      const i64 = f.get("i64");
      assert.equal(i64.data.byteOffset % 8, 0);
      assert.deepEqual([...i64.data], [...src.get("i64")!.data]);
      assert.deepEqual(f.info("f32"), { dtype: "float32", shape: [3], begin: f.info("f32").begin, end: f.info("f32").begin + 12 });
      f.close();
      const { tensors } = loadSafetensors(p);
      for (const [k, t] of src) assert.deepEqual([...tensors.get(k)!.data], [...t.data], k);
    } finally {
      rmSync(dir, { recursive: true });
    }
  });

  test("layout follows the Python writer: descending dtype alignment, then name; header padded to 8", () => {
    const src = new Map<string, Tensor>([
      ["b", tensor("float32", [1], Float32Array.from([1]))],
      ["a", tensor("float32", [1], Float32Array.from([2]))],
      ["z", tensor("int64", [1], BigInt64Array.from([3n]))],
      ["m", tensor("float16", [1], Uint16Array.from([4]))],
      ["c", tensor("bool", [1], Uint8Array.from([1]))],
    ]);
    const bytes = serializeSafetensors(src);
    const n = Number(new DataView(bytes.buffer).getBigUint64(0, true));
    assert.equal(n % 8, 0);
    const header = JSON.parse(Buffer.from(bytes.subarray(8, 8 + n)).toString("utf8")) as Record<string, { data_offsets: number[] }>;
    assert.deepEqual(Object.keys(header), ["z", "a", "b", "m", "c"]);
    assert.deepEqual(header["z"]!.data_offsets, [0, 8]);
    assert.deepEqual(header["c"]!.data_offsets, [18, 19]);
  });

  test("bool values other than 0/1 are written as 1", () => {
    const { tensors } = parseSafetensors(serializeSafetensors({ b: tensor("bool", [2], Uint8Array.from([0, 7])) }));
    assert.deepEqual([...tensors.get("b")!.data], [0, 1]);
  });

  test("invalid tensors are rejected with TensorDataError", () => {
    assert.throws(() => serializeSafetensors({ w: { dtype: "float32", shape: [3], data: new Float32Array(2) } }), TensorDataError);
    assert.throws(() => serializeSafetensors({ w: { dtype: "float32", shape: [2], data: new Float64Array(2) } as unknown as Tensor }), /needs a Float32Array/);
    assert.throws(() => serializeSafetensors({ __metadata__: tensor("uint8", [1], new Uint8Array(1)) }), /reserved/);
    assert.throws(() => serializeSafetensors({ w: { dtype: "complex" as DType, shape: [1], data: new Uint8Array(1) } }), /unknown dtype/);
  });
});

describe("safetensors reference files", () => {
  test("reads the BERT base model lazily and matches its header", () => {
    const p = fixturePath("peft-parity", "bert", "base", "model.safetensors");
    const f = SafetensorsFile.open(p);
    try {
      assert.deepEqual(f.metadata, { format: "pt" });
      assert.ok(f.has("bert.embeddings.word_embeddings.weight"));
      const info = f.info("bert.embeddings.word_embeddings.weight");
      assert.deepEqual(info.shape, [128, 32]);
      assert.equal(info.dtype, "float32");
      const w = f.get("bert.embeddings.word_embeddings.weight");
      assert.equal(w.data.length, 128 * 32);
      // Check one value against the raw bytes read independently.
      const raw = readFileSync(p);
      const n = Number(raw.readBigUInt64LE(0));
      assert.equal((w.data as Float32Array)[5], raw.readFloatLE(8 + n + info.begin + 5 * 4));
      assert.throws(() => f.get("nope"), (e: unknown) => e instanceof MissingTensorError && e.key === "nope" && e.file === p);
    } finally {
      f.close();
    }
    assert.throws(() => f.get("bert.embeddings.word_embeddings.weight"), FileClosedError);
  });

  for (const rel of [
    ["bert", "lora", "adapter_model.safetensors"],
    ["gpt2", "base.outputs.safetensors"],
    ["llama", "lora.grads.safetensors"],
    ["bert", "lora.grads.safetensors"],
  ]) {
    test(`re-serialising ${rel.join("/")} reproduces the Python file byte for byte`, () => {
      const p = fixturePath("peft-parity", ...rel);
      const original = readFileSync(p);
      const { tensors, metadata } = loadSafetensors(p);
      const hasMeta = original.subarray(8, 40).toString("latin1").includes("__metadata__");
      const again = serializeSafetensors(tensors, hasMeta ? metadata : undefined);
      assert.equal(Buffer.compare(Buffer.from(again), original), 0);
    });
  }

  test("reads int64 inputs of the gpt2 outputs file", () => {
    const { tensors } = loadSafetensors(fixturePath("peft-parity", "gpt2", "base.outputs.safetensors"));
    const mask = tensors.get("attention_mask")!;
    assert.equal(mask.dtype, "int64");
    assert.deepEqual(mask.shape, [2, 10]);
    // Second row is right-padded by 3 (README): 7 ones then 3 zeros.
    assert.deepEqual([...(mask.data as BigInt64Array).slice(10)], [1n, 1n, 1n, 1n, 1n, 1n, 1n, 0n, 0n, 0n]);
  });
});

describe("safetensors lazy reading and atomic save", () => {
  test("get() reads only the header and the requested tensor's bytes", () => {
    const dir = tmp();
    try {
      const p = join(dir, "lazy.safetensors");
      const big = new Uint8Array(1 << 20).fill(0xab); // stands in for tensors we never touch
      const bytes = serializeSafetensors({
        small: tensor("float32", [2], Float32Array.from([1.25, -3])),
        huge: tensor("uint8", [big.length], big),
      });
      writeFileSync(p, bytes);
      const reads: { length: number; position: number }[] = [];
      const realRead = fs.readSync;
      const spy = mock.method(fs, "readSync", ((fd: number, buf: Uint8Array, off: number, len: number, pos: number) => {
        reads.push({ length: len, position: pos });
        return realRead(fd, buf, off, len, pos);
      }) as typeof fs.readSync);
      const n = Number(Buffer.from(bytes).readBigUInt64LE(0));
      try {
        const f = SafetensorsFile.open(p);
        assert.equal(reads.reduce((s, r) => s + r.length, 0), 8 + n);
        const small = f.get("small");
        assert.deepEqual([...small.data], [1.25, -3]);
        assert.equal(reads.reduce((s, r) => s + r.length, 0), 8 + n + 8);
        const last = reads[reads.length - 1]!;
        assert.equal(last.position, 8 + n + f.info("small").begin);
        f.close();
      } finally {
        spy.mock.restore();
      }
    } finally {
      rmSync(dir, { recursive: true });
    }
  });

  test("other tensors' bytes are never interpreted: garbage there does not matter", () => {
    const dir = tmp();
    try {
      const p = join(dir, "garbage.safetensors");
      const bytes = serializeSafetensors({
        good: tensor("int32", [2], Int32Array.from([5, 6])),
        junk: tensor("float64", [4], new Float64Array(4)),
      });
      const n = Number(Buffer.from(bytes).readBigUInt64LE(0));
      bytes.fill(0xff, 8 + n, 8 + n + 32); // float64 sorts first: its 32 bytes become NaN garbage
      writeFileSync(p, bytes);
      const f = SafetensorsFile.open(p);
      assert.deepEqual([...f.get("good").data], [5, 6]);
      f.close();
    } finally {
      rmSync(dir, { recursive: true });
    }
  });

  test("a save that fails while writing leaves the existing file intact and no temp file", () => {
    const dir = tmp();
    try {
      const p = join(dir, "model.safetensors");
      saveSafetensors(p, { w: tensor("float32", [1], Float32Array.from([1])) });
      const before = readFileSync(p);
      // The disk fills up after the first chunk of the new file has been written.
      const realWrite = fs.writeSync;
      let calls = 0;
      const spy = mock.method(fs, "writeSync", ((...args: Parameters<typeof fs.writeSync>) => {
        if (++calls > 1) throw Object.assign(new Error("ENOSPC: no space left on device"), { code: "ENOSPC" });
        return (realWrite as (...a: Parameters<typeof fs.writeSync>) => number)(...args);
      }) as typeof fs.writeSync);
      try {
        assert.throws(() => saveSafetensors(p, { w: tensor("float32", [2], Float32Array.from([9, 9])) }), /ENOSPC/);
      } finally {
        spy.mock.restore();
      }
      assert.equal(calls, 2, "the failure must happen in the middle of the write");
      assert.equal(Buffer.compare(readFileSync(p), before), 0);
      assert.deepEqual(readdirSync(dir), ["model.safetensors"]);
      // An invalid tensor is rejected before anything is written.
      assert.throws(() => saveSafetensors(p, { w: tensor("float32", [1], Float32Array.from([1])), x: { dtype: "int8", shape: [4], data: new Int8Array(1) } }), TensorDataError);
      assert.equal(Buffer.compare(readFileSync(p), before), 0);
      assert.deepEqual(readdirSync(dir), ["model.safetensors"]);
    } finally {
      rmSync(dir, { recursive: true });
    }
  });
});
