/**
 * safetensors reader and writer, byte-compatible with Hugging Face's `safetensors` 0.4+.
 *
 * Layout: an 8-byte little-endian u64 `N`, `N` bytes of UTF-8 JSON (the header), then the data
 * section. The header maps each tensor name to `{dtype, shape, data_offsets: [begin, end]}`
 * (offsets relative to the first data byte) plus an optional `__metadata__` string→string map.
 * Reading validates the header as strictly as the Rust implementation: offsets must tile the
 * data section exactly (no holes, overlaps or trailing bytes) and each tensor's byte length
 * must equal numel × dtype size. Writing sorts tensors like the Python writer (descending dtype
 * alignment, then name) and pads the header with spaces to a multiple of 8, so files written
 * here are byte-identical to `safetensors.torch.save_file` for the same tensors.
 */
import { fs } from "../platform/fs.js";
import { FileClosedError, MissingFileError, MissingTensorError, SafetensorsFormatError, TensorDataError } from "../errors.js";
import { BYTES_PER_ELEMENT, numel, type DType, type Tensor, type TensorData } from "../tensor.js";
import { writeAll, writeFileAtomicWith } from "./atomic.js";
import { findDuplicateKey } from "./json-dup.js";
import { compareBytes, utf8Bytes } from "../util/bytes.js";

export type StDtype = "F64" | "F32" | "F16" | "BF16" | "I64" | "I32" | "I16" | "I8" | "U8" | "BOOL";

/** Where one tensor lives in a file: dtype, shape and byte range within the data section. */
export interface TensorInfo {
  readonly dtype: DType;
  readonly shape: readonly number[];
  readonly begin: number;
  readonly end: number;
}

/** Tensors accepted by the writers. */
export type TensorMapLike = ReadonlyMap<string, Tensor> | Readonly<Record<string, Tensor>>;

/** The header may be at most this many bytes (the limit of the reference implementation). */
export const MAX_HEADER_BYTES = 100_000_000;

export const ST_TO_DTYPE: Readonly<Record<StDtype, DType>> = {
  F64: "float64",
  F32: "float32",
  F16: "float16",
  BF16: "bfloat16",
  I64: "int64",
  I32: "int32",
  I16: "int16",
  I8: "int8",
  U8: "uint8",
  BOOL: "bool",
};

export const DTYPE_TO_ST: Readonly<Record<DType, StDtype>> = {
  float64: "F64",
  float32: "F32",
  float16: "F16",
  bfloat16: "BF16",
  int64: "I64",
  int32: "I32",
  int16: "I16",
  int8: "I8",
  uint8: "U8",
  bool: "BOOL",
};

/** Position in the Rust `Dtype` enum (increasing alignment); the writer sorts by it, descending. */
const ST_RANK: Readonly<Record<StDtype, number>> = {
  BOOL: 0,
  U8: 1,
  I8: 2,
  I16: 5,
  F16: 7,
  BF16: 8,
  I32: 9,
  F32: 11,
  F64: 12,
  I64: 13,
};

/** Dtypes that are valid safetensors but that peft-ts cannot represent. */
const KNOWN_UNSUPPORTED = new Set(["U16", "U32", "U64", "F8_E5M2", "F8_E4M3", "F8_E8M0", "F4", "F6_E2M3", "F6_E3M2", "C64"]);

const ARRAY_OF: { readonly [K in DType]: new (buffer: ArrayBuffer, byteOffset: number, length: number) => TensorData } = {
  float32: Float32Array,
  float64: Float64Array,
  float16: Uint16Array,
  bfloat16: Uint16Array,
  int64: BigInt64Array,
  int32: Int32Array,
  int16: Int16Array,
  int8: Int8Array,
  uint8: Uint8Array,
  bool: Uint8Array,
};

