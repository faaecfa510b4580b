/**
 * The bounded request queue: at most `maxConcurrent` requests run, at most `maxQueue` wait in
 * arrival order; one more is refused at once (`QueueFullError` → 429 with `Retry-After`), so
 * memory stays bounded whatever the load. A waiting request whose client leaves is dropped.
 */
import { QueueFullError, RequestAbortedError, ServerDrainingError } from "../errors.js";

export interface AdmissionOptions {
  readonly maxConcurrent: number;
  readonly maxQueue: number;
  /** `Retry-After` seconds sent with a 429. */
  readonly retryAfterSeconds?: number;
}

interface Waiter {
  readonly resolve: (release: () => void) => void;
  readonly reject: (e: unknown) => void;
}

export class Admission {
  private running = 0;
  private readonly waiting: Waiter[] = [];
  private draining = false;
  private idle: (() => void)[] = [];

  constructor(private readonly opts: AdmissionOptions) {}

  get runningCount(): number {
    return this.running;
  }
  get waitingCount(): number {
    return this.waiting.length;
  }

  /** Resolves with a release function once the request may run; throws when full or draining. */
  async enter(signal?: AbortSignal): Promise<() => void> {
    if (this.draining) throw new ServerDrainingError();
    if (this.running < this.opts.maxConcurrent && this.waiting.length === 0) return this.grant();
    if (this.waiting.length >= this.opts.maxQueue) throw new QueueFullError(this.opts.maxConcurrent + this.opts.maxQueue, this.opts.retryAfterSeconds ?? 1);
    return await new Promise<() => void>((resolve, reject) => {
      const w: Waiter = { resolve, reject };
      this.waiting.push(w);
      signal?.addEventListener(
        "abort",
        () => {
          const i = this.waiting.indexOf(w);
          if (i >= 0) {
            this.waiting.splice(i, 1);
            reject(new RequestAbortedError("a queued request"));
          }
        },
        { once: true },
      );
    });
  }

  private grant(): () => void {
    this.running++;
    let done = false;
    return () => {
      if (done) return;
      done = true;
      this.running--;
      const next = this.waiting.shift();
      if (next) next.resolve(this.grant());
      else if (this.running === 0) for (const f of this.idle.splice(0)) f();
    };
  }

  /** Refuses new requests; resolves when the running and the already queued ones have finished. */
  async drain(): Promise<void> {
    this.draining = true;
    if (this.running === 0) return;
    await new Promise<void>((r) => this.idle.push(r));
  }
}
