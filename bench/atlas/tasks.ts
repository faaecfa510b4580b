/**
 * The aTLAS experiment's tasks on USE-lite, from the UCI "Sentiment Labelled Sentences" data in
 * the installed `sentiment` package:
 *
 * - `amazon`, `imdb`, `yelp`: binary sentiment of one source (1,000 sentences each), split
 *   60/20/20 (stratified, seed 0) into train 600 / val 200 / test 200;
 * - `source`: which site a sentence comes from (amazon / imdb / yelp, 3 classes), drawn from the
 *   same per-source splits (so no test sentence of any task is a training sentence of another):
 *   train 600, val 300, test 300 (balanced, seeded subsets).
 *
 * Heads are zero-shot, as CLIP's in the paper: each class is the USE-lite embedding of a short
 * description ("a negative review", "a review of a movie", …), L2-normalised and scaled by 100
 * (CLIP's logit scale); they are fixed during fine-tuning and composition, so all task vectors
 * live in the same encoder and every task keeps its own head in multi-task evaluation.
 */
import { loadDataset } from "../../src/data/registry.js";
import { splitDataset } from "../../src/data/split.js";
import type { Example } from "../../src/data/types.js";
import { mapSource } from "../../src/models/context.js";
import type { LoadedModel } from "../../src/models/load.js";
import { loadUseLite, type UseLiteModel } from "../../src/models/use-lite/convert.js";
import { UseLiteEmbedder } from "../../src/models/use-lite/embed.js";
import { useLite } from "../../src/models/use-lite/model.js";
import { type Tensor, tensor } from "../../src/tensor.js";
import type { TokenizedExample } from "../../src/train/trainer.js";
import { Rng } from "../../src/util/rng.js";

export const TASK_NAMES = ["amazon", "imdb", "yelp", "source"] as const;
export type TaskName = (typeof TASK_NAMES)[number];

/** Tokens kept per sentence (95% of the sentences are shorter). */
export const MAX_TOKENS = 48;
export const LOGIT_SCALE = 100;
export const SPLIT_SEED = 0;

export const PROMPTS: Record<TaskName, readonly string[]> = {
  amazon: ["a negative review", "a positive review"],
  imdb: ["a negative review", "a positive review"],
  yelp: ["a negative review", "a positive review"],
  source: ["a review of a product bought on Amazon", "a review of a movie", "a review of a restaurant"],
};

export interface Task {
  readonly name: TaskName;
  readonly labels: readonly string[];
  readonly train: readonly TokenizedExample[];
  readonly val: readonly TokenizedExample[];
  readonly test: readonly TokenizedExample[];
  /** The zero-shot head: `classifier.weight` [C, 512] and `classifier.bias` [C]. */
  readonly head: ReadonlyMap<string, Tensor>;
}

function pick<T>(xs: readonly T[], idx: readonly number[]): T[] {
  return idx.map((i) => xs[i]!);
}

/** `n` per class from `examples` (seeded shuffle, then input order kept). */
function balancedSubset(examples: readonly Example[], perClass: number, seed: number): Example[] {
  const rng = new Rng(seed);
  const byClass = new Map<number, number[]>();
  examples.forEach((e, i) => byClass.set(e.label, [...(byClass.get(e.label) ?? []), i]));
  const keep: number[] = [];
  for (const c of [...byClass.keys()].sort()) keep.push(...rng.shuffle(byClass.get(c)!).slice(0, perClass));
  return keep.sort((a, b) => a - b).map((i) => examples[i]!);
}

/** Loads the four tasks with tokenised splits and zero-shot heads (embedding the prompts with `m`). */
export async function loadTasks(m: UseLiteModel, threads: number): Promise<Task[]> {
  const tok = (e: Example): TokenizedExample => ({ ids: m.tokenizer.encode(e.text).slice(0, MAX_TOKENS), label: e.label });
  const splits = new Map<string, { train: Example[]; val: Example[]; test: Example[] }>();
  for (const s of ["amazon", "imdb", "yelp"] as const) {
    const ex = loadDataset(`uci-${s}`).examples;
    const sp = splitDataset(ex, { seed: SPLIT_SEED, train: 0.6, validation: 0.2, test: 0.2 });
    splits.set(s, { train: pick(ex, sp.train), val: pick(ex, sp.validation), test: pick(ex, sp.test) });
  }
  const sources = ["amazon", "imdb", "yelp"];
  const asSource = (part: "train" | "val" | "test") => sources.flatMap((s, i) => splits.get(s)![part].map((e) => ({ text: e.text, label: i })));
  const embedder = await UseLiteEmbedder.create({ model: m, threads });
  const tasks: Task[] = [];
  try {
    for (const name of TASK_NAMES) {
      const sp =
        name === "source"
          ? { train: balancedSubset(asSource("train"), 200, 1), val: balancedSubset(asSource("val"), 100, 2), test: balancedSubset(asSource("test"), 100, 3) }
          : splits.get(name)!;
      const prompts = PROMPTS[name];
      const emb = await embedder.embed(prompts);
      const w = new Float32Array(prompts.length * 512);
      emb.forEach((v, c) => {
        const n = Math.hypot(...v);
        v.forEach((x, j) => (w[c * 512 + j] = (LOGIT_SCALE * x) / n));
      });
      const head = new Map<string, Tensor>([
        ["classifier.weight", tensor("float32", [prompts.length, 512], w)],
        ["classifier.bias", tensor("float32", [prompts.length], new Float32Array(prompts.length))],
      ]);
      tasks.push({ name, labels: prompts, train: sp.train.map(tok), val: sp.val.map(tok), test: sp.test.map(tok), head });
    }
  } finally {
    await embedder.release();
  }
  return tasks;
}

/** USE-lite as a classifier with the given head (or a placeholder head of `numLabels` rows). */
export function modelWithHead(m: UseLiteModel, head: ReadonlyMap<string, Tensor> | number): LoadedModel {
  const w = new Map<string, Tensor>(m.weights);
  if (typeof head === "number") {
    w.set("classifier.weight", tensor("float32", [head, 512], new Float32Array(head * 512)));
    w.set("classifier.bias", tensor("float32", [head], new Float32Array(head)));
  } else for (const [k, v] of head) w.set(k, v);
  return { dir: m.dir, config: m.config, def: useLite, weights: mapSource(w, m.dir) };
}

export function loadBase(): UseLiteModel {
  return loadUseLite();
}

/** k examples per class from `pool` (seeded). */
export function kShot(pool: readonly TokenizedExample[], k: number, numLabels: number, seed: number): TokenizedExample[] {
  const rng = new Rng(seed);
  const out: TokenizedExample[] = [];
  for (let c = 0; c < numLabels; c++) {
    const idx = pool.flatMap((e, i) => (e.label === c ? [i] : []));
    out.push(...rng.shuffle(idx).slice(0, k).map((i) => pool[i]!));
  }
  return out;
}
