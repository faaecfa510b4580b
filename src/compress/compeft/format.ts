/**
 * The ComPEFT binary format, little-endian. Version 3 (written) is version 2 followed by a CRC-32
 * of every byte before it; version 2 (still read) extends version 1 (still read) with dense tensors
 * and JSON metadata:
 *
 *     offset 0   8 bytes   magic 89 43 50 45 46 54 0D 0A  ("\x89CPEFT\r\n", PNG-style: the high
 *                          byte catches 7-bit transfers, CR LF catches newline conversion)
 *     offset 8   u32       format version (3; 2 without the checksum; 1 also without dense tensors and metadata)
 *     offset 12  u32       H, byte length of the JSON header
 *     offset 16  H bytes   UTF-8 JSON header:
 *                          { "format": "compeft", "version": 2, "density", "alpha", "std", "scale",
 *                            "tensors": [{ "name", "shape", "dtype", "baseline" }, …],
 *                            "dense": [{ "name", "shape", "dtype" }, …],     (version 2)
 *                            "metadata": { … } }                             (version 2, any JSON object)
 *     then, for each header tensor in order:
 *                varint    count of kept entries (≤ numel(shape))
 *                count ×   varint gap: position_j − position_(j−1) − 1, with position_(−1) = −1,
 *                          so positions are strictly increasing and every gap is valid
 *                ⌈count/8⌉ sign bytes: entry j is bit (j mod 8) of byte ⌊j/8⌋ (LSB first),
 *                          1 = negative; unused bits of the last byte are 0
 *     then (version 2), for each dense tensor in order: numel · itemsize bytes of its values
 *                          in its dtype, little-endian, stored as they are (not compressed)
 *     then (version 3) u32  CRC-32 (zlib's) of every byte before it
 *     end of data (no trailing bytes).
 *
 * Dense tensors hold what ComPEFT does not compress (a classifier head saved with the adapter,
 * DoRA magnitudes); the metadata holds, for example, the adapter's `adapter_config.json`.
 * Varints are unsigned LEB128 (7 bits per byte, low group first, high bit = more), at most 5
 * bytes, value < 2^32. Decoding checks every field and raises a specific error: bad magic,
 * unsupported version, truncation (naming the tensor and byte offset), invalid header JSON,
 * counts or positions that do not fit the shape, and malformed bytes; and (version 3) a checksum
 * that does not match, e.g. after a bit flip in a position or a dense value.
 */
import {
  CompeftCountError,
  CompeftFormatError,
  CompeftHeaderError,
  CompeftMagicError,
  CompeftTruncatedError,
  CompeftVersionError,
  CompeftChecksumError,
} from "../../errors.js";
import { crc32 } from "../../util/crc32.js";
import { BYTES_PER_ELEMENT, allocate, numel, type Tensor } from "../../tensor.js";
import {
  COMPEFT_DTYPES,
  compeftScale,
  type CompeftCompressed,
  type CompeftDenseTensor,
  type CompeftDType,
  type CompeftTensor,
} from "./compeft.js";

export const COMPEFT_MAGIC: Uint8Array = Uint8Array.from([0x89, 0x43, 0x50, 0x45, 0x46, 0x54, 0x0d, 0x0a]);
export const COMPEFT_FORMAT_VERSION = 3;
export const COMPEFT_SUPPORTED_VERSIONS: readonly number[] = [1, 2, 3];
/** Bytes of the version-3 trailer (the CRC-32). */
const CHECKSUM_BYTES = 4;
const PREAMBLE = 16;

interface HeaderTensor {
  name: string;
  shape: number[];
  dtype: CompeftDType;
  baseline: number;
}

interface HeaderDense {
  name: string;
  shape: number[];
  dtype: CompeftDType;
}

interface Header {
  format: "compeft";
  version: number;
  density: number;
  alpha: number;
  std: number;
  scale: number;
  tensors: HeaderTensor[];
  dense: HeaderDense[];
  metadata: Record<string, unknown>;
}

/** Growable byte buffer. */
class Writer {
  private buf = new Uint8Array(1024);
  length = 0;
  private ensure(extra: number): void {
    if (this.length + extra <= this.buf.length) return;
    let cap = this.buf.length * 2;
    while (cap < this.length + extra) cap *= 2;
    const next = new Uint8Array(cap);
    next.set(this.buf.subarray(0, this.length));
    this.buf = next;
  }
  bytes(b: Uint8Array): void {
    this.ensure(b.length);
    this.buf.set(b, this.length);
    this.length += b.length;
  }
  u32(v: number): void {
    this.ensure(4);
    new DataView(this.buf.buffer).setUint32(this.length, v, true);
    this.length += 4;
  }
  varint(v: number): void {
    this.ensure(5);
    while (v >= 0x80) {
      this.buf[this.length++] = (v & 0x7f) | 0x80;
      v = Math.floor(v / 128);
    }
    this.buf[this.length++] = v;
  }
  result(): Uint8Array {
    return this.buf.slice(0, this.length);
  }
}

