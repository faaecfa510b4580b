/**
 * `GenerationEngine`: continuous batching (iteration-level scheduling, as in Orca and vLLM) over a
 * `Decoder`. Every iteration
 *   1. drops aborted rows (their results were already resolved when the signal fired),
 *   2. admits waiting requests in arrival order (FIFO; the head blocks the rest) while a batch
 *      slot is free, the cache can hold the request's worst case (prompt + max new tokens), and
 *      its adapter has (or can get) a slot in the adapter pool,
 *   3. runs one decoding step for every running row (one token each),
 *   4. runs prompt chunks of newcomers under `prefillTokenBudget` (chunked prefill), and
 *   5. samples, streams and retires rows.
 * Rows are independent: a row's tokens do not depend on which others share its batch. The `n`
 * choices of one request (`streamChoices`) read the prompt once: the first choice's prompt cache
 * is copied to the others' slots when it is complete, and all start from its last logits.
 *
 * `trainingGate({ itlSloMs })` co-serves fine-tuning: training slices run between iterations,
 * sized to the slack under the inter-token-latency target (`coserve.ts`).
 *
 * Cache slots: running rows occupy slots [0, nDecode), rows still reading their prompt
 * [nDecode, n), so each run feeds one contiguous range of the cache without copying.
 */
import type { ContribOps } from "../models/context.js";
import {
  AdapterStateError,
  ArgumentError,
  ContextLengthError,
  EmptyPromptError,
  EngineClosedError,
  PromptTokenError,
  UnknownAdapterError,
  UnsupportedOptionError,
} from "../errors.js";
import type { GenerationConfig } from "../io/generation-config.js";
import type { HfTokenizer } from "../io/tokenizer.js";
import { AdapterPool, type PoolLayout, checkPoolable, fitsLayout, isPrefixAdapter, planLayout, virtualTokenCount } from "../peft/adapter-pool.js";
import type { PeftModel } from "../peft/peft-model.js";
import type { SessionOptions } from "../runtime/session.js";
import type { AdapterInstance } from "../tuners/common/types.js";
import type { TrainingGate } from "../train/gate.js";
import type { Rng } from "../util/rng.js";
import { describeValue } from "../util/args.js";
import { checkGenerationRequest } from "./args.js";
import { Channel } from "./channel.js";
import { type CoServeOptions, CoServeScheduler, type CoServeStats } from "./coserve.js";
import { Decoder, type ModelGeometry, type StepRow, modelGeometry, moduleShapes } from "./decoder.js";
import { OutputText } from "./detokenize.js";
import { KvArena } from "./kv-arena.js";
import { prefillPrefix } from "./prefix.js";
import {
  DEFAULT_SAMPLING,
  type SamplingParams,
  isSampling,
  logSoftmax,
  nextToken,
  resolveSampling,
  samplerRng,
  samplingDefaultsFrom,
  topLogprobs,
} from "./sampling.js";

export interface GenerationRequest {
  promptIds: readonly number[];
  /** Adapter name loaded in the PeftModel; undefined/null = base model. */
  adapter?: string | null;
  params?: Partial<SamplingParams>;
  /** Abort frees the batch slot at once; the result resolves with finishReason "abort". */
  signal?: AbortSignal;
}

/** A request with the prompt as text, encoded with the engine's tokenizer (`EngineOptions.tokenizer`). */
export type TextGenerationRequest = Omit<GenerationRequest, "promptIds"> & { prompt: string; promptIds?: undefined };

/** What `generate` / `stream` take: token ids, or text when the engine has a tokenizer. */
export type AnyGenerationRequest = GenerationRequest | TextGenerationRequest;

export interface TokenEvent {
  tokenId: number;
  /** New text that became valid UTF-8 with this token ("" while a character is incomplete; "" without a tokenizer). */
  text: string;
  logprob?: number;
  topLogprobs?: { tokenId: number; text?: string; logprob: number }[];
}

export type FinishReason = "stop" | "length" | "abort";

