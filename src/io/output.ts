/**
 * The output rule every writing command and library writer follows: nothing a user owns is lost.
 *
 * - An output that is one of the command's inputs, lies inside one (a file in the base model's
 *   folder) or contains one (a folder above an adapter being read) is always refused, even with
 *   `overwrite`: the command would destroy what it reads. Paths are compared after resolving
 *   symbolic links (and hard links of one file count as the same file).
 * - An existing output file, or an existing non-empty output folder, is replaced only with
 *   `overwrite` (`--overwrite`); with it, a folder output has the files the command writes
 *   replaced (atomically) and keeps any other file.
 * - A file output that is a folder, or a folder output that is a file, is refused.
 *
 * Every refusal is a coded error naming the paths, raised before anything is computed or written.
 */
import { basename, dirname, fs, join, relative, resolve, sep } from "../platform/fs.js";
import { OutputExistsError, OutputIsInputError, UnsupportedFileTypeError } from "../errors.js";
import { withFsErrors } from "./fs-error.js";

export interface OutputCheck {
  /** The output path as the user gave it. */
  readonly out: string;
  /** A single file, or a folder the command writes its files into. */
  readonly kind: "file" | "folder";
  /** The command's input paths (files or folders); null/undefined entries are skipped. */
  readonly inputs: readonly (string | null | undefined)[];
  /** Replace an existing output (never an input). */
  readonly overwrite?: boolean;
  /** The option that named the output, for messages (default `--out`). */
  readonly option?: string;
}

/** `path` with every existing part's symbolic links resolved (the missing tail kept as given). */
export function realPathOf(path: string): string {
  const abs = resolve(path);
  const tail: string[] = [];
  let cur = abs;
  for (;;) {
    try {
      const real = fs.realpathSync(cur);
      return tail.length ? join(real, ...tail.reverse()) : real;
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code !== "ENOENT" && code !== "ENOTDIR") throw e;
      const parent = dirname(cur);
      if (parent === cur) return abs;
      tail.push(basename(cur));
      cur = parent;
    }
  }
}

function isWithin(inner: string, outer: string): boolean {
  const rel = relative(outer, inner);
  return rel !== "" && !rel.startsWith(`..${sep}`) && rel !== ".." && !rel.startsWith(sep) && !/^[a-zA-Z]:/.test(rel);
}

function sameFile(a: string, b: string): boolean {
  try {
    const sa = fs.statSync(a);
    const sb = fs.statSync(b);
    return sa.isFile() && sb.isFile() && sa.dev === sb.dev && sa.ino === sb.ino;
  } catch {
    return false; // one of them does not exist: not the same file
  }
}

/** How `out` relates to `input` (null: unrelated). */
export function outputRelation(out: string, input: string): "is" | "contains" | "is inside" | null {
  const o = realPathOf(out);
  const i = realPathOf(input);
  if (o === i || sameFile(o, i)) return "is";
  if (isWithin(o, i)) return "is inside";
  if (isWithin(i, o)) return "contains";
  return null;
}

/** Applies the output rule (see the file comment); returns the output's absolute path. */
export function checkOutput(c: OutputCheck): string {
  const option = c.option ?? "--out";
  for (const input of c.inputs) {
    // an input that does not exist (a built-in dataset or model name) cannot be destroyed
    if (input === null || input === undefined || input === "" || !fs.existsSync(input)) continue;
    const rel = outputRelation(c.out, input);
    if (rel) throw new OutputIsInputError(c.out, input, rel, option);
  }
  const abs = resolve(c.out);
  const st = withFsErrors(c.out, () => fs.statSync(abs, { throwIfNoEntry: false }));
  if (!st) return abs;
  if (c.kind === "file") {
    if (st.isDirectory()) throw new UnsupportedFileTypeError(c.out, `a file path for ${option}, not a folder`);
    if (!c.overwrite) throw new OutputExistsError(c.out, "already exists", option);
    return abs;
  }
  if (!st.isDirectory()) throw new UnsupportedFileTypeError(c.out, `a folder path for ${option}, not a file`);
  if (!c.overwrite && withFsErrors(c.out, () => fs.readdirSync(abs)).length > 0) throw new OutputExistsError(c.out, "is a folder that is not empty", option);
  return abs;
}
