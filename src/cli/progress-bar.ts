/**
 * A progress bar for long library operations (`peft combine --type svd` on large adapters, `peft
 * merge` of full models): the library reports progress through a callback (`onModule`,
 * `onTensor`) and the CLI only renders it — a cli-progress bar on stderr when stderr is a
 * terminal, nothing otherwise (logs, pipes, in-process runs stay as they were).
 */
import { SingleBar } from "cli-progress";
import type { CliContext } from "./context.js";

/** A writable that cli-progress can draw on, forwarding to the CLI's stderr. */
export function barStream(ctx: CliContext): NodeJS.WritableStream {
  const columns = process.stderr.columns ?? 100;
  const stream = {
    isTTY: true,
    columns,
    write(chunk: string | Uint8Array): boolean {
      ctx.io.stderr(typeof chunk === "string" ? chunk : Buffer.from(chunk).toString("utf8"));
      return true;
    },
  };
  return stream as unknown as NodeJS.WritableStream;
}

/** What a long operation reports: `done` of `total` items, the last one `item`. */
export interface ProgressBar {
  update(done: number, total: number, item?: string): void;
  /** Draws the final state and ends the line; safe to call twice. */
  stop(): void;
}

export interface ProgressBarOptions {
  /** First word of the line (`combine`). */
  readonly label: string;
  /** What is counted (`modules`). */
  readonly unit: string;
  /** False: no bar (`--no-progress`). Default true. */
  readonly enabled?: boolean;
  /** Draw on a terminal; default: whether the CLI's stderr is one (`CliIo.stderrIsTTY`). */
  readonly tty?: boolean;
}

/** Items longer than this are shortened from the left in the bar (module paths are long). */
const ITEM_WIDTH = 40;

function shorten(item: string): string {
  return item.length <= ITEM_WIDTH ? item : `…${item.slice(item.length - ITEM_WIDTH + 1)}`;
}

/** A bar when enabled and stderr is a terminal, else null (the caller passes no callback then). */
export function progressBar(ctx: CliContext, opts: ProgressBarOptions): ProgressBar | null {
  if (opts.enabled === false || !(opts.tty ?? ctx.io.stderrIsTTY === true)) return null;
  const bar = new SingleBar({
    stream: barStream(ctx),
    format: `${opts.label} [{bar}] {value}/{total} ${opts.unit} | ETA {eta_formatted} | {item}`,
    barsize: 24,
    hideCursor: null,
    clearOnComplete: false,
    etaBuffer: 20,
    fps: 5,
  });
  let state: "idle" | "running" | "stopped" = "idle";
  return {
    update(done, total, item = "") {
      if (state === "stopped") return;
      if (state === "idle") {
        bar.start(total, 0, { item: "" });
        state = "running";
      }
      bar.setTotal(total);
      bar.update(done, { item: shorten(item) });
    },
    stop() {
      if (state === "running") bar.stop();
      state = "stopped";
    },
  };
}