function isStDtype(s: string): s is StDtype {
  return Object.prototype.hasOwnProperty.call(ST_TO_DTYPE, s);
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function isIndex(v: unknown): v is number {
  return typeof v === "number" && Number.isSafeInteger(v) && v >= 0;
}

// ---------------------------------------------------------------------------------------------
// Header parsing
// ---------------------------------------------------------------------------------------------

interface ParsedHeader {
  readonly infos: ReadonlyMap<string, TensorInfo>;
  readonly metadata: Readonly<Record<string, string>>;
}

/** Reads and checks the 8-byte length prefix; returns the header length N. */
function headerLength(prefix: Uint8Array, fileSize: number, file: string): number {
  if (fileSize < 8) {
    throw new SafetensorsFormatError(file, `file is ${fileSize} bytes, shorter than the 8-byte header length prefix`);
  }
  const n = new DataView(prefix.buffer, prefix.byteOffset, 8).getBigUint64(0, true);
  if (n > BigInt(MAX_HEADER_BYTES)) {
    throw new SafetensorsFormatError(file, `header length ${n} exceeds the ${MAX_HEADER_BYTES}-byte limit`);
  }
  const len = Number(n);
  if (8 + len > fileSize) {
    throw new SafetensorsFormatError(
      file,
      `truncated header: the prefix announces ${len} header bytes but only ${fileSize - 8} follow it`,
    );
  }
  return len;
}

function parseTensorEntry(key: string, v: unknown, file: string): TensorInfo {
  const where = `tensor '${key}'`;
  if (!isPlainObject(v)) throw new SafetensorsFormatError(file, `${where}: header entry must be an object`);
  for (const f of ["dtype", "shape", "data_offsets"]) {
    if (!(f in v)) throw new SafetensorsFormatError(file, `${where}: header entry is missing '${f}'`);
  }
  const st = v.dtype;
  if (typeof st !== "string") throw new SafetensorsFormatError(file, `${where}: 'dtype' must be a string`);
  if (!isStDtype(st)) {
    const why = KNOWN_UNSUPPORTED.has(st) ? "is not supported by peft-ts" : "is not a safetensors dtype";
    throw new SafetensorsFormatError(file, `${where}: dtype '${st}' ${why} (supported: ${Object.keys(ST_TO_DTYPE).join(", ")})`);
  }
  const shape = v.shape;
  if (!Array.isArray(shape) || !shape.every(isIndex)) {
    throw new SafetensorsFormatError(file, `${where}: 'shape' must be an array of non-negative integers, got ${JSON.stringify(shape)}`);
  }
  const offs = v.data_offsets;
  if (!Array.isArray(offs) || offs.length !== 2 || !offs.every(isIndex)) {
    throw new SafetensorsFormatError(
      file,
      `${where}: 'data_offsets' must be [begin, end] with non-negative integers, got ${JSON.stringify(offs)}`,
    );
  }
  const [begin, end] = offs as [number, number];
  if (begin > end) throw new SafetensorsFormatError(file, `${where}: data_offsets begin ${begin} > end ${end}`);
  const dtype = ST_TO_DTYPE[st];
  const count = numel(shape as number[]);
  const need = count * BYTES_PER_ELEMENT[dtype];
  if (!Number.isSafeInteger(need)) throw new SafetensorsFormatError(file, `${where}: shape [${shape.join(", ")}] is too large`);
  if (end - begin !== need) {
    throw new SafetensorsFormatError(
      file,
      `${where}: data_offsets [${begin}, ${end}] span ${end - begin} bytes but shape [${shape.join(", ")}] of ${st} needs ${need}`,
    );
  }
  return { dtype, shape: [...(shape as number[])], begin, end };
}

function parseMetadata(v: unknown, file: string): Record<string, string> {
  if (v === null) return {};
  if (!isPlainObject(v)) throw new SafetensorsFormatError(file, "'__metadata__' must be an object of strings");
  const entries: [string, string][] = [];
  for (const [k, s] of Object.entries(v)) {
    if (typeof s !== "string") {
      throw new SafetensorsFormatError(file, `'__metadata__' value for '${k}' must be a string, got ${JSON.stringify(s)}`);
    }
    entries.push([k, s]);
  }
  return Object.fromEntries(entries);
}

/** Checks that the tensors' byte ranges tile `[0, dataSize)` exactly. */
function checkLayout(infos: ReadonlyMap<string, TensorInfo>, dataSize: number, file: string): void {
  const sorted = [...infos].sort(([, a], [, b]) => a.begin - b.begin || a.end - b.end);
  let pos = 0;
  let prev = "";
  for (const [key, info] of sorted) {
    if (info.begin < pos) {
      throw new SafetensorsFormatError(file, `tensor '${key}' (bytes ${info.begin}..${info.end}) overlaps tensor '${prev}' (ends at ${pos})`);
    }
    if (info.begin > pos) {
      const at = prev ? `between tensor '${prev}' (ends at ${pos}) and` : "before";
      throw new SafetensorsFormatError(file, `hole of ${info.begin - pos} bytes in the data section ${at} tensor '${key}' (starts at ${info.begin})`);
    }
    pos = info.end;
    prev = key;
  }
  if (pos > dataSize) {
    throw new SafetensorsFormatError(file, `truncated data: the tensors need ${pos} data bytes but the file has ${dataSize}`);
  }
  if (pos < dataSize) {
    throw new SafetensorsFormatError(file, `${dataSize - pos} trailing bytes after the last tensor (data section is ${dataSize} bytes, tensors cover ${pos})`);
  }
}

/** Parses and validates header bytes; `dataSize` is the number of bytes after the header. */
function parseHeader(bytes: Uint8Array, dataSize: number, file: string): ParsedHeader {
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(bytes);
  } catch (e) {
    throw new SafetensorsFormatError(file, "header is not valid UTF-8", { cause: e });
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new SafetensorsFormatError(file, `header is not valid JSON (${(e as Error).message})`, { cause: e });
  }
  if (!isPlainObject(json)) throw new SafetensorsFormatError(file, "header must be a JSON object");
  const dup = findDuplicateKey(text);
  if (dup !== null) throw new SafetensorsFormatError(file, `header has the key ${JSON.stringify(dup)} more than once`);
  let metadata: Record<string, string> = {};
  const infos = new Map<string, TensorInfo>();
  for (const [key, v] of Object.entries(json)) {
    if (key === "__metadata__") metadata = parseMetadata(v, file);
    else infos.set(key, parseTensorEntry(key, v, file));
  }
  checkLayout(infos, dataSize, file);
  return { infos, metadata };
}