export interface GenerationResult {
  promptTokenIds: number[];
  /** Generated ids (an eos / stop token id is included, as transformers returns it; the text of a stop string is cut from `text`). */
  tokenIds: number[];
  /** When a tokenizer is known. */
  text?: string;
  finishReason: FinishReason;
  logprobs?: TokenEvent[];
}

export interface EngineOptions {
  tokenizer?: HfTokenizer;
  /** Concurrent rows in the running batch (default 16). */
  maxSlots?: number;
  /** Total KV cache capacity in tokens (default maxSlots × maxContext). */
  maxCachedTokens?: number;
  /** Default: the model's max positions. */
  maxContext?: number;
  /** Prompt tokens (padded rows × longest chunk) read per iteration besides decoding (default 512). */
  prefillTokenBudget?: number;
  sessionOptions?: SessionOptions;
  /**
   * onnxruntime contrib kernels in the decoding graph (CPU execution provider only; default none:
   * standard ONNX ops). Measured in docs/performance.md ("Contrib ops"): not faster there.
   */
  contribOps?: ContribOps;
  /**
   * The model's generation_config.json (`loadGenerationConfig`): its sampling fields become the
   * request defaults, its `eos_token_id` the stop ids, and its `max_length` (prompt + new tokens)
   * caps requests that do not set `maxNewTokens` when the file has no `max_new_tokens`.
   */
  generationConfig?: GenerationConfig;
  /** Defaults for requests' sampling parameters (over `generationConfig`'s). */
  generationDefaults?: Partial<SamplingParams>;
  /** End-of-sequence ids (default: generation_config.json's, else config.json's `eos_token_id`). */
  eosTokenIds?: readonly number[];
  /** Adapter-pool slots (adapters served at once without rebuilding the graph; default: every loaded adapter). */
  maxAdapters?: number;
  /** Smallest LoRA rank of the pool's modules (larger adapters rebuild the graph; default: the loaded adapters' largest). */
  maxLoraRank?: number;
}

export interface EngineStats {
  running: number;
  waiting: number;
  slots: number;
  cachedTokens: number;
  steps: number;
  /** Prompt tokens run through the model so far (a prompt shared by the choices of one request counts once). */
  prefillTokens: number;
}

export type GenerationStream = AsyncIterable<TokenEvent> & { result: Promise<GenerationResult> };

interface Deferred<T> {
  promise: Promise<T>;
  resolve: (v: T) => void;
  reject: (e: unknown) => void;
}

function deferred<T>(): Deferred<T> {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  promise.catch(() => undefined); // a caller that only iterates must not see an unhandled rejection
  return { promise, resolve, reject };
}

/** One request in the engine. */
class Sequence {
  /** Tokens the prompt feeds to the cache: virtual-token placeholders, then the prompt. */
  readonly feed: number[];
  readonly virtual: number[];
  fed = 0;
  readonly outputIds: number[] = [];
  readonly logprobs: TokenEvent[] = [];
  pending: number | null = null;
  finished = false;
  aborted = false;
  adapterSlot = 0;
  onAbort: (() => void) | null = null;
  /** A later choice of the same request: it waits for the leader's prompt cache instead of reading the prompt. */
  leader: Sequence | null = null;
  followers: Sequence[] = [];

  constructor(
    readonly req: AnyGenerationRequest,
    readonly promptIds: number[],
    readonly adapter: AdapterInstance | null,
    readonly params: SamplingParams,
    readonly stopIds: ReadonlySet<number>,
    readonly maxOutputs: number,
    readonly reserved: number,
    readonly rng: Rng | null,
    readonly text: OutputText | null,
    readonly events: Channel<TokenEvent> | null,
    readonly done: Deferred<GenerationResult>,
    virtualTokens: number,
  ) {
    this.feed = [...new Array<number>(virtualTokens).fill(0), ...promptIds];
    this.virtual = [...new Array<number>(virtualTokens).fill(-1), ...promptIds.map(() => -1)];
  }

  get prefilled(): boolean {
    return this.fed === this.feed.length;
  }
}

