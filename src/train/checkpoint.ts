/**
 * Training checkpoints: trainable parameters, optimizer state, step, epoch, RNG states, the
 * data order and JSON extras, saved into a directory so that it is never half-written.
 *
 * Layout of `<dir>`:
 *
 *     checkpoint.json                     the commit record: step, epoch, RNG, optimizer scalars,
 *                                         extras, and the names and sizes of the two files below
 *     params-<step>-<id>.safetensors      the trainable parameters, under their own names
 *     state-<step>-<id>.safetensors       `optimizer/<param>.<buffer>` float32 buffers and
 *                                         `data_order` (int32)
 *
 * A save writes (fsync + rename) both tensor files under fresh names first and replaces
 * `checkpoint.json` atomically last; only then are the files of the previous checkpoint (and
 * leftovers of interrupted saves) deleted. A crash at any point leaves `checkpoint.json`
 * pointing at complete files: the previous checkpoint or the new one. One process at a time
 * may save into a directory.
 */
import { fs } from "../platform/fs.js";
import { randomHex } from "../platform/crypto.js";
import { join } from "../platform/fs.js";
import { CheckpointError, ConfigError } from "../errors.js";
import { writeFileAtomic, writeFilesAtomic } from "../io/atomic.js";
import { loadSafetensors, safetensorsFileWriter } from "../io/safetensors.js";
import type { Tensor } from "../tensor.js";
import type { OptimizerKind, OptimizerState, ParamStateInfo } from "./optim/types.js";
import type { RngState } from "../util/rng.js";

export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };

export interface TrainingCheckpoint {
  /** Optimizer steps completed. */
  readonly step: number;
  /** Epoch (may be fractional, like `transformers`' `state.epoch`). */
  readonly epoch: number;
  /** Trainable parameters (any dtype; saved bit for bit). */
  readonly params: ReadonlyMap<string, Tensor> | Readonly<Record<string, Tensor>>;
  readonly optimizer: OptimizerState;
  /** Named RNG states, e.g. `{ data: rng.state(), dropout: … }`. */
  readonly rng: Readonly<Record<string, RngState>>;
  /** The example order of the current epoch (indices). */
  readonly dataOrder: Int32Array | readonly number[];
  readonly extras?: Readonly<Record<string, JsonValue>>;
  /** Other named tensors to keep with the state (e.g. the best parameters so far for early stopping). */
  readonly tensors?: ReadonlyMap<string, Tensor>;
}

export interface LoadedCheckpoint {
  readonly step: number;
  readonly epoch: number;
  readonly params: Map<string, Tensor>;
  readonly optimizer: OptimizerState;
  readonly rng: Record<string, RngState>;
  readonly dataOrder: Int32Array;
  readonly extras: Record<string, JsonValue>;
  /** The checkpoint's `tensors` (empty when it had none). */
  readonly tensors: Map<string, Tensor>;
}

export const CHECKPOINT_FILE = "checkpoint.json";
const FORMAT = "peft-ts-training-checkpoint";
const VERSION = 1;
const OPT_PREFIX = "optimizer/";
const DATA_ORDER = "data_order";
const EXTRA_PREFIX = "extra/";
const OWN_FILE = /^(params|state)-\d+-[0-9a-f]+\.safetensors(\.tmp-\d+-[0-9a-f]+)?$/;
const OWN_TEMP = /^checkpoint\.json\.tmp-\d+-[0-9a-f]+$/;

interface CheckpointRecord {
  format: string;
  version: number;
  step: number;
  epoch: number;
  files: { params: { name: string; bytes: number }; state: { name: string; bytes: number } };
  optimizer: {
    kind: OptimizerKind;
    step: number;
    hyperparams: Record<string, number | boolean>;
    params: ParamStateInfo[];
    tensors: string[];
  };
  rng: Record<string, RngState>;
  dataOrderLength: number;
  extras: Record<string, JsonValue>;
  /** Names of the extra tensors in the state file (absent in checkpoints written without any). */
  tensors?: string[];
}

function checkJson(value: unknown, path: string): void {
  if (value === null || typeof value === "string" || typeof value === "boolean") return;
  if (typeof value === "number") {
    if (!Number.isFinite(value)) throw new ConfigError("checkpoint", path, `${value} cannot be stored in JSON`);
    return;
  }
  if (Array.isArray(value)) {
    value.forEach((v, i) => checkJson(v, `${path}[${i}]`));
    return;
  }
  if (typeof value === "object" && Object.getPrototypeOf(value) === Object.prototype) {
    for (const [k, v] of Object.entries(value)) checkJson(v, `${path}.${k}`);
    return;
  }
  throw new ConfigError("checkpoint", path, `only JSON values (null, booleans, finite numbers, strings, arrays, plain objects) can be stored, got ${typeof value}`);
}

