/** Few-shot training sets for `peft atlas`: K examples per class, drawn (seeded) from the train split. */
import type { TokenizedExample } from "../../train/trainer.js";
import { Rng } from "../../util/rng.js";

/**
 * `k` examples of every class of `pool` (all of a class that has fewer), drawn with `seed`; the
 * kept examples stay in pool order. Returns them with the per-class counts.
 */
export function kShotSubset(pool: readonly TokenizedExample[], k: number, numLabels: number, seed: number): { examples: TokenizedExample[]; perClass: number[] } {
  const rng = new Rng(seed);
  const keep: number[] = [];
  const perClass: number[] = [];
  for (let c = 0; c < numLabels; c++) {
    const idx = pool.flatMap((e, i) => (e.label === c ? [i] : []));
    const chosen = rng.shuffle(idx).slice(0, k);
    perClass.push(chosen.length);
    keep.push(...chosen);
  }
  return { examples: keep.sort((a, b) => a - b).map((i) => pool[i]!), perClass };
}