/** Serialises a compressed update (see the module comment for the layout). */
export function encodeCompeft(c: CompeftCompressed): Uint8Array {
  const dense = c.dense ?? [];
  const header: Header = {
    format: "compeft",
    version: COMPEFT_FORMAT_VERSION,
    density: c.density,
    alpha: c.alpha,
    std: c.std,
    scale: c.scale,
    tensors: c.tensors.map((t) => ({ name: t.name, shape: [...t.shape], dtype: t.dtype, baseline: t.baseline })),
    dense: dense.map((d) => ({ name: d.name, shape: [...d.tensor.shape], dtype: d.tensor.dtype as CompeftDType })),
    metadata: { ...(c.metadata ?? {}) },
  };
  const names = new Set(header.tensors.map((t) => t.name));
  for (const d of dense) {
    if (!(COMPEFT_DTYPES as readonly string[]).includes(d.tensor.dtype)) {
      throw new CompeftHeaderError("encodeCompeft", `dense.${d.name}`, `dtype ${d.tensor.dtype} is not one of ${COMPEFT_DTYPES.join(", ")}`);
    }
    if (d.tensor.data.length !== numel(d.tensor.shape)) {
      throw new CompeftHeaderError("encodeCompeft", `dense.${d.name}`, `has ${d.tensor.data.length} values for shape [${d.tensor.shape.join(", ")}]`);
    }
    if (names.has(d.name)) throw new CompeftHeaderError("encodeCompeft", `dense.${d.name}`, "is also the name of another tensor");
    names.add(d.name);
  }
  let text: string;
  try {
    text = JSON.stringify(header);
  } catch (e) {
    throw new CompeftHeaderError("encodeCompeft", "metadata", `cannot be written as JSON (${e instanceof Error ? e.message : String(e)})`, { cause: e });
  }
  const json = new TextEncoder().encode(text);
  const w = new Writer();
  w.bytes(COMPEFT_MAGIC);
  w.u32(COMPEFT_FORMAT_VERSION);
  w.u32(json.length);
  w.bytes(json);
  for (const t of c.tensors) {
    const count = t.positions.length;
    w.varint(count);
    let prev = -1;
    for (let j = 0; j < count; j++) {
      const p = t.positions[j]!;
      w.varint(p - prev - 1);
      prev = p;
    }
    const signs = new Uint8Array(Math.ceil(count / 8));
    for (let j = 0; j < count; j++) if (t.negative[j]) signs[j >> 3]! |= 1 << (j & 7);
    w.bytes(signs);
  }
  for (const d of dense) {
    const a = d.tensor.data as ArrayBufferView;
    w.bytes(new Uint8Array(a.buffer, a.byteOffset, a.byteLength));
  }
  const body = w.result();
  const out = new Uint8Array(body.length + CHECKSUM_BYTES);
  out.set(body);
  new DataView(out.buffer).setUint32(body.length, crc32(body), true);
  return out;
}

