/**
 * Job kinds: what a `peft worker` can run. Each kind parses its job data (on the client when it is
 * queued, and again on the worker) and runs it with a {@link JobContext}: a per-job state folder
 * (checkpoints live there, so a retried job resumes), progress and events that travel through the
 * queue, and the shared adapter store. `QUEUE_JOB_KINDS` lists the built-in kinds; a program adds
 * its own with {@link registerJobKind}.
 */
import { UnknownJobKindError } from "../errors.js";
import { fineTuneJobKind } from "./finetune-kind.js";
import { searchTrialJobKind } from "./search-kind.js";
import { trainJobKind } from "./train-kind.js";

/** One line of a job's event log (OpenAI's fine-tuning event shape). */
export interface JobEvent {
  readonly level: "info" | "warn" | "error";
  readonly message: string;
  readonly data?: Readonly<Record<string, unknown>>;
  /** Unix seconds. */
  readonly created_at: number;
}

/** A job's progress as the worker reports it (the last one is kept on the job). */
export interface JobProgress {
  readonly step: number;
  readonly totalSteps: number;
  /** Worker that runs the job (`peft worker`'s name, host:pid). */
  readonly worker: string;
  readonly [key: string]: unknown;
}

/** What a job kind's `run` gets from the worker. */
export interface JobContext {
  readonly id: string;
  readonly kind: string;
  /** This job's own folder under the worker's `--state` (a shared folder lets another worker resume it). */
  readonly stateDir: string;
  /** The shared adapter store (`--adapter-store`), where finished adapters are published; null when the worker has none. */
  readonly adapterStore: string | null;
  /** 1 on the first run; more when the job is run again (its worker died, or it stalled). */
  readonly attempt: number;
  /** The worker's name (host:pid). */
  readonly worker: string;
  /** Aborted when the worker is stopped at once (a second SIGTERM); a graceful stop lets the job finish. */
  readonly signal: AbortSignal;
  /** Records an event: kept on the job (its log) and streamed to listeners. */
  event(level: JobEvent["level"], message: string, data?: Readonly<Record<string, unknown>>): void;
  /** Reports progress (throttled; the last value always reaches the queue). */
  progress(step: number, totalSteps: number, extra?: Readonly<Record<string, unknown>>): void;
}

export interface JobKind<I = unknown, O = unknown> {
  readonly name: string;
  /** One line for `peft worker --help` and docs. */
  readonly description: string;
  /** Validates the job data (throws a PeftError naming the bad field). */
  parse(data: unknown): I;
  /** Runs the job; resumes from `ctx.stateDir` when an earlier attempt left a checkpoint there. Returns a JSON value. */
  run(input: I, ctx: JobContext): Promise<O>;
}

/** The kinds every worker knows. */
export const QUEUE_JOB_KINDS: readonly JobKind[] = [trainJobKind as unknown as JobKind, fineTuneJobKind as unknown as JobKind, searchTrialJobKind as unknown as JobKind];

const KINDS = new Map<string, JobKind>(QUEUE_JOB_KINDS.map((k) => [k.name, k]));

/** Adds (or replaces) a job kind in this process's registry. */
export function registerJobKind<I, O>(kind: JobKind<I, O>): void {
  KINDS.set(kind.name, kind as unknown as JobKind);
}

/** The registered kind of that name; throws `UnknownJobKindError` otherwise. */
export function jobKind(name: string): JobKind {
  const k = KINDS.get(name);
  if (!k) throw new UnknownJobKindError(name, jobKindNames());
  return k;
}

/** Names of the registered kinds, sorted. */
export function jobKindNames(): string[] {
  return [...KINDS.keys()].sort();
}
