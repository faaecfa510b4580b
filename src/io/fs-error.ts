/**
 * Node's file-system errors (`ENOENT`, `ENOTDIR`, `EROFS`…) as coded `FileSystemError`s that name
 * the file and say what to do, so no raw system error reaches a user.
 */
import { FileSystemError, PeftError } from "../errors.js";

/** What each system error code means to a user. */
const HINTS: Readonly<Record<string, string>> = {
  ENOENT: "no such file or folder (check the path; missing parent folders are not created here)",
  ENOTDIR: "a part of the path is a file, not a folder",
  EISDIR: "it is a folder; a file is needed here",
  EEXIST: "something already exists at this path",
  EROFS: "the file system is read-only; write somewhere else",
  ENOSPC: "no space left on the device; free some space or write elsewhere",
  EDQUOT: "the disk quota is exhausted; free some space or write elsewhere",
  EACCES: "permission denied",
  EPERM: "operation not permitted",
  ENAMETOOLONG: "the file name is too long",
  ELOOP: "too many levels of symbolic links",
  EMFILE: "too many open files",
  ENOTEMPTY: "the folder is not empty",
  EXDEV: "the paths are on different devices",
  EBUSY: "the file is busy",
  EIO: "input/output error from the device",
  EFBIG: "the file is too large for this file system",
};

/** True for an error thrown by Node's `fs` (it carries a string errno `code` and a `syscall`). */
export function isFsError(e: unknown): e is NodeJS.ErrnoException & { code: string; syscall: string } {
  return e instanceof Error && !(e instanceof PeftError) && typeof (e as NodeJS.ErrnoException).code === "string" && typeof (e as NodeJS.ErrnoException).syscall === "string";
}

/** `e` as a `FileSystemError` naming the file (Node's own `path`, else `file`); other errors unchanged. */
export function wrapFsError(e: unknown, file?: string): unknown {
  if (!isFsError(e)) return e;
  const path = typeof e.path === "string" ? e.path : (file ?? "(unknown file)");
  const dest = (e as { dest?: unknown }).dest;
  const target = typeof dest === "string" ? `${path} → ${dest}` : path;
  return new FileSystemError(target, e.syscall, e.code, HINTS[e.code] ?? e.message, { cause: e });
}

/** Runs `fn`, turning a Node file-system error into a `FileSystemError` naming `file`. */
export function withFsErrors<T>(file: string, fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    throw wrapFsError(e, file);
  }
}
