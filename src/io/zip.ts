/**
 * Zip archives of a few files (an exported PEFT adapter folder), written and read in memory with
 * no file system, so the browser can offer a download and take one back. No zip package in the
 * dependency tree runs in a browser without Node polyfills (adm-zip needs fs and zlib), so this is
 * the format itself (PKWARE APPNOTE 6.3.10): entries are written stored (method 0, CRC-32); reading
 * takes stored and deflated (method 8, through the platform's `DecompressionStream`) entries, as
 * OS zip tools write them. No zip64, encryption or multi-disk archives (an adapter is far below 4 GB).
 */
import { ZipFormatError } from "../errors.js";
import { crc32 } from "../util/crc32.js";

export { crc32 };

const LOCAL = 0x04034b50;
const CENTRAL = 0x02014b50;
const END = 0x06054b50;
/** Bit 11: names are UTF-8. */
const UTF8_FLAG = 0x0800;
/** 1980-01-01 00:00 in DOS date/time: a fixed stamp keeps archives of equal files byte-identical. */
const DOS_DATE = (0 << 9) | (1 << 5) | 1;

/** A zip archive (stored entries) of `files`, in the order given. */
export function writeZip(files: Iterable<readonly [string, Uint8Array]>): Uint8Array {
  const enc = new TextEncoder();
  const entries = [...files].map(([name, data]) => ({ name: enc.encode(name), data, crc: crc32(data), offset: 0 }));
  const localSize = entries.reduce((n, e) => n + 30 + e.name.length + e.data.length, 0);
  const centralSize = entries.reduce((n, e) => n + 46 + e.name.length, 0);
  if (entries.length > 0xffff || localSize + centralSize > 0xffffffff) throw new ZipFormatError("<zip>", "too large for a zip without zip64 (over 65,535 files or 4 GiB)");
  const out = new Uint8Array(localSize + centralSize + 22);
  const v = new DataView(out.buffer);
  let o = 0;
  for (const e of entries) {
    e.offset = o;
    v.setUint32(o, LOCAL, true);
    v.setUint16(o + 4, 20, true); // version needed: 2.0
    v.setUint16(o + 6, UTF8_FLAG, true);
    v.setUint16(o + 8, 0, true); // stored
    v.setUint16(o + 10, 0, true);
    v.setUint16(o + 12, DOS_DATE, true);
    v.setUint32(o + 14, e.crc, true);
    v.setUint32(o + 18, e.data.length, true);
    v.setUint32(o + 22, e.data.length, true);
    v.setUint16(o + 26, e.name.length, true);
    v.setUint16(o + 28, 0, true);
    out.set(e.name, o + 30);
    out.set(e.data, o + 30 + e.name.length);
    o += 30 + e.name.length + e.data.length;
  }
  const central = o;
  for (const e of entries) {
    v.setUint32(o, CENTRAL, true);
    v.setUint16(o + 4, 20, true); // made by: 2.0, MS-DOS attributes
    v.setUint16(o + 6, 20, true);
    v.setUint16(o + 8, UTF8_FLAG, true);
    v.setUint16(o + 10, 0, true);
    v.setUint16(o + 12, 0, true);
    v.setUint16(o + 14, DOS_DATE, true);
    v.setUint32(o + 16, e.crc, true);
    v.setUint32(o + 20, e.data.length, true);
    v.setUint32(o + 24, e.data.length, true);
    v.setUint16(o + 28, e.name.length, true);
    // extra, comment, disk, internal attributes: 0; external attributes: 0
    v.setUint32(o + 42, e.offset, true);
    out.set(e.name, o + 46);
    o += 46 + e.name.length;
  }
  v.setUint32(o, END, true);
  v.setUint16(o + 8, entries.length, true);
  v.setUint16(o + 10, entries.length, true);
  v.setUint32(o + 12, o - central, true);
  v.setUint32(o + 16, central, true);
  return out;
}

async function inflateRaw(data: Uint8Array, expected: number, file: string, name: string): Promise<Uint8Array> {
  const Ds = (globalThis as { DecompressionStream?: new (format: string) => TransformStream<Uint8Array, Uint8Array> }).DecompressionStream;
  if (!Ds) throw new ZipFormatError(file, `entry '${name}' is deflated and this platform has no DecompressionStream; store it uncompressed (zip -0)`);
  try {
    const stream = new Blob([data as Uint8Array<ArrayBuffer>]).stream().pipeThrough(new Ds("deflate-raw"));
    const out = new Uint8Array(await new Response(stream).arrayBuffer());
    if (out.length !== expected) throw new Error(`inflated to ${out.length} bytes, the header says ${expected}`);
    return out;
  } catch (cause) {
    throw new ZipFormatError(file, `entry '${name}' does not inflate: ${(cause as Error).message}`);
  }
}

/**
 * The files of a zip archive (folders skipped), by their names in the archive. Reads the central
 * directory; stored and deflated entries; checks each CRC-32.
 */
export async function readZip(bytes: Uint8Array, file = "<zip>"): Promise<Map<string, Uint8Array>> {
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const bad = (fault: string): never => {
    throw new ZipFormatError(file, fault);
  };
  let end = -1;
  for (let o = bytes.length - 22; o >= Math.max(0, bytes.length - 22 - 0xffff); o--) {
    if (v.getUint32(o, true) === END) {
      end = o;
      break;
    }
  }
  if (end < 0) bad("no end-of-central-directory record: not a zip archive, or truncated");
  const count = v.getUint16(end + 10, true);
  let o = v.getUint32(end + 16, true);
  const dec = new TextDecoder();
  const out = new Map<string, Uint8Array>();
  for (let i = 0; i < count; i++) {
    if (o + 46 > bytes.length || v.getUint32(o, true) !== CENTRAL) bad(`central directory entry ${i} is missing or damaged`);
    const flags = v.getUint16(o + 8, true);
    const method = v.getUint16(o + 10, true);
    const crc = v.getUint32(o + 16, true);
    const csize = v.getUint32(o + 20, true);
    const size = v.getUint32(o + 24, true);
    const nlen = v.getUint16(o + 28, true);
    const xlen = v.getUint16(o + 30, true);
    const clen = v.getUint16(o + 32, true);
    const local = v.getUint32(o + 42, true);
    const name = dec.decode(bytes.subarray(o + 46, o + 46 + nlen));
    o += 46 + nlen + xlen + clen;
    if (flags & 1) bad(`entry '${name}' is encrypted`);
    if (csize === 0xffffffff || size === 0xffffffff || local === 0xffffffff) bad(`entry '${name}' needs zip64, which is not read`);
    if (local + 30 > bytes.length || v.getUint32(local, true) !== LOCAL) bad(`entry '${name}': local header missing`);
    const start = local + 30 + v.getUint16(local + 26, true) + v.getUint16(local + 28, true);
    if (start + csize > bytes.length) bad(`entry '${name}' is truncated`);
    if (name.endsWith("/")) continue;
    const raw = bytes.subarray(start, start + csize);
    let data: Uint8Array;
    if (method === 0) data = raw.slice();
    else if (method === 8) data = await inflateRaw(raw, size, file, name);
    else return bad(`entry '${name}' uses compression method ${method}; only stored (0) and deflate (8) are read`);
    if (data.length !== size) bad(`entry '${name}' holds ${data.length} bytes, the directory says ${size}`);
    if (crc32(data) !== crc) bad(`entry '${name}' fails its CRC-32 check`);
    if (out.has(name)) bad(`entry '${name}' appears twice`);
    out.set(name, data);
  }
  return out;
}