function entries(params: TrainingCheckpoint["params"]): [string, Tensor][] {
  return params instanceof Map ? [...(params as ReadonlyMap<string, Tensor>)] : Object.entries(params);
}

/** Saves `ckpt` into `dir` (created if needed), replacing any previous checkpoint there atomically. */
export function saveCheckpoint(dir: string, ckpt: TrainingCheckpoint): void {
  if (!Number.isSafeInteger(ckpt.step) || ckpt.step < 0) throw new ConfigError("checkpoint", "step", `must be a non-negative integer, got ${ckpt.step}`);
  if (!Number.isFinite(ckpt.epoch) || ckpt.epoch < 0) throw new ConfigError("checkpoint", "epoch", `must be a finite number >= 0, got ${ckpt.epoch}`);
  const order = Int32Array.from(ckpt.dataOrder);
  for (let i = 0; i < ckpt.dataOrder.length; i++) {
    const v = ckpt.dataOrder[i]!;
    if (!Number.isSafeInteger(v) || v < 0 || v !== order[i]) {
      throw new ConfigError("checkpoint", `dataOrder[${i}]`, `must be an integer index in [0, 2^31), got ${v}`);
    }
  }
  checkJson(ckpt.rng, "rng");
  checkJson(ckpt.optimizer.hyperparams, "optimizer.hyperparams");
  const extras = ckpt.extras ?? {};
  checkJson(extras, "extras");

  const stateTensors = new Map<string, Tensor>();
  for (const [key, data] of ckpt.optimizer.tensors) {
    stateTensors.set(OPT_PREFIX + key, { dtype: "float32", shape: [data.length], data });
  }
  stateTensors.set(DATA_ORDER, { dtype: "int32", shape: [order.length], data: order });
  const extraNames = [...(ckpt.tensors?.keys() ?? [])];
  for (const [key, t] of ckpt.tensors ?? []) stateTensors.set(EXTRA_PREFIX + key, t);
  const params = new Map(entries(ckpt.params));

  fs.mkdirSync(dir, { recursive: true });
  const gen = `${ckpt.step}-${randomHex(4)}`;
  const paramsName = `params-${gen}.safetensors`;
  const stateName = `state-${gen}.safetensors`;
  const meta = { format: FORMAT, step: String(ckpt.step) };
  writeFilesAtomic([
    { path: join(dir, paramsName), write: safetensorsFileWriter(params, meta) },
    { path: join(dir, stateName), write: safetensorsFileWriter(stateTensors, meta) },
  ]);

  const record: CheckpointRecord = {
    format: FORMAT,
    version: VERSION,
    step: ckpt.step,
    epoch: ckpt.epoch,
    files: {
      params: { name: paramsName, bytes: fs.statSync(join(dir, paramsName)).size },
      state: { name: stateName, bytes: fs.statSync(join(dir, stateName)).size },
    },
    optimizer: {
      kind: ckpt.optimizer.kind,
      step: ckpt.optimizer.step,
      hyperparams: { ...ckpt.optimizer.hyperparams },
      params: ckpt.optimizer.params.map((p) => ({ ...p })),
      tensors: [...ckpt.optimizer.tensors.keys()],
    },
    rng: { ...ckpt.rng },
    dataOrderLength: order.length,
    extras: { ...extras },
    ...(extraNames.length > 0 ? { tensors: extraNames } : {}),
  };
  writeFileAtomic(join(dir, CHECKPOINT_FILE), JSON.stringify(record, null, 2) + "\n");

  // The new checkpoint is committed; drop the previous one and leftovers of interrupted saves.
  for (const name of fs.readdirSync(dir)) {
    if (name === paramsName || name === stateName) continue;
    if (OWN_FILE.test(name) || OWN_TEMP.test(name)) fs.rmSync(join(dir, name), { force: true });
  }
}

/** True when `dir` holds a committed checkpoint (a `checkpoint.json`). */
export function hasCheckpoint(dir: string): boolean {
  return fs.existsSync(join(dir, CHECKPOINT_FILE));
}

