/**
 * Training progress on stderr (the CLI's `RunReporter`): a cli-progress bar (step, loss, sentences/s, ETA) when stderr is a
 * terminal, plain log lines otherwise (CI logs, files, in-process test runs). Evaluations are
 * printed as lines in both modes. Everything goes through `ctx.io.stderr`, never `console`.
 */
import { MultiBar, type SingleBar } from "cli-progress";
import type { RunEval, RunReporter, RunStep } from "../../runs/reporter.js";
import type { CliContext } from "../context.js";
import { barStream } from "../progress-bar.js";

/** What the bar shows for one optimizer step. */
export type ProgressStep = RunStep;

/** What the reporter prints for one evaluation: the history's record. */
export type ProgressEval = RunEval;

/** The CLI's `RunReporter` (notes are kept above the bar on a terminal). */
export type ProgressReporter = RunReporter;

export interface ProgressOptions {
  /** Draw a bar (default: whether the process's stderr is a terminal). */
  readonly tty?: boolean;
  /** Plain mode: print a step line every this many steps (default: about 20 lines per run). */
  readonly every?: number;
  /** Print nothing but notes and evaluations (no step lines, no bar). */
  readonly quiet?: boolean;
}

/** One evaluation as a line: `eval step 150 (epoch 2.00): loss 0.2350 accuracy 0.9133 f1 0.9130`. */
export function formatEval(r: ProgressEval): string {
  const parts = [`eval step ${r.step} (epoch ${r.epoch.toFixed(2)}): loss ${r.loss.toFixed(4)}`];
  if (r.accuracy !== undefined) parts.push(`accuracy ${r.accuracy.toFixed(4)}`);
  if (r.f1 !== undefined) parts.push(`f1 ${r.f1.toFixed(4)}`);
  if (r.perplexity !== undefined) parts.push(`perplexity ${r.perplexity.toFixed(3)}`);
  return parts.join(" ");
}

/** Exponential moving average (the bar's loss and throughput would flicker otherwise). */
class Ema {
  private v: number | null = null;
  constructor(private readonly alpha: number) {}
  add(x: number): number {
    this.v = this.v === null || !Number.isFinite(this.v) ? x : this.alpha * x + (1 - this.alpha) * this.v;
    return this.v;
  }
}

class BarReporter implements ProgressReporter {
  private multi: MultiBar | null = null;
  private bar: SingleBar | null = null;
  private readonly loss = new Ema(0.1);
  private readonly rate = new Ema(0.1);
  constructor(private readonly ctx: CliContext) {}

  start(totalSteps: number, startStep: number): void {
    this.multi = new MultiBar(
      {
        stream: barStream(this.ctx),
        format: "train [{bar}] {value}/{total} steps | epoch {epoch} | loss {loss} | {rate} sent/s | ETA {eta_formatted}",
        barsize: 24,
        hideCursor: null,
        clearOnComplete: false,
        etaBuffer: 50,
        fps: 5,
      },
      undefined,
    );
    this.bar = this.multi.create(totalSteps, startStep, { loss: "-", rate: "-", epoch: "0.00" });
  }

  step(info: ProgressStep): void {
    const loss = this.loss.add(info.loss);
    const rate = this.rate.add(info.examplesPerSecond);
    this.bar?.update(info.step, { loss: loss.toFixed(4), rate: rate.toFixed(1), epoch: info.epoch.toFixed(2) });
  }

  evaluation(result: ProgressEval): void {
    this.note(formatEval(result));
  }

  note(line: string): void {
    if (this.multi) {
      this.multi.log(`${line}\n`);
      this.multi.update(); // draw now: the log sits above the bar and would otherwise wait for the next step
    } else this.ctx.err(line);
  }

  stop(): void {
    this.multi?.stop();
    this.multi = null;
    this.bar = null;
  }
}

class LineReporter implements ProgressReporter {
  private every = 1;
  private t0 = 0;
  private first = 0;
  private readonly rate = new Ema(0.2);
  constructor(
    private readonly ctx: CliContext,
    private readonly opts: ProgressOptions,
  ) {}

  start(totalSteps: number, startStep: number): void {
    this.every = this.opts.every ?? Math.max(1, Math.ceil(totalSteps / 20));
    this.t0 = performance.now();
    this.first = startStep;
    if (!this.opts.quiet) this.ctx.err(`train: ${totalSteps} steps${startStep > 0 ? `, resuming at step ${startStep}` : ""}`);
  }

  step(info: ProgressStep): void {
    const rate = this.rate.add(info.examplesPerSecond);
    if (this.opts.quiet || (info.step % this.every !== 0 && info.step !== info.totalSteps)) return;
    const elapsed = (performance.now() - this.t0) / 1000;
    const done = info.step - this.first;
    const eta = done > 0 ? ((info.totalSteps - info.step) * elapsed) / done : 0;
    this.ctx.err(
      `step ${info.step}/${info.totalSteps} epoch ${info.epoch.toFixed(2)} loss ${info.loss.toFixed(4)} ${rate.toFixed(1)} sent/s ETA ${formatSeconds(eta)}`,
    );
  }

  evaluation(result: ProgressEval): void {
    this.ctx.err(formatEval(result));
  }

  note(line: string): void {
    this.ctx.err(line);
  }

  stop(): void {}
}

/** `75s` → `1m15s`; under a minute as seconds. */
export function formatSeconds(s: number): string {
  if (!Number.isFinite(s) || s < 0) return "?";
  if (s < 60) return `${Math.round(s)}s`;
  const m = Math.floor(s / 60);
  return m < 60 ? `${m}m${String(Math.round(s - 60 * m)).padStart(2, "0")}s` : `${Math.floor(m / 60)}h${String(m % 60).padStart(2, "0")}m`;
}

/** A bar on a terminal (unless `quiet`), plain lines otherwise. */
export function createProgress(ctx: CliContext, opts: ProgressOptions = {}): ProgressReporter {
  const tty = opts.tty ?? process.stderr.isTTY === true;
  return tty && !opts.quiet ? new BarReporter(ctx) : new LineReporter(ctx, opts);
}
