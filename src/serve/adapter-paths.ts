/**
 * Where adapters may be loaded from at run time: only inside `--adapter-root`, judged on real
 * paths (after `..` and every symbolic link are resolved), so neither `../x`, an absolute path
 * elsewhere, nor a link inside the root that points out of it can reach another folder.
 */
import { existsSync, realpathSync } from "node:fs";
import { isAbsolute, relative, resolve, sep } from "node:path";
import { AdapterPathError, MissingFileError } from "../errors.js";

/** True when `child` is `root` or lies under it (both real, absolute paths). */
function inside(root: string, child: string): boolean {
  const rel = relative(root, child);
  return rel === "" || (!rel.startsWith(`..${sep}`) && rel !== ".." && !isAbsolute(rel));
}

/**
 * The real path of `path` (relative paths are taken from the root), or an `AdapterPathError`
 * when it leaves the root. `root` must already be a real path (see `realRoot`).
 */
export function resolveAdapterPath(root: string | null, path: string): string {
  if (root === null) throw new AdapterPathError(path, null, "loading adapters at run time is off; start the server with --adapter-root DIR and put the adapters under it");
  // eslint-disable-next-line no-control-regex
  if (path.length === 0 || /[\u0000]/u.test(path)) throw new AdapterPathError(path, root, "not a usable path");
  const lexical = resolve(root, path);
  if (!inside(root, lexical)) throw new AdapterPathError(path, root, `resolves to ${lexical}, outside the adapter root ${root}`);
  if (!existsSync(lexical)) throw new MissingFileError(lexical, `no adapter folder at ${JSON.stringify(path)} under the adapter root`);
  const real = realpathSync(lexical);
  if (!inside(root, real)) throw new AdapterPathError(path, root, `a symbolic link leads to ${real}, outside the adapter root ${root}`);
  return real;
}

/** The real path of the `--adapter-root` folder. */
export function realRoot(dir: string): string {
  if (!existsSync(dir)) throw new MissingFileError(dir, "--adapter-root must be an existing folder");
  return realpathSync(dir);
}