export class GenerationEngine {
  readonly geometry: ModelGeometry;
  readonly maxSlots: number;
  readonly maxContext: number;
  readonly maxCachedTokens: number;
  readonly prefillTokenBudget: number;
  private readonly defaults: SamplingParams;
  private readonly eos: readonly number[];
  /** generation_config.json's max_length (prompt + new tokens) for requests without maxNewTokens. */
  private readonly maxLength: number | null;
  private readonly waiting: Sequence[] = [];
  /** Rows by cache slot: decoding rows first, then rows reading their prompt. */
  private rows: Sequence[] = [];
  private nDecode = 0;
  private decoder: Promise<Decoder> | null = null;
  private readonly cache: KvArena;
  private layout: PoolLayout;
  private loop: Promise<void> | null = null;
  private state: "open" | "draining" | "closed" = "open";
  private iterations = 0;
  private prefillTokens = 0;
  private drained: Deferred<void> | null = null;
  private coserve: CoServeScheduler | null = null;

  constructor(
    readonly model: PeftModel,
    readonly opts: EngineOptions = {},
  ) {
    this.geometry = modelGeometry(model);
    this.maxSlots = opts.maxSlots ?? 16;
    this.maxContext = Math.min(opts.maxContext ?? this.geometry.maxPositions, this.geometry.maxPositions);
    this.maxCachedTokens = opts.maxCachedTokens ?? this.maxSlots * this.maxContext;
    this.prefillTokenBudget = opts.prefillTokenBudget ?? 512;
    for (const [k, v] of [["maxSlots", this.maxSlots], ["maxContext", this.maxContext], ["maxCachedTokens", this.maxCachedTokens], ["prefillTokenBudget", this.prefillTokenBudget]] as const) {
      if (!Number.isInteger(v) || v < 1) throw new RangeError(`GenerationEngine option ${k} must be a positive integer, got ${v}`);
    }
    const gc = opts.generationConfig;
    this.defaults = resolveSampling({ ...(gc ? samplingDefaultsFrom(gc) : {}), ...(opts.generationDefaults ?? {}) }, DEFAULT_SAMPLING);
    this.maxLength = gc && gc.maxNewTokens === undefined && opts.generationDefaults?.maxNewTokens === undefined ? (gc.maxLength ?? null) : null;
    const cfgEos = (model.base.config as { eosTokenId?: number | readonly number[] | null }).eosTokenId;
    this.eos = opts.eosTokenIds ?? gc?.eosTokenId ?? (cfgEos === null || cfgEos === undefined ? [] : typeof cfgEos === "number" ? [cfgEos] : cfgEos);
    this.cache = new KvArena(this.geometry);
    const poolable = model.adapterNames.map((n) => model.adapter(n)).filter((a) => {
      try {
        checkPoolable(a, (k) => model.weights.has(k));
        return !isPrefixAdapter(a);
      } catch {
        return false;
      }
    });
    this.layout = planLayout(poolable, moduleShapes(model), this.geometry.hiddenSize, {
      minSlots: opts.maxAdapters ?? 0,
      ...(opts.maxLoraRank !== undefined ? { minRank: opts.maxLoraRank } : {}),
    });
  }

  /** The decoder for the current layout (built on first use). */
  private decoderFor(): Promise<Decoder> {
    if (!this.decoder) {
      const pool = new AdapterPool(this.layout, (n) => this.model.weights.get(n), (n) => this.model.weights.has(n));
      this.decoder = Decoder.create(this.model, pool, { ...(this.opts.sessionOptions ? { sessionOptions: this.opts.sessionOptions } : {}), ...(this.opts.contribOps ? { contribOps: this.opts.contribOps } : {}), cache: this.cache });
      this.decoder.catch(() => {
        this.decoder = null;
      });
    }
    return this.decoder;
  }

  /** Compiles the generation graph now (otherwise the first request does). */
  async warmup(): Promise<void> {
    await this.decoderFor();
  }

  stats(): EngineStats {
    let cached = 0;
    for (let s = 0; s < this.rows.length; s++) cached += this.cache.lengths[s] ?? 0;
    return { running: this.rows.length, waiting: this.waiting.length, slots: this.maxSlots, cachedTokens: cached, steps: this.iterations, prefillTokens: this.prefillTokens };
  }