/** Compares two names by their UTF-8 bytes (the order of Rust strings, which the Python writer uses). */
function compareUtf8(a: string, b: string): number {
  return compareBytes(utf8Bytes(a), utf8Bytes(b));
}

/** Tensor names in Python's `safe_open(...).keys()` order (sorted). */
function sortedKeys(infos: ReadonlyMap<string, TensorInfo>): string[] {
  return [...infos.keys()].sort(compareUtf8);
}

function makeTensor(info: TensorInfo, buffer: ArrayBuffer): Tensor {
  const Ctor = ARRAY_OF[info.dtype];
  const data = new Ctor(buffer, 0, numel(info.shape));
  return { dtype: info.dtype, shape: [...info.shape], data };
}

// ---------------------------------------------------------------------------------------------
// Reading
// ---------------------------------------------------------------------------------------------

/** Largest single read (Node refuses reads over 2 GiB - 1 in one call). */
const IO_CHUNK = 1 << 30;

/** Fills `target` from `position` in the file, or throws on a short file. */
function readExactly(fd: number, target: Uint8Array, position: number, file: string): void {
  let got = 0;
  while (got < target.byteLength) {
    const n = fs.readSync(fd, target, got, Math.min(target.byteLength - got, IO_CHUNK), position + got);
    if (n === 0) {
      throw new SafetensorsFormatError(file, `unexpected end of file at byte ${position + got} (was the file changed while open?)`);
    }
    got += n;
  }
}

/**
 * A safetensors file opened lazily: `open` reads and validates only the header; `get` reads one
 * tensor's bytes from disk on demand into a freshly allocated (hence aligned) typed array.
 */
export class SafetensorsFile {
  readonly metadata: Readonly<Record<string, string>>;
  private fd: number | null;
  private readonly infos: ReadonlyMap<string, TensorInfo>;
  private readonly dataStart: number;

  private constructor(readonly path: string, fd: number, header: ParsedHeader, dataStart: number) {
    this.fd = fd;
    this.infos = header.infos;
    this.metadata = Object.freeze({ ...header.metadata });
    this.dataStart = dataStart;
  }

  /** Opens `path`, reads and fully validates its header. Throws `SafetensorsFormatError` if malformed. */
  static open(path: string): SafetensorsFile {
    let fd: number;
    try {
      fd = fs.openSync(path, "r");
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ENOENT") throw new MissingFileError(path, "no safetensors file at this path");
      throw e;
    }
    try {
      const size = fs.fstatSync(fd).size;
      const prefix = new Uint8Array(8);
      if (size >= 8) readExactly(fd, prefix, 0, path);
      const n = headerLength(prefix, size, path);
      const headerBytes = new Uint8Array(n);
      readExactly(fd, headerBytes, 8, path);
      const header = parseHeader(headerBytes, size - 8 - n, path);
      return new SafetensorsFile(path, fd, header, 8 + n);
    } catch (e) {
      fs.closeSync(fd);
      throw e;
    }
  }

