/**
 * The IDX format of the MNIST-style image datasets (`train-images-idx3-ubyte`,
 * `…-labels-idx1-ubyte`, as Fashion-MNIST ships them): a big-endian header — two zero bytes, the
 * element type (0x08 = unsigned byte), the number of dimensions — then one 32-bit size per
 * dimension and the row-major data. Decompression (`.gz`) is the caller's (Node: zlib).
 */
import { DatasetError } from "../errors.js";

export interface IdxArray {
  readonly shape: readonly number[];
  readonly data: Uint8Array;
}

/** Parses an unsigned-byte IDX file; `file` names it in errors. */
export function parseIdx(bytes: Uint8Array, file: string): IdxArray {
  if (bytes.length < 4) throw new DatasetError(file, null, "not an IDX file: shorter than its 4-byte magic number");
  if (bytes[0] !== 0 || bytes[1] !== 0) throw new DatasetError(file, null, "not an IDX file: the magic number must start with two zero bytes (is it still gzip-compressed?)");
  if (bytes[2] !== 0x08) throw new DatasetError(file, null, `IDX element type 0x${bytes[2]!.toString(16)} is not supported (only 0x08, unsigned bytes)`);
  const rank = bytes[3]!;
  if (rank < 1) throw new DatasetError(file, null, "IDX file with no dimensions");
  const header = 4 + 4 * rank;
  if (bytes.length < header) throw new DatasetError(file, null, `truncated IDX header: ${rank} dimensions need ${header} bytes, the file has ${bytes.length}`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const shape = Array.from({ length: rank }, (_, i) => view.getUint32(4 + 4 * i, false));
  const n = shape.reduce((a, b) => a * b, 1);
  if (bytes.length !== header + n) throw new DatasetError(file, null, `IDX data of shape [${shape.join(", ")}] needs ${n} bytes after the header, the file has ${bytes.length - header}`);
  return { shape, data: bytes.subarray(header) };
}

/** Images [n, h, w] and labels [n] as examples: pixel bytes (row-major) and a class id. */
export function idxExamples(images: IdxArray, labels: IdxArray, file: string): { pixels: Uint8Array; label: number }[] {
  if (images.shape.length !== 3) throw new DatasetError(file, null, `images must be [n, height, width], got [${images.shape.join(", ")}]`);
  if (labels.shape.length !== 1 || labels.shape[0] !== images.shape[0]) throw new DatasetError(file, null, `labels [${labels.shape.join(", ")}] do not match ${images.shape[0]} images`);
  const size = images.shape[1]! * images.shape[2]!;
  return Array.from({ length: images.shape[0]! }, (_, i) => ({ pixels: images.data.subarray(i * size, (i + 1) * size), label: labels.data[i]! }));
}