  /**
   * A gate for a fine-tuning job co-served with this engine's traffic (`TrainerConfig.gate`):
   * its training runs go between decode iterations, in the slack under `itlSloMs`, and at full
   * speed when no request runs. The first call fixes the options; every job gets its own gate.
   */
  trainingGate(opts: CoServeOptions): TrainingGate {
    if (!this.coserve) {
      this.coserve = new CoServeScheduler({ busy: () => this.loop !== null || this.rows.length > 0 || this.waiting.length > 0 }, opts);
    } else if (opts.itlSloMs !== this.coserve.itlSloMs) {
      throw new RangeError(`this engine co-serves training under itlSloMs ${this.coserve.itlSloMs}; got ${opts.itlSloMs}`);
    }
    return this.coserve.gate();
  }

  /** Training slices co-served so far (null before the first `trainingGate`). */
  coServeStats(): CoServeStats | null {
    return this.coserve?.stats() ?? null;
  }

  /** Bytes one cached token takes (keys and values of all layers, float32). */
  get cacheBytesPerToken(): number {
    return this.cache.bytesPerToken;
  }

  /** The request's prompt as token ids: `promptIds`, or `prompt` encoded with the tokenizer. */
  private promptIds(req: AnyGenerationRequest, fn: string): number[] {
    if (!("prompt" in req) || req.prompt === undefined) {
      if (req.promptIds === undefined) throw new ArgumentError(fn, "request.promptIds", "a list of non-negative integer token ids (or the text in request.prompt)", "undefined");
      return Array.from(req.promptIds);
    }
    if (req.promptIds !== undefined) throw new ArgumentError(fn, "request", "either promptIds or prompt, not both", "both");
    const tok = this.opts.tokenizer;
    if (!tok) {
      throw new ArgumentError(fn, "request.prompt", "absent: this engine has no tokenizer to encode text with (pass EngineOptions.tokenizer, e.g. loadTokenizer(modelDir)); give request.promptIds", describeValue(req.prompt));
    }
    return tok.encode(req.prompt).ids;
  }

  /** Checks a request and queues it (errors are thrown here, synchronously). */
  private admit(req: AnyGenerationRequest, streaming: boolean, leader: Sequence | null = null, choice = 0): Sequence {
    if (this.state !== "open") throw new EngineClosedError(this.state === "draining" ? "draining" : "closed");
    checkGenerationRequest(streaming ? "GenerationEngine.stream" : "GenerationEngine.generate", req);
    const prompt = this.promptIds(req, streaming ? "GenerationEngine.stream" : "GenerationEngine.generate");
    if (prompt.length === 0) throw new EmptyPromptError();
    prompt.forEach((t, i) => {
      if (!Number.isInteger(t) || t < 0 || t >= this.geometry.vocabSize) throw new PromptTokenError(i, t, this.geometry.vocabSize);
    });
    let adapter: AdapterInstance | null = null;
    if (req.adapter !== undefined && req.adapter !== null) {
      if (!this.model.adapterNames.includes(req.adapter)) throw new UnknownAdapterError(req.adapter, this.model.adapterNames);
      if (this.model.mergedAdapters.includes(req.adapter)) throw new AdapterStateError(req.adapter, "is merged into the base weights; omit it (the base model already applies it) or unmerge it");
      adapter = this.model.adapter(req.adapter);
      checkPoolable(adapter, (k) => this.model.weights.has(k));
    }
    const resolved = resolveSampling(req.params ?? {}, this.defaults);
    const params = choice > 0 && resolved.seed !== undefined ? { ...resolved, seed: resolved.seed + choice } : resolved;
    const virtualTokens = virtualTokenCount(adapter);
    // prefix tuning: the prefix's keys and values take the first positions of the row's cache
    const prefixTokens = adapter && isPrefixAdapter(adapter) ? (adapter.config as unknown as { numVirtualTokens: number }).numVirtualTokens : 0;
    if (prefixTokens > 0 && ((this.model.base.config as { slidingWindow?: number | null }).slidingWindow ?? null) !== null) {
      throw new UnsupportedOptionError("adapter", "peft_type", "PREFIX_TUNING", "the model has sliding-window attention; prefix tuning needs full attention (as in the full forward pass)");
    }
    const promptLen = prompt.length + virtualTokens + prefixTokens;
    if (promptLen > this.maxContext) {
      const extra = virtualTokens ? ` (${prompt.length} + ${virtualTokens} virtual tokens)` : prefixTokens ? ` (${prompt.length} + ${prefixTokens} prefix tokens)` : "";
      throw new ContextLengthError(promptLen, this.maxContext, extra);
    }
    const byLength = this.maxLength !== null && req.params?.maxNewTokens === undefined ? Math.max(1, this.maxLength - prompt.length) : Infinity;
    const maxOutputs = Math.min(Number.isFinite(byLength) ? byLength : params.maxNewTokens, this.maxContext - promptLen + 1);
    const reserved = promptLen + maxOutputs - 1;
    if (reserved > this.maxCachedTokens) throw new ContextLengthError(reserved, this.maxCachedTokens, " with the new tokens (the engine's maxCachedTokens)");
    const stopIds = new Set([...params.stopTokenIds, ...(params.ignoreEos ? [] : this.eos)]);
    const tok = this.opts.tokenizer;
    const seq = new Sequence(
      req,
      prompt,
      adapter,
      params,
      stopIds,
      maxOutputs,
      reserved,
      isSampling(params) ? samplerRng(params.seed) : null,
      tok ? new OutputText(tok, prompt, params.stopStrings) : null,
      streaming ? new Channel<TokenEvent>() : null,
      deferred<GenerationResult>(),
      virtualTokens,
    );
    if (leader) {
      seq.leader = leader;
      leader.followers.push(seq);
    }
    if (req.signal) {
      if (req.signal.aborted) {
        this.finish(seq, "abort");
        return seq;
      }
      const onAbort = () => this.abort(seq);
      req.signal.addEventListener("abort", onAbort, { once: true });
      seq.onAbort = () => req.signal!.removeEventListener("abort", onAbort);
    }
    this.waiting.push(seq);
    this.kick();
    return seq;
  }

