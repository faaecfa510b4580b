/**
 * Prefix tuning in incremental decoding: the adapter's per-layer keys and values become the first
 * positions of a cache slot, as PEFT's `generate` starts from its `past_key_values`; the prompt's
 * positions then start after them, and the base model's graph decodes as usual.
 */
import { AdapterStateError } from "../errors.js";
import type { AdapterInstance } from "../tuners/common/types.js";
import type { KvArena } from "./kv-arena.js";

/** Writes `adapter`'s prefix into the empty slot `slot` of `cache`; returns the prefix length. */
export function prefillPrefix(cache: KvArena, slot: number, adapter: AdapterInstance): number {
  const kv = adapter.tuner.prefixKv?.(adapter);
  if (!kv) throw new AdapterStateError(adapter.name, `${adapter.tuner.peftType} adapters have no prefix keys and values`);
  if ((cache.lengths[slot] ?? 0) !== 0) throw new AdapterStateError(adapter.name, `cache slot ${slot} is not empty; a prefix goes first`);
  cache.ensure(slot + 1, kv.tokens);
  kv.layers.forEach((l, layer) => {
    cache.write(layer, "key", slot, l.key, 0, kv.tokens, kv.tokens);
    cache.write(layer, "value", slot, l.value, 0, kv.tokens, kv.tokens);
  });
  cache.advance(slot, kv.tokens);
  return kv.tokens;
}