function fail(dir: string, issue: string, cause?: unknown): never {
  throw new CheckpointError(dir, issue, cause === undefined ? undefined : { cause });
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function readRecord(dir: string): CheckpointRecord {
  const file = join(dir, CHECKPOINT_FILE);
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (e) {
    fail(dir, `cannot read ${CHECKPOINT_FILE} (${(e as NodeJS.ErrnoException).code ?? "error"}); no checkpoint was committed here`, e);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    fail(dir, `${CHECKPOINT_FILE} is not valid JSON`, e);
  }
  if (!isRecord(raw) || raw.format !== FORMAT) fail(dir, `${CHECKPOINT_FILE} is not a peft-ts training checkpoint`);
  if (raw.version !== VERSION) fail(dir, `unsupported checkpoint version ${String(raw.version)} (this peft-ts reads version ${VERSION})`);
  const files = raw.files;
  const opt = raw.optimizer;
  const okFile = (f: unknown): boolean => isRecord(f) && typeof f.name === "string" && OWN_FILE.test(f.name) && Number.isSafeInteger(f.bytes);
  if (!isRecord(files) || !okFile(files.params) || !okFile(files.state)) fail(dir, "'files' is malformed");
  if (!Number.isSafeInteger(raw.step) || typeof raw.epoch !== "number") fail(dir, "'step' or 'epoch' is malformed");
  if (
    !isRecord(opt) ||
    (opt.kind !== "adamw" && opt.kind !== "sgd") ||
    !Number.isSafeInteger(opt.step) ||
    !isRecord(opt.hyperparams) ||
    !Array.isArray(opt.params) ||
    !Array.isArray(opt.tensors) ||
    !opt.tensors.every((t) => typeof t === "string")
  ) {
    fail(dir, "'optimizer' is malformed");
  }
  if (!isRecord(raw.rng) || !Number.isSafeInteger(raw.dataOrderLength) || !isRecord(raw.extras)) {
    fail(dir, "'rng', 'dataOrderLength' or 'extras' is malformed");
  }
  if (raw.tensors !== undefined && (!Array.isArray(raw.tensors) || !raw.tensors.every((t) => typeof t === "string"))) fail(dir, "'tensors' is malformed");
  return raw as unknown as CheckpointRecord;
}

function readTensors(dir: string, f: { name: string; bytes: number }): Map<string, Tensor> {
  const path = join(dir, f.name);
  let size: number;
  try {
    size = fs.statSync(path).size;
  } catch (e) {
    fail(dir, `file ${f.name} named by ${CHECKPOINT_FILE} is missing`, e);
  }
  if (size !== f.bytes) fail(dir, `file ${f.name} has ${size} bytes, ${CHECKPOINT_FILE} recorded ${f.bytes}`);
  try {
    return loadSafetensors(path).tensors;
  } catch (e) {
    fail(dir, `cannot read ${f.name}: ${(e as Error).message}`, e);
  }
}

/** Loads the committed checkpoint of `dir`; a missing or inconsistent one raises `CheckpointError`. */
export function loadCheckpoint(dir: string): LoadedCheckpoint {
  const rec = readRecord(dir);
  const params = readTensors(dir, rec.files.params);
  const state = readTensors(dir, rec.files.state);
  const tensors = new Map<string, Float32Array>();
  for (const key of rec.optimizer.tensors) {
    const t = state.get(OPT_PREFIX + key);
    if (!t || t.dtype !== "float32") fail(dir, `optimizer tensor '${key}' is missing from ${rec.files.state.name} or not float32`);
    tensors.set(key, t.data as Float32Array);
  }
  const order = state.get(DATA_ORDER);
  if (!order || order.dtype !== "int32" || order.data.length !== rec.dataOrderLength) {
    fail(dir, `'${DATA_ORDER}' in ${rec.files.state.name} is missing or does not hold ${rec.dataOrderLength} int32 indices`);
  }
  const extra = new Map<string, Tensor>();
  for (const key of rec.tensors ?? []) {
    const t = state.get(EXTRA_PREFIX + key);
    if (!t) fail(dir, `tensor '${key}' named by ${CHECKPOINT_FILE} is missing from ${rec.files.state.name}`);
    extra.set(key, t);
  }
  return {
    step: rec.step,
    epoch: rec.epoch,
    params,
    tensors: extra,
    optimizer: {
      kind: rec.optimizer.kind,
      step: rec.optimizer.step,
      hyperparams: rec.optimizer.hyperparams,
      params: rec.optimizer.params,
      tensors,
    },
    rng: rec.rng,
    dataOrder: order.data as Int32Array,
    extras: rec.extras,
  };
}