class Reader {
  offset = 0;
  tensor: string | null = null;
  constructor(readonly bytes: Uint8Array, readonly file: string) {}
  need(n: number, what: string): void {
    if (this.offset + n > this.bytes.length) {
      throw new CompeftTruncatedError(this.file, this.tensor, this.bytes.length, `${what} (${n} byte${n === 1 ? "" : "s"} at byte ${this.offset})`);
    }
  }
  u32(what: string): number {
    this.need(4, what);
    const v = new DataView(this.bytes.buffer, this.bytes.byteOffset).getUint32(this.offset, true);
    this.offset += 4;
    return v;
  }
  varint(what: string): number {
    const start = this.offset;
    let v = 0;
    let mul = 1;
    for (let i = 0; ; i++) {
      if (this.offset >= this.bytes.length) {
        throw new CompeftTruncatedError(this.file, this.tensor, this.bytes.length, `${what} (a varint starting at byte ${start})`);
      }
      const b = this.bytes[this.offset++]!;
      v += (b & 0x7f) * mul;
      mul *= 128;
      if (!(b & 0x80)) break;
      if (i === 4) throw new CompeftFormatError(this.file, this.tensor, start, `${what}: varint longer than 5 bytes`);
    }
    if (v > 0xffffffff) throw new CompeftFormatError(this.file, this.tensor, start, `${what}: varint value ${v} exceeds 2^32 − 1`);
    return v;
  }
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function parseHeader(json: unknown, file: string, version: number): Header {
  const bad = (path: string, issue: string): never => {
    throw new CompeftHeaderError(file, path, issue);
  };
  if (!isObject(json)) return bad("", "the header must be a JSON object");
  if (json.format !== "compeft") bad("format", `must be "compeft", got ${JSON.stringify(json.format)}`);
  if (json.version !== version) bad("version", `is ${JSON.stringify(json.version)} but the binary version field is ${version}`);
  const num = (key: string, ok: (v: number) => boolean, rule: string): number => {
    const v = json[key];
    if (typeof v !== "number" || !ok(v)) bad(key, `must be ${rule}, got ${JSON.stringify(v)}`);
    return v as number;
  };
  const density = num("density", (v) => v > 0 && v <= 1, "a number in (0, 1]");
  const alpha = num("alpha", (v) => Number.isFinite(v) && v > 0, "a finite number > 0");
  const std = num("std", (v) => Number.isFinite(v) && v >= 0 && Math.fround(v) === v, "a finite float32 ≥ 0");
  const scale = num("scale", (v) => Number.isFinite(v) && v >= 0, "a finite number ≥ 0");
  if (scale !== compeftScale(alpha, std)) bad("scale", `${scale} is not float32(alpha · std) = ${compeftScale(alpha, std)}`);
  if (!Array.isArray(json.tensors)) return bad("tensors", "must be an array");
  const seen = new Set<string>();
  // name (unique over tensors and dense entries), shape and dtype of one header entry
  const entry = (t: unknown, p: string): { raw: Record<string, unknown>; name: string; shape: number[]; dtype: CompeftDType } => {
    if (!isObject(t)) return bad(p, "must be an object");
    if (typeof t.name !== "string" || t.name === "") bad(`${p}.name`, "must be a non-empty string");
    const name = t.name as string;
    if (seen.has(name)) bad(`${p}.name`, `duplicate tensor name ${JSON.stringify(name)}`);
    seen.add(name);
    const shape = t.shape;
    if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      bad(`${p}.shape`, `must be an array of non-negative integers, got ${JSON.stringify(shape)}`);
    }
    if (!COMPEFT_DTYPES.includes(t.dtype as CompeftDType)) {
      bad(`${p}.dtype`, `must be one of ${COMPEFT_DTYPES.join(", ")}, got ${JSON.stringify(t.dtype)}`);
    }
    return { raw: t, name, shape: shape as number[], dtype: t.dtype as CompeftDType };
  };
  const tensors = (json.tensors as unknown[]).map((t, i): HeaderTensor => {
    const p = `tensors[${i}]`;
    const { raw, name, shape, dtype } = entry(t, p);
    const b = raw.baseline;
    if (typeof b !== "number" || !Number.isFinite(b) || Math.fround(b) !== b) bad(`${p}.baseline`, `must be a finite float32, got ${JSON.stringify(b)}`);
    return { name, shape, dtype, baseline: b as number };
  });
  if (version === 1) return { format: "compeft", version, density, alpha, std, scale, tensors, dense: [], metadata: {} };
  if (!Array.isArray(json.dense)) return bad("dense", "must be an array (version 2)");
  const dense = (json.dense as unknown[]).map((t, i): HeaderDense => {
    const { name, shape, dtype } = entry(t, `dense[${i}]`);
    return { name, shape, dtype };
  });
  if (!isObject(json.metadata)) return bad("metadata", "must be a JSON object (version 2)");
  return { format: "compeft", version, density, alpha, std, scale, tensors, dense, metadata: json.metadata };
}

function hex(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join(" ") || "(empty)";
}

/**
 * Parses ComPEFT bytes; `file` names the source in error messages. A version-3 file whose CRC-32
 * does not match is a `CompeftChecksumError` (a cut-off file still reports where data ran out).
 */
export function decodeCompeft(bytes: Uint8Array, file = "<compeft bytes>"): CompeftCompressed {
  const version = bytes.length >= 12 ? new DataView(bytes.buffer, bytes.byteOffset).getUint32(8, true) : 0;
  if (version < 3 || bytes.length < 16 + CHECKSUM_BYTES) return decodeBody(bytes, file);
  const body = bytes.subarray(0, bytes.length - CHECKSUM_BYTES);
  const stored = new DataView(bytes.buffer, bytes.byteOffset).getUint32(body.length, true);
  const actual = crc32(body);
  let out: CompeftCompressed;
  try {
    out = decodeBody(body, file);
  } catch (e) {
    if (e instanceof CompeftTruncatedError) throw truncationOf(bytes, file, e);
    // a fault that also breaks the checksum: not ComPEFT, another version, or a cut-off file say so; anything else is corruption
    const plain = e instanceof CompeftTruncatedError || e instanceof CompeftMagicError || e instanceof CompeftVersionError;
    if (stored !== actual && !plain) throw new CompeftChecksumError(file, stored, actual);
    throw e;
  }
  if (stored !== actual) throw new CompeftChecksumError(file, stored, actual);
  return out;
}