  /** Streams tokens as they are decoded; the iterator's end means finished; `.result` resolves with the whole result. */
  stream(req: AnyGenerationRequest): GenerationStream {
    const seq = this.admit(req, true);
    const events = seq.events!;
    return { [Symbol.asyncIterator]: () => events[Symbol.asyncIterator](), result: seq.done.promise };
  }

  /**
   * `n` choices of one request (OpenAI's `n`), one stream each. Admitted together, they read the
   * prompt once (see the class notes); choice i > 0 samples with seed + i when a seed is set, so
   * seeded choices differ from each other and repeat. Errors are thrown here, synchronously.
   */
  streamChoices(req: AnyGenerationRequest, n: number): GenerationStream[] {
    return this.choices(req, n, true).map((seq) => {
      const events = seq.events!;
      return { [Symbol.asyncIterator]: () => events[Symbol.asyncIterator](), result: seq.done.promise };
    });
  }

  /** `n` choices of one request, as `streamChoices`, without streaming. */
  generateChoices(req: AnyGenerationRequest, n: number): Promise<GenerationResult[]> {
    try {
      return Promise.all(this.choices(req, n, false).map((seq) => seq.done.promise));
    } catch (e) {
      return Promise.reject(e);
    }
  }

  private choices(req: AnyGenerationRequest, n: number, streaming: boolean): Sequence[] {
    if (!Number.isInteger(n) || n < 1) throw new RangeError(`the number of choices must be a positive integer, got ${n}`);
    const first = this.admit(req, streaming);
    const seqs = [first];
    for (let i = 1; i < n; i++) seqs.push(this.admit(req, streaming, first, i));
    return seqs;
  }