  /** Tensor names, sorted (as Python's `safe_open(...).keys()`). */
  keys(): string[] {
    return sortedKeys(this.infos);
  }

  has(key: string): boolean {
    return this.infos.has(key);
  }

  /** Dtype, shape and byte range of `key`; throws `MissingTensorError` if absent. */
  info(key: string): TensorInfo {
    const info = this.infos.get(key);
    if (!info) throw new MissingTensorError(this.path, key);
    return info;
  }

  /** Reads tensor `key` from disk (only its bytes). */
  get(key: string): Tensor {
    const info = this.info(key);
    if (this.fd === null) throw new FileClosedError(this.path);
    const buffer = new ArrayBuffer(info.end - info.begin);
    readExactly(this.fd, new Uint8Array(buffer), this.dataStart + info.begin, this.path);
    return makeTensor(info, buffer);
  }

  /** Releases the file descriptor; further `get` calls throw `FileClosedError`. Idempotent. */
  close(): void {
    if (this.fd === null) return;
    const fd = this.fd;
    this.fd = null;
    fs.closeSync(fd);
  }
}

/** Reads every tensor of `path` (eagerly; the file is read once per tensor, no full-file buffer). */
export function loadSafetensors(path: string): { tensors: Map<string, Tensor>; metadata: Record<string, string> } {
  const f = SafetensorsFile.open(path);
  try {
    const tensors = new Map<string, Tensor>();
    for (const k of f.keys()) tensors.set(k, f.get(k));
    return { tensors, metadata: { ...f.metadata } };
  } finally {
    f.close();
  }
}

/** Parses a whole safetensors file held in memory; tensors are copied into aligned arrays. */
export function parseSafetensors(
  bytes: Uint8Array,
  name = "<memory>",
): { tensors: Map<string, Tensor>; metadata: Record<string, string> } {
  const n = headerLength(bytes.subarray(0, 8), bytes.byteLength, name);
  const header = parseHeader(bytes.subarray(8, 8 + n), bytes.byteLength - 8 - n, name);
  const tensors = new Map<string, Tensor>();
  for (const k of sortedKeys(header.infos)) {
    const info = header.infos.get(k)!;
    const start = bytes.byteOffset + 8 + n;
    const buffer = bytes.buffer.slice(start + info.begin, start + info.end) as ArrayBuffer;
    tensors.set(k, makeTensor(info, buffer));
  }
  return { tensors, metadata: { ...header.metadata } };
}

// ---------------------------------------------------------------------------------------------
// Writing
// ---------------------------------------------------------------------------------------------

interface Prepared {
  readonly header: Uint8Array; // length prefix + padded JSON
  readonly parts: readonly Uint8Array[]; // tensor bytes in file order
  readonly total: number;
}

function entriesOf(tensors: TensorMapLike): [string, Tensor][] {
  if (tensors instanceof Map) return [...(tensors as ReadonlyMap<string, Tensor>)];
  return Object.entries(tensors as Readonly<Record<string, Tensor>>);
}

/** The bytes of `t` as they go to disk (a view, except for bool which is normalised to 0/1). */
function bytesOf(key: string, t: Tensor): Uint8Array {
  if (!Object.prototype.hasOwnProperty.call(DTYPE_TO_ST, t.dtype)) {
    throw new TensorDataError(key, `unknown dtype ${JSON.stringify(t.dtype)}`);
  }
  if (!Array.isArray(t.shape) || !t.shape.every(isIndex)) {
    throw new TensorDataError(key, `shape must be an array of non-negative integers, got ${JSON.stringify(t.shape)}`);
  }
  const Ctor = ARRAY_OF[t.dtype];
  if (!(t.data instanceof Ctor)) {
    throw new TensorDataError(key, `dtype ${t.dtype} needs a ${Ctor.name}, got ${Object.prototype.toString.call(t.data)}`);
  }
  const n = numel(t.shape);
  if (t.data.length !== n) {
    throw new TensorDataError(key, `data has ${t.data.length} elements but shape [${t.shape.join(", ")}] needs ${n}`);
  }
  const view = new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
  if (t.dtype === "bool" && view.some((b) => b > 1)) return view.map((b) => (b ? 1 : 0));
  return view;
}

/** A tensor's place in a file being planned: its name, dtype and shape (its bytes come later). */
export interface PlannedTensorInfo {
  readonly key: string;
  readonly dtype: DType;
  readonly shape: readonly number[];
}