/**
 * The truncation to report for a cut-off version-3 file: decoding all its bytes (the trailer is
 * gone, so they are all data) says where the data ran out; if they all decode, only the checksum
 * trailer is missing.
 */
function truncationOf(bytes: Uint8Array, file: string, first: CompeftTruncatedError): CompeftTruncatedError {
  try {
    decodeBody(bytes, file);
  } catch (e) {
    return e instanceof CompeftTruncatedError ? e : first;
  }
  return new CompeftTruncatedError(file, null, bytes.length, `the CRC-32 trailer (${CHECKSUM_BYTES} bytes at byte ${bytes.length})`);
}

function decodeBody(bytes: Uint8Array, file: string): CompeftCompressed {
  const head = bytes.subarray(0, COMPEFT_MAGIC.length);
  if (!head.every((b, i) => b === COMPEFT_MAGIC[i])) throw new CompeftMagicError(file, hex(head));
  const r = new Reader(bytes, file);
  if (bytes.length < COMPEFT_MAGIC.length) r.need(COMPEFT_MAGIC.length, "the magic bytes");
  r.offset = COMPEFT_MAGIC.length;
  const version = r.u32("the format version");
  if (!COMPEFT_SUPPORTED_VERSIONS.includes(version)) throw new CompeftVersionError(file, version, COMPEFT_SUPPORTED_VERSIONS);
  const hlen = r.u32("the header length");
  r.need(hlen, "the JSON header");
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes.subarray(PREAMBLE, PREAMBLE + hlen)));
  } catch (e) {
    throw new CompeftHeaderError(file, "", `not valid UTF-8 JSON (${e instanceof Error ? e.message : String(e)})`, { cause: e });
  }
  const header = parseHeader(json, file, version);
  r.offset = PREAMBLE + hlen;

  const tensors: CompeftTensor[] = header.tensors.map((h) => {
    r.tensor = h.name;
    const n = numel(h.shape);
    const count = r.varint("the kept-entry count");
    if (count > n) throw new CompeftCountError(file, h.name, `${count} kept entries but shape [${h.shape.join(", ")}] has only ${n} elements`);
    const positions = new Uint32Array(count);
    let prev = -1;
    for (let j = 0; j < count; j++) {
      const p = prev + 1 + r.varint(`position ${j} of ${count}`);
      if (p >= n) throw new CompeftCountError(file, h.name, `position ${p} (entry ${j}) is outside shape [${h.shape.join(", ")}] (${n} elements)`);
      positions[j] = p;
      prev = p;
    }
    const nbytes = Math.ceil(count / 8);
    r.need(nbytes, `${nbytes} sign byte${nbytes === 1 ? "" : "s"}`);
    const negative = new Uint8Array(count);
    for (let j = 0; j < count; j++) negative[j] = (bytes[r.offset + (j >> 3)]! >> (j & 7)) & 1;
    if (count % 8 !== 0 && bytes[r.offset + nbytes - 1]! >> count % 8 !== 0) {
      throw new CompeftFormatError(file, h.name, r.offset + nbytes - 1, "unused bits of the last sign byte are not zero");
    }
    r.offset += nbytes;
    return { name: h.name, shape: h.shape, dtype: h.dtype, baseline: h.baseline, positions, negative };
  });
  const dense = header.dense.map((h): CompeftDenseTensor => {
    r.tensor = h.name;
    const n = numel(h.shape);
    const nbytes = n * BYTES_PER_ELEMENT[h.dtype];
    r.need(nbytes, `the values of dense tensor '${h.name}'`);
    const data = allocate(h.dtype, n);
    new Uint8Array(data.buffer).set(bytes.subarray(r.offset, r.offset + nbytes));
    r.offset += nbytes;
    return { name: h.name, tensor: { dtype: h.dtype, shape: h.shape, data } as Tensor };
  });
  r.tensor = null;
  if (r.offset !== bytes.length) {
    throw new CompeftFormatError(file, null, r.offset, `${bytes.length - r.offset} unexpected bytes after the last tensor`);
  }
  const out: CompeftCompressed = { density: header.density, alpha: header.alpha, std: header.std, scale: header.scale, tensors };
  return header.version === 1 ? out : { ...out, dense, metadata: header.metadata };
}
