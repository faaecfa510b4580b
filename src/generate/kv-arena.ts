/**
 * The KV cache's host memory: per layer one key and one value buffer laid out
 * [slot, kvHeads, capacity, headDim]. A run over the contiguous slots [s0, s1) feeds
 * `buffer.subarray(…)` as `past_key.<i>` [s1 − s0, kvHeads, capacity, headDim] with no copy; the
 * run's new keys and values are written into place afterwards (a few kilobytes per token). The
 * buffers are allocated once and grow only when a longer row or more slots are needed
 * (capacity doubles, and the data are moved in place), never per token.
 */
export interface KvShape {
  readonly layers: number;
  readonly kvHeads: number;
  readonly headDim: number;
}

/** Smallest capacity bucket (positions per slot). */
export const MIN_CAPACITY = 16;

export class KvArena {
  private keys: Float32Array[];
  private values: Float32Array[];
  /** Slots the layout has room for. */
  slots = 0;
  /** Positions per slot in the current layout. */
  capacity = MIN_CAPACITY;
  /** Cached tokens per slot. */
  readonly lengths: number[] = [];

  constructor(readonly shape: KvShape) {
    this.keys = Array.from({ length: shape.layers }, () => new Float32Array(0));
    this.values = Array.from({ length: shape.layers }, () => new Float32Array(0));
  }

  /** Bytes of one cached token (keys and values of every layer, float32). */
  get bytesPerToken(): number {
    return this.shape.layers * 2 * this.shape.kvHeads * this.shape.headDim * 4;
  }

  /** Bytes the buffers hold now. */
  get allocatedBytes(): number {
    return this.keys.reduce((s, k) => s + k.byteLength * 2, 0);
  }

  private get perPosition(): number {
    return this.shape.kvHeads * this.shape.headDim;
  }

  /** Makes room for `slots` slots of at least `positions` positions each (capacity: powers of two ≥ 16, at most `maxCapacity`). */
  ensure(slots: number, positions: number, maxCapacity = Number.MAX_SAFE_INTEGER): void {
    let cap = this.capacity;
    while (cap < positions) cap *= 2;
    cap = Math.max(Math.min(cap, Math.max(maxCapacity, positions)), MIN_CAPACITY);
    const newSlots = Math.max(this.slots, slots);
    while (this.lengths.length < newSlots) this.lengths.push(0);
    if (cap === this.capacity && newSlots === this.slots) return;
    const need = newSlots * cap * this.perPosition;
    for (let l = 0; l < this.shape.layers; l++) {
      this.keys[l] = this.relayout(this.keys[l]!, need, cap);
      this.values[l] = this.relayout(this.values[l]!, need, cap);
    }
    this.capacity = cap;
    this.slots = newSlots;
  }

  /** Moves the live data of `buf` (layout [slots, heads, capacity, D]) to a layout with capacity `cap`. */
  private relayout(buf: Float32Array, need: number, cap: number): Float32Array {
    const heads = this.slots * this.shape.kvHeads;
    const D = this.shape.headDim;
    const oldRow = this.capacity * D;
    const newRow = cap * D;
    const keep = Math.min(oldRow, newRow);
    if (need > buf.length) {
      const next = new Float32Array(Math.max(need, Math.floor(buf.length * 1.5)));
      for (let h = 0; h < heads; h++) next.set(buf.subarray(h * oldRow, h * oldRow + keep), h * newRow);
      return next;
    }
    if (newRow > oldRow) for (let h = heads - 1; h >= 0; h--) buf.copyWithin(h * newRow, h * oldRow, h * oldRow + keep);
    else if (newRow < oldRow) for (let h = 0; h < heads; h++) buf.copyWithin(h * newRow, h * oldRow, h * oldRow + keep);
    return buf;
  }

  /** Keys (`key`) or values of `layer` for slots [s0, s1), as fed to a run. */
  view(layer: number, kind: "key" | "value", s0: number, s1: number): Float32Array {
    const per = this.perPosition * this.capacity;
    return (kind === "key" ? this.keys : this.values)[layer]!.subarray(s0 * per, s1 * per);
  }

  /**
   * Appends `count` new positions to `slot` from a run's output `data` [rows, kvHeads, seq, D]
   * (row `row` of it), for one layer and kind; `lengths` is advanced by `advance()`.
   */
  write(layer: number, kind: "key" | "value", slot: number, data: Float32Array, row: number, seq: number, count: number): void {
    const buf = (kind === "key" ? this.keys : this.values)[layer]!;
    const D = this.shape.headDim;
    const H = this.shape.kvHeads;
    const at = this.lengths[slot]!;
    for (let h = 0; h < H; h++) {
      const src = ((row * H + h) * seq) * D;
      const dst = ((slot * H + h) * this.capacity + at) * D;
      buf.set(data.subarray(src, src + count * D), dst);
    }
  }

  advance(slot: number, count: number): void {
    this.lengths[slot]! += count;
  }

  /** Copies slot `from` (data and length) to slot `to`. */
  move(from: number, to: number): void {
    if (from === to) return;
    const D = this.shape.headDim;
    const row = this.capacity * D;
    const live = (this.lengths[from] ?? 0) * D; // only the cached positions of each head
    for (let l = 0; l < this.shape.layers; l++) {
      for (const buf of [this.keys[l]!, this.values[l]!]) {
        for (let h = 0; h < this.shape.kvHeads; h++) {
          const src = (from * this.shape.kvHeads + h) * row;
          buf.copyWithin((to * this.shape.kvHeads + h) * row, src, src + live);
        }
      }
    }
    this.lengths[to] = this.lengths[from]!;
  }

  /** Forgets the tokens of `slot`. */
  reset(slot: number): void {
    this.lengths[slot] = 0;
  }

  /** Truncates `slot` to its first `length` tokens. */
  truncate(slot: number, length: number): void {
    this.lengths[slot] = Math.min(this.lengths[slot]!, length);
  }
}