  generate(req: AnyGenerationRequest): Promise<GenerationResult> {
    try {
      return this.admit(req, false).done.promise;
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /** Stops admitting requests; resolves when in-flight ones have finished. */
  async drain(): Promise<void> {
    if (this.state === "open") this.state = "draining";
    if (this.rows.length === 0 && this.waiting.length === 0) return;
    this.drained ??= deferred<void>();
    await this.drained.promise;
  }

  /** Aborts every request, waits for the running step and frees the sessions. */
  async close(): Promise<void> {
    this.state = "closed";
    for (const s of [...this.waiting, ...this.rows]) this.abort(s);
    await this.loop;
    const d = this.decoder;
    this.decoder = null;
    if (d) await (await d).release().catch(() => undefined);
  }

  private abort(seq: Sequence): void {
    if (seq.finished) return;
    seq.aborted = true;
    const w = this.waiting.indexOf(seq);
    if (w >= 0) this.waiting.splice(w, 1);
    this.finish(seq, "abort");
    this.kick(); // the row's slot is freed at the start of the next iteration
  }

  private finish(seq: Sequence, reason: FinishReason, error?: unknown): void {
    if (seq.finished) return;
    seq.finished = true;
    seq.onAbort?.();
    if (error !== undefined) {
      seq.events?.fail(error);
      seq.done.reject(error);
      return;
    }
    const result: GenerationResult = { promptTokenIds: seq.promptIds, tokenIds: [...seq.outputIds], finishReason: reason };
    if (seq.text) result.text = seq.text.text;
    if (seq.params.logprobs !== undefined) result.logprobs = seq.logprobs;
    seq.events?.end();
    seq.done.resolve(result);
  }

  private kick(): void {
    if (this.loop) return;
    this.loop = this.run().finally(() => {
      this.loop = null;
      if (this.rows.length > 0 || this.waiting.length > 0) this.kick();
      else {
        if (this.drained) {
          this.drained.resolve();
          this.drained = null;
        }
        this.coserve?.idle();
      }
    });
  }

  private async run(): Promise<void> {
    while (this.rows.length > 0 || this.waiting.length > 0) {
      const t0 = performance.now();
      await new Promise<void>((r) => setImmediate(r)); // let new requests and aborts in
      this.retire();
      try {
        await this.admitWaiting();
        // never beside a training slice: both would run on all cores
        let waited = 0;
        if (this.coserve?.training) {
          const w0 = performance.now();
          await this.coserve.beforeIteration();
          waited = performance.now() - w0;
        }
        await this.iterate();
        if (this.coserve && this.state !== "closed") await this.coserve.afterIteration(performance.now() - t0 - waited);
      } catch (e) {
        // a failed run fails the rows it held; the engine keeps serving the others
        for (const s of this.rows) this.finish(s, "abort", e);
        this.retire();
      }
    }
  }

  /** Removes finished rows, keeping the slot order (decoding rows, then prompt readers). */
  private retire(): void {
    let w = 0;
    let decode = 0;
    for (let s = 0; s < this.rows.length; s++) {
      const row = this.rows[s]!;
      if (row.finished) {
        if (row.adapter) this.release(row);
        continue;
      }
      if (w !== s) this.cache.move(s, w);
      this.rows[w] = row;
      if (s < this.nDecode) decode++;
      w++;
    }
    this.rows.length = w;
    this.nDecode = decode;
  }

  private readonly poolUsers = new Map<number, number>();

  private release(row: Sequence): void {
    if (row.adapterSlot === 0) return; // a prefix-tuning row uses the base slot
    const n = (this.poolUsers.get(row.adapterSlot) ?? 1) - 1;
    this.poolUsers.set(row.adapterSlot, n);
  }

  /** The pool slot for `a`: where it is, a free or unused one, or −1 when the pool needs a larger layout. */
  private async poolSlot(a: AdapterInstance): Promise<number> {
    const dec = await this.decoderFor();
    const version = this.model.adapterVersion(a.name);
    const at = dec.pool.slotOf(a.name, version);
    if (at > 0) return at;
    const stale = dec.pool.slotOf(a.name);
    if (stale > 0 && (this.poolUsers.get(stale) ?? 0) === 0) dec.pool.clear(stale);
    let slot = dec.pool.freeSlot();
    if (slot < 0) {
      for (let s = 1; s < dec.pool.layout.slots; s++) {
        if ((this.poolUsers.get(s) ?? 0) === 0) {
          slot = s;
          break;
        }
      }
    }
    if (slot < 0) return -1;
    const freeVirtual = dec.pool.freeVirtualRows() + (dec.pool.virtualTokens(slot)?.[1] ?? 0);
    if (!fitsLayout(dec.pool.layout, a, freeVirtual)) return -1;
    dec.pool.assign(slot, a, version);
    return slot;
  }

  /** A larger layout holding every adapter in use and `a`; the cache carries over. */
  private async grow(a: AdapterInstance): Promise<void> {
    const old = await this.decoderFor();
    const inUse = old.pool.occupants.map((n, s) => (n !== null && (this.poolUsers.get(s) ?? 0) > 0 ? this.model.adapter(n) : null));
    const full = inUse.filter((x) => x !== null).length + 1 >= old.pool.layout.slots;
    this.layout = planLayout([a], moduleShapes(this.model), this.geometry.hiddenSize, { base: { ...old.pool.layout, slots: full ? old.pool.layout.slots * 2 : old.pool.layout.slots } });
    const pool = new AdapterPool(this.layout, (n) => this.model.weights.get(n), (n) => this.model.weights.has(n));
    inUse.forEach((ad, s) => {
      if (ad) pool.assign(s, ad, this.model.adapterVersion(ad.name));
    });
    this.decoder = Decoder.create(this.model, pool, { ...(this.opts.sessionOptions ? { sessionOptions: this.opts.sessionOptions } : {}), ...(this.opts.contribOps ? { contribOps: this.opts.contribOps } : {}), cache: this.cache });
    await this.decoder;
    await old.release();
  }

  private async admitWaiting(): Promise<void> {
    while (this.waiting.length > 0 && this.rows.length < this.maxSlots && this.state !== "closed") {
      const seq = this.waiting[0]!;
      const longest = Math.max(seq.reserved, ...this.rows.map((r) => r.reserved));
      let cap = 16;
      while (cap < longest) cap *= 2;
      cap = Math.min(Math.max(cap, longest), Math.max(this.maxContext, 16));
      if ((this.rows.length + 1) * cap > this.maxCachedTokens && this.rows.length > 0) return;
      if (seq.adapter && !isPrefixAdapter(seq.adapter)) {
        try {
          let slot = await this.poolSlot(seq.adapter);
          if (slot < 0) {
            await this.grow(seq.adapter);
            slot = await this.poolSlot(seq.adapter);
          }
          seq.adapterSlot = slot;
          this.poolUsers.set(slot, (this.poolUsers.get(slot) ?? 0) + 1);
        } catch (e) {
          // e.g. the adapter was deleted from the model while the request waited
          if (this.waiting[0] === seq) this.waiting.shift();
          this.finish(seq, "abort", e);
          continue;
        }
      }
      if (this.waiting[0] !== seq) {
        // aborted while the pool changed
        if (seq.adapter) this.release(seq);
        continue;
      }
      this.waiting.shift();
      this.cache.ensure(this.rows.length + 1, 1);
      this.cache.reset(this.rows.length);
      if (seq.adapter && isPrefixAdapter(seq.adapter)) prefillPrefix(this.cache, this.rows.length, seq.adapter);
      this.rows.push(seq);
    }
  }

  private async iterate(): Promise<void> {
    const dec = await this.decoderFor();
    this.iterations++;
    // decoding step: every running row feeds its last token
    const n = this.nDecode;
    if (n > 0) {
      const batch: StepRow[] = this.rows.slice(0, n).map((r, s) => ({ slot: s, ids: [r.pending!], adapterSlot: r.adapterSlot }));
      const logits = await dec.step(batch, this.maxContext);
      this.rows.slice(0, n).forEach((r, i) => this.accept(r, logits[i]!));
    }
    // prompt chunks of newcomers, in arrival order, under the token budget
    const chunk: StepRow[] = [];
    let longest = 0;
    for (let s = this.nDecode; s < this.rows.length; s++) {
      const r = this.rows[s]!;
      if (r.finished) break;
      if (r.leader) {
        if (!r.leader.finished) break; // it will get the leader's prompt cache (the leader is in an earlier slot)
        r.leader = null; // the leader was aborted: read the prompt itself
      }
      const left = r.feed.length - r.fed;
      const take = Math.max(1, Math.min(left, Math.floor(this.prefillTokenBudget / (chunk.length + 1))));
      if (chunk.length > 0 && (chunk.length + 1) * Math.max(longest, take) > this.prefillTokenBudget) break;
      chunk.push({ slot: s, ids: r.feed.slice(r.fed, r.fed + take), virtual: this.virtualRows(dec, r).slice(r.fed, r.fed + take), adapterSlot: r.adapterSlot });
      longest = Math.max(longest, take);
    }
    if (chunk.length > 0) {
      const logits = await dec.step(chunk, this.maxContext);
      const leaders: [Sequence, Float32Array][] = [];
      chunk.forEach((c, i) => {
        const r = this.rows[c.slot]!;
        r.fed += c.ids.length;
        this.prefillTokens += c.ids.length;
        if (r.prefilled && !r.finished) {
          this.toDecoding(c.slot);
          if (r.followers.length > 0) leaders.push([r, logits[i]!]);
          this.accept(r, logits[i]!);
        }
      });
      for (const [r, l] of leaders) this.sharePrefill(r, l);
    }
  }

  /**
   * Copies the prompt cache of `leader` (just read) to the slots of its followers that are
   * running and starts them from the same logits; a follower still waiting for a slot is
   * detached and will read the prompt itself.
   */
  private sharePrefill(leader: Sequence, logits: Float32Array): void {
    for (const f of leader.followers) {
      f.leader = null;
      const slot = this.rows.indexOf(f);
      if (f.finished || slot < this.nDecode) continue;
      this.cache.move(this.rows.indexOf(leader), slot);
      f.fed = f.feed.length;
      this.toDecoding(slot);
      this.accept(f, logits);
    }
    leader.followers = [];
  }

  /** The pool table rows of a row's virtual tokens (prompt tuning), −1 for prompt tokens. */
  private virtualRows(dec: Decoder, r: Sequence): number[] {
    const vt = dec.pool.virtualTokens(r.adapterSlot);
    if (!vt) return r.virtual;
    return r.virtual.map((v, i) => (i < vt[1] ? vt[0] + i : v));
  }

  /** Moves the row in `slot` (which finished its prompt) to the end of the decoding rows. */
  private toDecoding(slot: number): void {
    const to = this.nDecode;
    if (slot !== to) {
      const tmp = this.rows.length;
      this.cache.ensure(tmp + 1, 1);
      this.cache.move(slot, tmp);
      this.cache.move(to, slot);
      this.cache.move(tmp, to);
      const a = this.rows[slot]!;
      this.rows[slot] = this.rows[to]!;
      this.rows[to] = a;
    }
    this.nDecode++;
  }

  /** Picks a row's next token from its logits, streams it and decides whether the row is done. */
  private accept(r: Sequence, logits: Float32Array): void {
    if (r.finished) return;
    const p = r.params;
    const token = nextToken(logits, p, { promptIds: r.promptIds, outputIds: r.outputIds }, r.rng);
    r.outputIds.push(token);
    r.pending = token;
    const tok = this.opts.tokenizer;
    const ev: TokenEvent = { tokenId: token, text: "" };
    if (p.logprobs !== undefined) {
      const lp = logSoftmax(logits);
      ev.logprob = lp[token]!;
      ev.topLogprobs = topLogprobs(lp, p.logprobs).map((t) => (tok && tok.idToToken(t.tokenId) !== undefined ? { ...t, text: tok.decode([t.tokenId]) } : t));
    }
    let reason: FinishReason | null = null;
    if (r.stopIds.has(token)) reason = "stop";
    else if (r.outputIds.length >= r.maxOutputs) reason = "length";
    if (r.text) {
      const { delta, stop } = r.text.push(token, reason !== null);
      ev.text = delta;
      if (stop) reason = "stop";
      else if (reason !== null) ev.text += r.text.flush();
    }
    if (p.logprobs !== undefined) r.logprobs.push(ev);
    r.events?.push(ev);
    if (reason) this.finish(r, reason);
  }
}
