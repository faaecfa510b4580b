/**
 * A training run's output folder: which files it holds, how it is claimed (a fresh folder, a
 * resumed run, or an explicit overwrite), atomic JSON writes, and the versions a run records.
 */
import { existsSync, mkdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { createRequire } from "node:module";
import { arch, cpus, platform } from "node:os";
import { join } from "node:path";
import { ConfigError } from "../errors.js";
import { writeFileAtomic } from "../io/atomic.js";
import { readJsonObject } from "../io/json-file.js";
import { packageRoot } from "../util/paths.js";

/** File names inside a run folder. The adapter files are PEFT's own names. */
export const RUN_FILES = {
  adapterConfig: "adapter_config.json",
  adapterWeights: "adapter_model.safetensors",
  metrics: "metrics.json",
  config: "config.json",
  history: "history.json",
  curvesSvg: "curves.svg",
  curvesPng: "curves.png",
  /** Layer importance scores of the run's steps (`src/train/importance.ts`). */
  importance: "importance.json",
  /** Folder of the resumable training checkpoint (`src/train/checkpoint.ts`). */
  checkpoint: "checkpoint",
} as const;

/** How `checkRunDir` and `claimRunDir` treat a folder that already holds a run. */
export type RunDirMode = "new" | "resume" | "overwrite";

/** Files that mark a folder as holding a run (any one of them). */
const RUN_MARKERS = [RUN_FILES.adapterConfig, RUN_FILES.metrics, RUN_FILES.config, RUN_FILES.checkpoint];

/** True when `dir` holds (part of) a run. */
export function holdsRun(dir: string): boolean {
  return RUN_MARKERS.some((f) => existsSync(join(dir, f)));
}

/**
 * Checks that `dir` may take a run, before anything is computed or written. `new` refuses a
 * folder that already holds a run (so a typo in `--out` never destroys results); `resume`
 * requires the folder's run config and returns it; `overwrite` accepts anything but a file.
 */
export function checkRunDir(dir: string, mode: RunDirMode, command = "peft train"): Record<string, unknown> | null {
  if (existsSync(dir) && !statSync(dir).isDirectory()) throw new ConfigError(command, "--out", `${dir} exists and is not a folder; choose another --out`);
  if (mode === "resume") {
    const cfg = join(dir, RUN_FILES.config);
    if (!existsSync(cfg)) throw new ConfigError(command, "--resume", `${dir} holds no run to resume (no ${RUN_FILES.config}); drop --resume to start a new run`);
    return readJsonObject(cfg);
  }
  if (mode === "new" && existsSync(dir) && holdsRun(dir)) {
    const found = RUN_MARKERS.filter((f) => existsSync(join(dir, f)));
    throw new ConfigError(command, "--out", `${dir} already holds a run (${found.join(", ")}); pass --resume to continue it, --overwrite to replace it, or choose another --out`);
  }
  return null;
}

/**
 * Creates `dir` once the run is set up. For `overwrite` the old checkpoint is deleted (so the
 * trainer starts afresh); the other old files are replaced one by one, atomically, as the new run
 * writes them.
 */
export function claimRunDir(dir: string, mode: RunDirMode): void {
  if (mode === "overwrite") rmSync(join(dir, RUN_FILES.checkpoint), { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
}

/** Writes `value` as pretty JSON (newline-terminated), atomically. */
export function writeJsonAtomic(path: string, value: unknown): void {
  writeFileAtomic(path, `${JSON.stringify(value, null, 2)}\n`);
}

function versionOf(pkg: string): string | null {
  try {
    const req = createRequire(join(packageRoot(), "package.json"));
    const file = req.resolve(`${pkg}/package.json`);
    const v = (JSON.parse(readFileSync(file, "utf8")) as { version?: unknown }).version;
    return typeof v === "string" ? v : null;
  } catch {
    return null; // a package without an exported package.json: its version is simply not recorded
  }
}

/** Versions and machine facts a run records in its config. */
export function runEnvironment(): Record<string, unknown> {
  const pj = JSON.parse(readFileSync(join(packageRoot(), "package.json"), "utf8")) as { version?: unknown };
  return {
    peftTs: typeof pj.version === "string" ? pj.version : null,
    node: process.version,
    onnxruntimeNode: versionOf("onnxruntime-node"),
    platform: `${platform()}-${arch()}`,
    cpus: cpus().length,
    cpuModel: cpus()[0]?.model ?? null,
  };
}
