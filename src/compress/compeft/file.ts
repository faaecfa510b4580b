/** Reading and writing ComPEFT files (atomic writes: a failed write never destroys an existing file). */
import { readFileSync } from "../../platform/fs.js";
import { MissingFileError } from "../../errors.js";
import { writeFileAtomic } from "../../io/atomic.js";
import type { CompeftCompressed } from "./compeft.js";
import { decodeCompeft, encodeCompeft } from "./format.js";

/** Encodes `c` and writes it to `path` atomically (temporary file in the same folder, then rename). */
export function writeCompeftFile(path: string, c: CompeftCompressed): void {
  writeFileAtomic(path, encodeCompeft(c));
}

/** Reads and decodes a ComPEFT file; a missing file raises MissingFileError, format errors name `path`. */
export function readCompeftFile(path: string): CompeftCompressed {
  let bytes: Buffer;
  try {
    bytes = readFileSync(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") {
      throw new MissingFileError(path, "write it with writeCompeftFile() or check the path");
    }
    throw e;
  }
  return decodeCompeft(new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength), path);
}