/**
 * The safetensors header (length prefix + JSON padded to 8 bytes with spaces) for tensors stored
 * in the given order, and where each one's bytes go, relative to the end of the header. For
 * writers that stream tensors computed one at a time (`mergeCheckpoints`); `saveSafetensors`
 * writes its tensors through it too.
 */
export function safetensorsHeader(
  tensors: readonly PlannedTensorInfo[],
  metadata?: Readonly<Record<string, string>>,
): { header: Uint8Array; offsets: readonly (readonly [number, number])[]; dataBytes: number } {
  const fields: string[] = [];
  if (metadata !== undefined) {
    const meta = Object.entries(metadata).sort(([a], [b]) => compareUtf8(a, b));
    for (const [k, v] of meta) {
      if (typeof v !== "string") throw new TensorDataError("__metadata__", `value for '${k}' must be a string, got ${typeof v}`);
    }
    fields.push(`"__metadata__":{${meta.map(([k, v]) => `${JSON.stringify(k)}:${JSON.stringify(v)}`).join(",")}}`);
  }
  let offset = 0;
  const offsets: (readonly [number, number])[] = [];
  for (const t of tensors) {
    if (t.key === "__metadata__") throw new TensorDataError(t.key, "'__metadata__' is reserved by the safetensors format");
    const end = offset + numel(t.shape) * BYTES_PER_ELEMENT[t.dtype];
    fields.push(`${JSON.stringify(t.key)}:{"dtype":"${DTYPE_TO_ST[t.dtype]}","shape":[${t.shape.join(",")}],"data_offsets":[${offset},${end}]}`);
    offsets.push([offset, end]);
    offset = end;
  }
  const json = utf8Bytes(`{${fields.join(",")}}`);
  const padded = Math.ceil(json.byteLength / 8) * 8;
  const header = new Uint8Array(8 + padded).fill(0x20, 8 + json.byteLength);
  new DataView(header.buffer).setBigUint64(0, BigInt(padded), true);
  header.set(json, 8);
  return { header, offsets, dataBytes: offset };
}

function prepare(tensors: TensorMapLike, metadata: Readonly<Record<string, string>> | undefined): Prepared {
  const items = entriesOf(tensors).map(([key, t]) => {
    if (key === "__metadata__") throw new TensorDataError(key, "'__metadata__' is reserved by the safetensors format");
    return { key, t, bytes: bytesOf(key, t), st: DTYPE_TO_ST[t.dtype], utf8: utf8Bytes(key) };
  });
  items.sort((a, b) => ST_RANK[b.st] - ST_RANK[a.st] || compareBytes(a.utf8, b.utf8));
  const { header, dataBytes } = safetensorsHeader(
    items.map((it) => ({ key: it.key, dtype: it.t.dtype, shape: it.t.shape })),
    metadata,
  );
  return { header, parts: items.map((it) => it.bytes), total: header.byteLength + dataBytes };
}

/** Serialises tensors (and optional `__metadata__`) to safetensors bytes in memory. */
export function serializeSafetensors(tensors: TensorMapLike, metadata?: Readonly<Record<string, string>>): Uint8Array {
  const p = prepare(tensors, metadata);
  const out = new Uint8Array(p.total);
  out.set(p.header, 0);
  let pos = p.header.byteLength;
  for (const part of p.parts) {
    out.set(part, pos);
    pos += part.byteLength;
  }
  return out;
}

/**
 * Writes tensors to `path` atomically (temporary file + fsync + rename), streaming each tensor's
 * bytes without building the whole file in memory. An existing file is replaced only on success.
 */
export function saveSafetensors(path: string, tensors: TensorMapLike, metadata?: Readonly<Record<string, string>>): void {
  const p = prepare(tensors, metadata);
  writeFileAtomicWith(path, safetensorsWriter(p));
}

function safetensorsWriter(p: Prepared): (fd: number) => void {
  return (fd) => {
    writeAll(fd, p.header);
    for (const part of p.parts) writeAll(fd, part);
  };
}

/**
 * A writer callback for {@link writeFilesAtomic} that writes these tensors as a safetensors
 * file. Tensors are validated now, so a bad tensor throws before anything is written.
 */
export function safetensorsFileWriter(tensors: TensorMapLike, metadata?: Readonly<Record<string, string>>): (fd: number) => void {
  return safetensorsWriter(prepare(tensors, metadata));
}
