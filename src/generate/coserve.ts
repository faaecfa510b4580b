/**
 * Co-serving (FlexLLM's idea, adapted to this engine): training runs of fine-tuning jobs share
 * the process and the base model with live generation traffic. onnxruntime runs a session on all
 * cores, so a training run and a decode run never overlap here: the engine's loop hands the
 * machine to one training slice *between* its iterations, and only for as long as the slack under
 * the inter-token-latency target (`itlSloMs`) allows:
 *
 *     slack = itlSloMs − margin − (duration of the iteration just run)
 *     rows  = how many rows of the trainer's micro-batch fit in the slack, by the job's cost model
 *
 * Inference has priority: an iteration that leaves no room for one row runs no training. With no
 * live traffic, training runs at full speed, in slices of up to `idleSliceMs` so a request that
 * arrives waits at most about that long for the machine. The trainer turns the granted row counts
 * into micro-batches with gradient accumulation (`TrainerConfig.gate`), so slicing never changes
 * the trained adapter.
 *
 * Each gate (one per training job) keeps its own cost model (`SliceCost`: milliseconds per
 * row·token, from its recent slices); slices grow at most 2× beyond the largest one measured, so a
 * wrong extrapolation overshoots the target by little. A job whose measured cost says that not
 * even one row fits gets a one-row slice after `reprobeAfter` such iterations (default 200; only
 * when the iteration left some slack), so one slow measurement cannot starve it for good; that
 * costs at most 1 in 200 gaps.
 */
import type { TrainingGate } from "../train/gate.js";

export interface CoServeOptions {
  /** Inter-token latency target of live requests, in milliseconds. */
  readonly itlSloMs: number;
  /** Time kept free under the target (default 10 % of it). */
  readonly marginMs?: number;
  /** Longest training slice while no request is running or waiting (default itlSloMs). */
  readonly idleSliceMs?: number;
  /** Iterations without room for one row after which a waiting job gets a one-row slice anyway (default 200). */
  readonly reprobeAfter?: number;
}

export interface CoServeStats {
  /** Training slices granted (all gates). */
  readonly slices: number;
  readonly rows: number;
  /** Padded tokens of the granted rows. */
  readonly tokens: number;
  /** Milliseconds training held the machine. */
  readonly trainingMs: number;
  /** Slices granted between decode iterations (the rest ran while the engine was idle). */
  readonly busySlices: number;
  /** Engine iterations after which a gate waited but the slack had no room for one row. */
  readonly starvedIterations: number;
  /** One-row slices granted after `reprobeAfter` starved iterations. */
  readonly reprobes: number;
}

/** The engine side the scheduler needs. */
export interface CoServeHost {
  /** Requests running or waiting (the engine's loop runs or will run). */
  busy(): boolean;
  /** Milliseconds clock slices are timed with (default `performance.now`). */
  now?(): number;
}

interface Waiter {
  readonly gate: EngineGate;
  readonly want: number;
  readonly tokensPerRow: number;
  readonly resolve: (rows: number) => void;
}

function checkMs(name: string, v: number): number {
  if (!Number.isFinite(v) || v <= 0) throw new RangeError(`co-serving option ${name} must be a positive number of milliseconds, got ${v}`);
  return v;
}

/**
 * One gate's cost model of its training slices: milliseconds per row·token, the median over its
 * last 8 slices (robust to a slice the machine slowed down). Slices grow at most 2× beyond the
 * largest one measured. The first slice of a gate warms its session up and is not measured.
 */
class SliceCost {
  private readonly samples: number[] = [];
  private largest = 0;
  private warm = false;

  observe(x: number, ms: number): void {
    if (!this.warm) {
      this.warm = true;
      return;
    }
    this.samples.push(ms / x);
    if (this.samples.length > 8) this.samples.shift();
    this.largest = Math.max(this.largest, x);
  }

  /** Row·tokens that fit in `ms` (0 when not even `minX` fits); `minX` the size of one row. */
  fit(ms: number, minX: number): number {
    if (this.samples.length === 0) return minX; // measure one row first
    const sorted = [...this.samples].sort((a, b) => a - b);
    const perX = sorted[Math.floor(sorted.length / 2)]!;
    const x = perX > 0 ? ms / perX : Infinity;
    if (x < minX) return 0;
    return Math.min(x, 2 * Math.max(this.largest, minX));
  }
}

/** A job's gate: `acquire` queues it with the scheduler, `release` ends its slice. */
export class EngineGate implements TrainingGate {
  readonly cost = new SliceCost();
  private held: { rows: number; tokensPerRow: number; t0: number } | null = null;

  constructor(private readonly scheduler: CoServeScheduler) {}

  acquire(wantRows: number, tokensPerRow: number): Promise<number> {
    if (!Number.isInteger(wantRows) || wantRows < 1 || !Number.isInteger(tokensPerRow) || tokensPerRow < 1) {
      return Promise.reject(new RangeError(`TrainingGate.acquire(wantRows, tokensPerRow) takes positive integers, got (${wantRows}, ${tokensPerRow})`));
    }
    if (this.held) return Promise.reject(new RangeError("TrainingGate.acquire: the previous slice was not released"));
    return new Promise<number>((resolve) => this.scheduler.enqueue({ gate: this, want: wantRows, tokensPerRow, resolve }));
  }

