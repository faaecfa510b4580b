/**
 * Early stopping as a small object: keeps the best evaluation so far and a copy of the parameters
 * it was made with, counts evaluations since, and says when patience has run out. The `Trainer`,
 * the linear probe and aTLAS all keep their best epoch through it; the trainer checkpoints its
 * state (`state`, `restore`) so that a resumed run stops and restores as the straight run.
 */

/** The part of early stopping a checkpoint keeps. */
export interface BestState<R> {
  readonly best: R | null;
  readonly sinceBest: number;
}

export class BestKeeper<R> {
  private bestResult: R | null = null;
  private since = 0;
  private saved: Map<string, Float32Array> | null = null;

  /**
   * @param better whether evaluation `a` beats the best so far `b`
   * @param patience stop after this many evaluations without improvement (undefined: never)
   */
  constructor(
    private readonly better: (a: R, b: R) => boolean,
    readonly patience?: number,
  ) {}

  get best(): R | null {
    return this.bestResult;
  }

  get sinceBest(): number {
    return this.since;
  }

  /** The parameters of the best evaluation (null before the first). */
  get bestParams(): ReadonlyMap<string, Float32Array> | null {
    return this.saved;
  }

  /**
   * Records an evaluation of `params` (copied when it is the best so far). Returns true when
   * patience has run out.
   */
  observe(result: R, params: ReadonlyMap<string, Float32Array>): boolean {
    if (this.bestResult === null || this.better(result, this.bestResult)) {
      this.bestResult = result;
      this.saved = new Map([...params].map(([k, v]) => [k, Float32Array.from(v)]));
      this.since = 0;
    } else this.since++;
    return this.patience !== undefined && this.since >= this.patience;
  }

  /** Writes the best parameters into `params` (nothing before the first evaluation). */
  restoreInto(params: ReadonlyMap<string, Float32Array>): void {
    if (this.saved) for (const [k, v] of this.saved) params.get(k)?.set(v);
  }

  state(): BestState<R> {
    return { best: this.bestResult, sinceBest: this.since };
  }

  /** Restores a checkpointed state and the best parameters saved with it. */
  restore(state: BestState<R>, bestParams: ReadonlyMap<string, Float32Array> | null): void {
    this.bestResult = state.best;
    this.since = state.sinceBest;
    this.saved = bestParams ? new Map([...bestParams].map(([k, v]) => [k, Float32Array.from(v)])) : null;
  }
}
