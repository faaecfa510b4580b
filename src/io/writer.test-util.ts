/**
 * Comparing safetensors files up to the writer record: what PEFT reads (tensor names, dtypes,
 * shapes, offsets, the data, `format`) byte for byte, and `__metadata__.peft_ts_version` apart.
 */
import assert from "node:assert/strict";
import { WRITER_METADATA_KEY } from "./writer.js";

interface Parts {
  readonly header: Record<string, unknown>;
  readonly data: Uint8Array;
}

/** A safetensors file's JSON header (without the writer record) and its data section. */
export function safetensorsParts(bytes: Uint8Array): Parts & { readonly writer: string | null } {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const n = Number(view.getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n))) as Record<string, unknown>;
  const meta = (header["__metadata__"] ?? {}) as Record<string, string>;
  const writer = meta[WRITER_METADATA_KEY] ?? null;
  const rest = Object.fromEntries(Object.entries(meta).filter(([k]) => k !== WRITER_METADATA_KEY));
  return { header: { ...header, __metadata__: rest }, data: bytes.subarray(8 + n), writer };
}

/**
 * `written` holds what `original` holds — the same header apart from the writer record and the
 * same data bytes — and records `writer` as its writer.
 */
export function assertSameSafetensors(written: Uint8Array, original: Uint8Array, writer: string, what = "file"): void {
  const w = safetensorsParts(written);
  const o = safetensorsParts(original);
  assert.deepEqual(w.header, o.header, `${what}: header (tensor names, dtypes, shapes, offsets, other metadata)`);
  assert.ok(Buffer.from(w.data).equals(Buffer.from(o.data)), `${what}: data bytes`);
  assert.equal(w.writer, writer, `${what}: writer record`);
}