  /** Called by the scheduler when it grants `rows`. */
  started(rows: number, tokensPerRow: number): void {
    this.held = { rows, tokensPerRow, t0: this.scheduler.now() };
  }

  release(): void {
    const h = this.held;
    if (!h) return;
    this.held = null;
    const ms = this.scheduler.now() - h.t0;
    this.cost.observe(h.rows * h.tokensPerRow, ms);
    this.scheduler.finished(h.rows, h.tokensPerRow, ms);
  }
}

/**
 * Grants training slices around an engine's iterations. The engine calls `beforeIteration`
 * (waits for a running slice), `afterIteration(ms)` (may run one slice in the slack) and `idle()`
 * when its loop stops.
 */
export class CoServeScheduler {
  readonly itlSloMs: number;
  readonly marginMs: number;
  readonly idleSliceMs: number;
  readonly reprobeAfter: number;
  /** Consecutive iterations the head waiter found no room. */
  private starved = 0;
  private readonly waiters: Waiter[] = [];
  /** Resolves when the slice that holds the machine is released. */
  private running: Promise<void> | null = null;
  private endRunning: (() => void) | null = null;
  private counters = { slices: 0, rows: 0, tokens: 0, trainingMs: 0, busySlices: 0, starvedIterations: 0, reprobes: 0 };

  constructor(
    private readonly host: CoServeHost,
    opts: CoServeOptions,
  ) {
    this.itlSloMs = checkMs("itlSloMs", opts.itlSloMs);
    this.marginMs = opts.marginMs === undefined ? 0.1 * this.itlSloMs : opts.marginMs;
    if (!Number.isFinite(this.marginMs) || this.marginMs < 0 || this.marginMs >= this.itlSloMs) throw new RangeError(`co-serving option marginMs must be in [0, itlSloMs), got ${opts.marginMs}`);
    this.idleSliceMs = checkMs("idleSliceMs", opts.idleSliceMs ?? this.itlSloMs);
    this.reprobeAfter = opts.reprobeAfter ?? 200;
    if (!Number.isInteger(this.reprobeAfter) || this.reprobeAfter < 1) throw new RangeError(`co-serving option reprobeAfter must be a positive integer, got ${opts.reprobeAfter}`);
  }

  now(): number {
    return this.host.now ? this.host.now() : performance.now();
  }

  gate(): EngineGate {
    return new EngineGate(this);
  }

  stats(): CoServeStats {
    return { ...this.counters };
  }

  /** Whether a training slice holds the machine now. */
  get training(): boolean {
    return this.running !== null;
  }

  enqueue(w: Waiter): void {
    this.waiters.push(w);
    this.idle();
  }

  /** With no traffic: grants the next waiting gate a slice of up to `idleSliceMs`. */
  idle(): void {
    if (this.running || this.host.busy()) return;
    const w = this.waiters.shift();
    if (!w) return;
    const x = w.gate.cost.fit(this.idleSliceMs, w.tokensPerRow);
    this.grant(w, Math.max(1, Math.floor(x / w.tokensPerRow)), false);
  }

  /** The engine is about to run an iteration: waits until no slice holds the machine. */
  async beforeIteration(): Promise<void> {
    while (this.running) await this.running;
  }

  /**
   * The engine ran an iteration that took `iterationMs`: when a gate waits and the slack under
   * the target has room for at least one of its rows, runs one slice (resolves when released).
   */
  async afterIteration(iterationMs: number): Promise<void> {
    const w = this.waiters[0];
    if (!w || this.running) return;
    const slack = this.itlSloMs - this.marginMs - iterationMs;
    const x = slack > 0 ? w.gate.cost.fit(slack, w.tokensPerRow) : 0;
    let rows = Math.floor(x / w.tokensPerRow);
    if (rows < 1) {
      this.counters.starvedIterations++;
      if (++this.starved < this.reprobeAfter || slack <= 0) return;
      this.counters.reprobes++;
      rows = 1; // measure again: the estimate may come from a slice the machine slowed down
    }
    this.starved = 0;
    this.waiters.shift();
    this.grant(w, rows, true);
    await this.beforeIteration();
  }

  private grant(w: Waiter, rows: number, busy: boolean): void {
    const n = Math.min(w.want, rows);
    this.running = new Promise<void>((r) => {
      this.endRunning = r;
    });
    this.counters.slices++;
    if (busy) this.counters.busySlices++;
    w.gate.started(n, w.tokensPerRow);
    w.resolve(n);
  }

  finished(rows: number, tokensPerRow: number, ms: number): void {
    this.counters.rows += rows;
    this.counters.tokens += rows * tokensPerRow;
    this.counters.trainingMs += ms;
    const end = this.endRunning;
    this.running = null;
    this.endRunning = null;
    end?.();
    // the next slice waits for the engine's next iteration, unless there is no traffic
    queueMicrotask(() => this.idle());
  }
}
