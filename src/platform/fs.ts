/**
 * The platform seam for files: the `node:fs` / `node:path` / `node:module` functions the core
 * uses, in one place. In Node these are Node's own. Bundlers building for a browser (esbuild,
 * Vite, webpack: the package.json `browser` field) swap this module for `fs.browser.ts`, whose
 * file operations throw `NoFileSystemError` (the browser entry `peft-ts/web` reads everything
 * from bytes instead) and whose path functions work on plain `/`-separated names.
 */
export {
  closeSync,
  existsSync,
  fstatSync,
  fsyncSync,
  mkdirSync,
  openSync,
  readFileSync,
  readSync,
  readdirSync,
  renameSync,
  rmSync,
  statSync,
  unlinkSync,
  writeSync,
} from "node:fs";
export { basename, dirname, extname, isAbsolute, join, relative, resolve, sep } from "node:path";
import nodeFs from "node:fs";
import { createRequire } from "node:module";
import { dirname as dirOf } from "node:path";

/**
 * Node's `fs` module object, for modules that call through it (`fs.writeSync(…)`) so that tests
 * can wrap its methods (`mock.method(fs, "writeSync", …)`) and reach every caller.
 */
export const fs = nodeFs;

/** Whether the core runs with a file system (Node) or without one (a browser bundle). */
export const HAS_FILE_SYSTEM = true;

/** The folder of an installed npm package (resolved from this file, as `import` would). */
export function packageDir(pkg: string): string {
  return dirOf(createRequire(import.meta.url).resolve(`${pkg}/package.json`));
}
