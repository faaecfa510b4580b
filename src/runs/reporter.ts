/**
 * How a run tells its caller what it is doing. The runs layer never prints: `peft train` shows a
 * progress bar or log lines on stderr (`src/cli/train/progress.ts`), a server's fine-tuning job
 * can send the same calls as SSE events, a browser worker as messages.
 */
import type { HistoryEval } from "./history.js";

/** One optimizer step as a run reports it. */
export interface RunStep {
  readonly step: number;
  readonly totalSteps: number;
  readonly epoch: number;
  readonly loss: number;
  readonly examplesPerSecond: number;
}

/** One evaluation on the validation split (the history's record). */
export type RunEval = HistoryEval;

export interface RunReporter {
  /** Training starts: called once before the first step (`startStep` > 0 when resuming). */
  start(totalSteps: number, startStep: number): void;
  /** Progress: one optimizer step done. */
  step(info: RunStep): void;
  /** Event: an evaluation on the validation split. */
  evaluation(result: RunEval): void;
  /** A line the user should read (a new head, the data counts, a chosen hyperparameter). */
  note(line: string): void;
  /** Training ended (also when it failed). */
  stop(): void;
}

/** A reporter that drops everything (library calls that want no output). */
export const silentReporter: RunReporter = {
  start: () => undefined,
  step: () => undefined,
  evaluation: () => undefined,
  note: () => undefined,
  stop: () => undefined,
};
