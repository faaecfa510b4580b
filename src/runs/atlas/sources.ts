/**
 * What `peft atlas` composes: task vectors from `peft train` run folders (or plain PEFT LoRA
 * adapter folders) and the classification head of the target task, taken from one of them.
 *
 * Heads are task-specific (the paper, and bench/atlas/experiment.ts, keep them out of the task
 * vectors), so every task vector is built without `classifier.*`; the head trained with the
 * `--head` run (its `modules_to_save` copy) is put into the model and stays fixed while λ is
 * learned.
 */
import { existsSync, statSync } from "node:fs";
import { basename, join, resolve } from "node:path";
import { ConfigError, MissingFileError } from "../../errors.js";
import { readAdapterDir } from "../../io/peft-files.js";
import { readJsonObject } from "../../io/json-file.js";
import { type AtlasTaskVector, atlasTaskVectorFromLoraDir, checkTaskVector } from "../../compose/atlas/task-vectors.js";
import { overlaySource } from "../../models/context.js";
import type { LoadedModel } from "../../models/load.js";
import { loadAdapterDir } from "../../peft/adapter-io.js";
import { modelInfo } from "../../peft/model-info.js";
import type { Tensor } from "../../tensor.js";
import { RUN_FILES } from "../run-dir.js";

const COMMAND = "peft atlas";
/** The classification head's parameters (every seq-cls architecture peft-ts builds names it so). */
export const HEAD_PARAMS = ["classifier.weight", "classifier.bias"] as const;
/** Task vectors leave the head out: it is task-specific. */
export const TASK_VECTOR_INCLUDE = /^(?!classifier\.)/;

/** A run folder (or plain adapter folder) named by `--task-vectors` / `--head`. */
export interface RunSource {
  readonly dir: string;
  /** The folder's `config.json` as `peft train` writes it (null for a plain adapter folder). */
  readonly runConfig: Record<string, unknown> | null;
}

/** Splits `a,b,c` and checks that each is an adapter folder. */
export function parseRunList(spec: string, option = "--task-vectors"): string[] {
  const dirs = spec.split(",").map((s) => s.trim());
  if (dirs.length === 0 || dirs.some((d) => d === "")) throw new ConfigError(COMMAND, option, `expected comma-separated run folders such as runs/amazon,runs/imdb, got '${spec}'`);
  const seen = new Set<string>();
  for (const d of dirs) {
    const abs = resolve(d);
    if (seen.has(abs)) throw new ConfigError(COMMAND, option, `${d} is listed twice`);
    seen.add(abs);
  }
  return dirs;
}

/** Opens a run folder: it must hold a PEFT adapter (adapter_config.json + weights). */
export function openRunSource(dir: string, option: string): RunSource {
  if (!existsSync(dir) || !statSync(dir).isDirectory()) {
    throw new MissingFileError(dir, `${option} takes 'peft train' run folders or PEFT adapter folders (adapter_config.json + adapter_model.safetensors)`);
  }
  if (!existsSync(join(dir, RUN_FILES.adapterConfig))) {
    throw new MissingFileError(join(dir, RUN_FILES.adapterConfig), `${option}: ${dir} holds no adapter; pass a folder written by 'peft train' (or a PEFT adapter folder)`);
  }
  const cfg = join(dir, RUN_FILES.config);
  let runConfig: Record<string, unknown> | null = null;
  if (existsSync(cfg)) {
    const raw = readJsonObject(cfg);
    if (raw.command === "peft train") runConfig = raw;
  }
  return { dir, runConfig };
}

function runModelType(run: RunSource): string | null {
  const m = run.runConfig?.model as { modelType?: unknown } | undefined;
  return typeof m?.modelType === "string" ? m.modelType : null;
}

/** Label names of the run's dataset (null when unknown). */
export function runLabelNames(run: RunSource): string[] | null {
  const d = run.runConfig?.dataset as { labelNames?: unknown } | undefined;
  return Array.isArray(d?.labelNames) && d.labelNames.every((x) => typeof x === "string") ? (d.labelNames as string[]) : null;
}

/** The head copy stored in an adapter folder, as raw tensors (null when it has none). */
function storedHead(dir: string): Map<string, Tensor> | null {
  const { weights } = readAdapterDir(dir);
  const out = new Map<string, Tensor>();
  for (const p of HEAD_PARAMS) {
    const key = [...weights.keys()].find((k) => k === p || k.endsWith(`.${p}`));
    if (key) out.set(p, weights.get(key)!);
  }
  return out.size === HEAD_PARAMS.length ? out : null;
}

/** `model` with a head shaped like `head` (so an adapter trained with another label count loads). */
function withHeadOf(model: LoadedModel, head: ReadonlyMap<string, Tensor> | null): LoadedModel {
  if (!head || !HEAD_PARAMS.every((p) => model.weights.has(p))) return model;
  return { ...model, weights: overlaySource(model.weights, head) };
}

/**
 * Task vectors (ΔW = scaling·B·A of every LoRA module, the head left out) of the runs, checked
 * against `model`: a run trained on another architecture is refused by name.
 */
export function loadRunTaskVectors(runs: readonly RunSource[], model: LoadedModel): AtlasTaskVector[] {
  const modelType = model.config.modelType;
  const names = new Map<string, number>();
  return runs.map((run) => {
    const mt = runModelType(run);
    if (mt !== null && mt !== modelType) {
      throw new ConfigError(COMMAND, "--task-vectors", `${run.dir} was trained on a ${mt} model, but --model is ${modelType}; task vectors must come from the same base model`);
    }
    let name = basename(resolve(run.dir));
    const n = names.get(name) ?? 0;
    names.set(name, n + 1);
    if (n > 0) name = `${name}-${n + 1}`;
    const tv = atlasTaskVectorFromLoraDir(name, run.dir, withHeadOf(model, storedHead(run.dir)), { include: TASK_VECTOR_INCLUDE });
    if (tv.blocks.size === 0) throw new ConfigError(COMMAND, "--task-vectors", `${run.dir} adapts no weight outside the head, so it gives an empty task vector`);
    checkTaskVector(tv, model.weights);
    return tv;
  });
}

/**
 * The target task's head from the `--head` run: its trained `classifier` copy. It must have one
 * row per class of `--data`, and (for `peft train` runs) the same label names.
 */
export function loadRunHead(run: RunSource, model: LoadedModel, labelNames: readonly string[]): Map<string, Tensor> {
  const raw = storedHead(run.dir);
  if (!raw) throw new ConfigError(COMMAND, "--head", `${run.dir} holds no trained classifier (no modules_to_save 'classifier'); pass --head with a 'peft train' run on the target labels`);
  const rows = raw.get("classifier.weight")!.shape[0];
  if (rows !== labelNames.length) {
    throw new ConfigError(COMMAND, "--head", `the head of ${run.dir} has ${rows} labels, --data has ${labelNames.length} (${labelNames.join(", ")}); pass --head with a run trained on the same labels`);
  }
  const names = runLabelNames(run);
  if (names && names.join("\u0000") !== labelNames.join("\u0000")) {
    throw new ConfigError(COMMAND, "--head", `the head of ${run.dir} was trained on labels [${names.join(", ")}], --data has [${labelNames.join(", ")}]; the class ids would not match`);
  }
  // loaded through the adapter reader, so a head of the wrong hidden size is refused by name
  const adapter = loadAdapterDir(run.dir, "atlas_head", modelInfo(withHeadOf(model, raw)));
  return new Map(HEAD_PARAMS.map((p) => [p, adapter.tensors.get(p)!]));
}
