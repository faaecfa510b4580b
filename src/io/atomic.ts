/**
 * Atomic file writes: data goes to `<path>.tmp-<pid>-<random>` in the same folder, is fsynced,
 * then renamed over `path`. A failed write removes the temporary file and never touches an
 * existing `path`, so readers see either the old file or the complete new one.
 */
import fs from "node:fs";
import { randomBytes } from "node:crypto";
import { dirname } from "node:path";

/** Writes a file's contents to an open file descriptor (must write everything it means to). */
export type FdWriter = (fd: number) => void;

/** One file for {@link writeFilesAtomic}: either its bytes/text or a writer callback. */
export type AtomicFile =
  | { readonly path: string; readonly data: Uint8Array | string }
  | { readonly path: string; readonly write: FdWriter };

/** The temporary name used while writing `path` (same folder, so the rename stays atomic). */
export function tempPathFor(path: string): string {
  return `${path}.tmp-${process.pid}-${randomBytes(6).toString("hex")}`;
}

/** Writes all of `data` to `fd`, looping over short writes. */
export function writeAll(fd: number, data: Uint8Array | string): void {
  const bytes = typeof data === "string" ? Buffer.from(data, "utf8") : data;
  let off = 0;
  while (off < bytes.byteLength) {
    off += fs.writeSync(fd, bytes, off, Math.min(bytes.byteLength - off, 1 << 30));
  }
}

function removeQuietly(path: string): void {
  try {
    fs.unlinkSync(path);
  } catch (e) {
    // The temporary file may never have been created; anything else is worth reporting.
    if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
  }
}

/** fsync the folder so a completed rename survives a crash (POSIX only; Windows cannot open folders). */
function syncDir(dir: string): void {
  if (process.platform === "win32") return;
  const fd = fs.openSync(dir, "r");
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/** Creates `tmp`, runs `write` on it, fsyncs and closes it; removes it again if anything fails. */
function writeTemp(tmp: string, write: FdWriter): void {
  const fd = fs.openSync(tmp, "wx", 0o644);
  try {
    write(fd);
    fs.fsyncSync(fd);
  } catch (e) {
    fs.closeSync(fd);
    removeQuietly(tmp);
    throw e;
  }
  try {
    fs.closeSync(fd);
  } catch (e) {
    removeQuietly(tmp);
    throw e;
  }
}

function writerOf(f: AtomicFile): FdWriter {
  if ("write" in f) return f.write;
  const data = f.data;
  return (fd) => writeAll(fd, data);
}

/**
 * Atomically replaces `path` with the output of `write` (called with an open descriptor of a
 * temporary file in the same folder). If `write` throws, `path` is left as it was.
 */
export function writeFileAtomicWith(path: string, write: FdWriter): void {
  const tmp = tempPathFor(path);
  writeTemp(tmp, write);
  try {
    fs.renameSync(tmp, path);
  } catch (e) {
    removeQuietly(tmp);
    throw e;
  }
  syncDir(dirname(path));
}

/** Atomically replaces `path` with `data` (strings are written as UTF-8). */
export function writeFileAtomic(path: string, data: Uint8Array | string): void {
  writeFileAtomicWith(path, (fd) => writeAll(fd, data));
}

/**
 * Writes several files so that either all of them are replaced or none is: every temporary file
 * is written and fsynced first, and only then are they renamed, in the order given. A failure
 * while writing leaves every target untouched. (A failure of the rename itself, which needs a
 * vanished folder or similar, can leave the earlier targets renamed; the system error is rethrown.)
 */
export function writeFilesAtomic(files: readonly AtomicFile[]): void {
  const temps: string[] = [];
  try {
    for (const f of files) {
      const tmp = tempPathFor(f.path);
      writeTemp(tmp, writerOf(f));
      temps.push(tmp);
    }
  } catch (e) {
    for (const t of temps) removeQuietly(t);
    throw e;
  }
  for (let i = 0; i < files.length; i++) {
    try {
      fs.renameSync(temps[i]!, files[i]!.path);
    } catch (e) {
      for (const t of temps.slice(i)) removeQuietly(t);
      throw e;
    }
  }
  for (const d of new Set(files.map((f) => dirname(f.path)))) syncDir(d);
}
