/**
 * Atomic file writes: data goes to `<path>.tmp-<pid>-<random>` in the same folder, is fsynced,
 * then renamed over `path`. A failed write removes the temporary file and never touches an
 * existing `path`, so readers see either the old file or the complete new one. A process killed
 * mid-write (kill -9, power loss) leaves its temporary file behind; the next atomic write into the
 * same folder removes the temporary files of processes that no longer run. System errors come out
 * as `FileSystemError`s naming the file.
 */
import { dirname, fs, join } from "../platform/fs.js";
import { randomHex } from "../platform/crypto.js";
import { utf8Bytes } from "../util/bytes.js";
import { wrapFsError } from "./fs-error.js";

/** `<name>.tmp-<pid>-<12 hex>`: the temporary names {@link tempPathFor} makes. */
const TEMP_NAME = /^.+\.tmp-(\d+)-[0-9a-f]{12}$/;

/** True while a process with this id exists (signal 0 only checks; EPERM means it exists but is not ours). */
function processAlive(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
}

/**
 * Removes the temporary files that writers which died mid-write left in `dir` (names made by
 * {@link tempPathFor} whose process id no longer runs); returns the removed paths. Files of live
 * processes, and anything else, are left alone; a folder that cannot be listed is skipped.
 */
export function removeStaleTempFiles(dir: string): string[] {
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch {
    return []; // a missing or unreadable folder: the write itself reports the problem
  }
  const removed: string[] = [];
  for (const name of names) {
    const m = TEMP_NAME.exec(name);
    if (!m || processAlive(Number(m[1]))) continue;
    const p = join(dir, name);
    try {
      if (fs.lstatSync(p).isFile()) {
        fs.unlinkSync(p);
        removed.push(p);
      }
    } catch {
      // removed by someone else meanwhile, or not ours to remove: leave it
    }
  }
  return removed;
}

/** Writes a file's contents to an open file descriptor (must write everything it means to). */
export type FdWriter = (fd: number) => void;

/** One file for {@link writeFilesAtomic}: either its bytes/text or a writer callback. */
export type AtomicFile =
  | { readonly path: string; readonly data: Uint8Array | string }
  | { readonly path: string; readonly write: FdWriter };

/** The temporary name used while writing `path` (same folder, so the rename stays atomic). */
export function tempPathFor(path: string): string {
  return `${path}.tmp-${process.pid}-${randomHex(6)}`;
}

/** Writes all of `data` to `fd`, looping over short writes. */
export function writeAll(fd: number, data: Uint8Array | string): void {
  const bytes = typeof data === "string" ? utf8Bytes(data) : data;
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
  try {
    removeStaleTempFiles(dirname(path));
    const tmp = tempPathFor(path);
    writeTemp(tmp, write);
    try {
      fs.renameSync(tmp, path);
    } catch (e) {
      removeQuietly(tmp);
      throw e;
    }
    syncDir(dirname(path));
  } catch (e) {
    throw wrapFsError(e, path);
  }
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
  try {
    writeFilesAtomicRaw(files);
  } catch (e) {
    throw wrapFsError(e, files[0]?.path);
  }
}

function writeFilesAtomicRaw(files: readonly AtomicFile[]): void {
  for (const d of new Set(files.map((f) => dirname(f.path)))) removeStaleTempFiles(d);
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
