/**
 * The `search-trial` job kind (a `peft search` trial on a worker) and the {@link TrialExecutor}
 * that sends a search's trials through the queue. A trial's run folder lives in the job's state
 * folder, so a trial whose worker died resumes from its checkpoint on the next worker; its job id
 * is `search-<search id>-<trial>`, so a restarted search waits for the jobs it had queued instead
 * of queuing them again.
 */
import { join } from "node:path";
import { ConfigError } from "../errors.js";
import type { TrialExecutor } from "../search/run.js";
import { type SearchSpace, parseSearchSpace, searchSpaceToRaw } from "../search/space.js";
import { type SearchTrialResult, type SearchTrialSpec, runSearchTrial } from "../search/trial.js";
import type { JobQueue, JobUpdate } from "./client.js";
import type { JobKind } from "./kinds.js";

function parse(data: unknown): SearchTrialSpec {
  const d = data as Partial<SearchTrialSpec> | null;
  const bad = (path: string, issue: string) => {
    throw new ConfigError("search-trial job", path, issue);
  };
  if (!d || typeof d !== "object") return bad("", "must be an object");
  if (typeof d.search !== "string" || !/^[A-Za-z0-9_-]+$/.test(d.search)) bad("search", "must be a search id");
  if (!Number.isInteger(d.index) || d.index! < 0) bad("index", "must be a trial number");
  if (typeof d.model !== "string" || typeof d.data !== "string") bad("model", "model and data must be strings");
  if (!d.config || typeof d.config !== "object") bad("config", "must be a trial config");
  if (d.threads !== null && d.threads !== undefined && !(Number.isInteger(d.threads) && d.threads > 0)) bad("threads", "must be a positive integer or null");
  let space: SearchSpace;
  try {
    space = parseSearchSpace(searchSpaceToRaw(d.space!), "search-trial job space");
  } catch (e) {
    if (e instanceof ConfigError) throw e;
    return bad("space", "must be a parsed search space");
  }
  return { ...(d as SearchTrialSpec), space, threads: d.threads ?? null };
}

export const searchTrialJobKind: JobKind<SearchTrialSpec, SearchTrialResult> = {
  name: "search-trial",
  description: "one low-fidelity training trial of a peft search",
  parse,
  async run(spec, ctx) {
    return runSearchTrial(spec, join(ctx.stateDir, "run"), {
      start: (total, startStep) => {
        if (startStep > 0) ctx.event("info", `resumed from the checkpoint at step ${startStep} of ${total}`, { step: startStep });
        ctx.progress(startStep, total);
      },
      step: (s) => ctx.progress(s.step, s.totalSteps, { loss: s.loss }),
      evaluation: () => undefined,
      note: (line) => ctx.event("info", line),
      stop: () => undefined,
    });
  },
};

/** The queue job id of a search's trial. */
export const searchTrialJobId = (search: string, index: number) => `search-${search}-${String(index).padStart(3, "0")}`;

/** Sends each trial to the queue as a `search-trial` job and waits for its result (at most `timeoutMs` per trial). */
export class QueueTrialExecutor implements TrialExecutor {
  constructor(
    private readonly queue: JobQueue,
    private readonly opts: { timeoutMs?: number; onUpdate?: (index: number, u: JobUpdate) => void } = {},
  ) {}

  async run(spec: SearchTrialSpec): Promise<SearchTrialResult> {
    const id = searchTrialJobId(spec.search, spec.index);
    const onUpdate = this.opts.onUpdate;
    const stop = onUpdate ? await this.queue.watch(id, (u) => onUpdate(spec.index, u)) : null;
    try {
      await this.queue.add("search-trial", spec, { id });
      return await this.queue.wait<SearchTrialResult>(id, this.opts.timeoutMs ?? 24 * 3600_000);
    } finally {
      stop?.();
    }
  }

  async close(): Promise<void> {}
}
