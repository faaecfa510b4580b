/**
 * The frozen-encoder baseline: sentence embeddings computed once with the frozen encoder, then a
 * logistic-regression head (a linear layer + softmax cross-entropy) trained with peft-ts's own
 * graph, autodiff and AdamW. Hyperparameters (learning rate, weight decay, epochs) are chosen on
 * the validation split from a grid, the number of epochs by evaluating after every epoch, so the
 * baseline is tuned as carefully as the adapter it is compared with.
 */
import { ConfigError } from "../errors.js";
import { grad } from "../graph/autodiff.js";
import { crossEntropy, linear } from "../graph/composite.js";
import { Graph } from "../graph/graph.js";
import { UseLiteEmbedder } from "../models/use-lite/embed.js";
import { CompiledGraph } from "../runtime/session.js";
import type { Tensor } from "../tensor.js";
import { accuracy, argmaxRows, macroF1 } from "../train/metrics.js";
import { BestKeeper } from "../train/best-keeper.js";
import { AdamW, excludeFromWeightDecay } from "../train/optim/index.js";
import { Rng } from "../util/rng.js";

/** Row-major feature matrix with its labels. */
export interface Features {
  readonly x: Float32Array;
  readonly dim: number;
  readonly labels: readonly number[];
}

export interface ProbeConfig {
  readonly lr: number;
  readonly weightDecay: number;
  readonly epochs: number;
  readonly batchSize: number;
  readonly seed: number;
}

export interface ProbeScores {
  readonly loss: number;
  readonly accuracy: number;
  readonly f1: number;
}

/** One grid point: the best epoch on validation and its scores. */
export interface ProbeTrial {
  readonly lr: number;
  readonly weightDecay: number;
  readonly bestEpoch: number;
  readonly validation: ProbeScores;
}

export interface ProbeResult {
  readonly selected: ProbeTrial;
  readonly trials: readonly ProbeTrial[];
  readonly test: ProbeScores | null;
  readonly trainableParams: number;
}

export interface ProbeGrid {
  readonly lrs: readonly number[];
  readonly weightDecays: readonly number[];
  readonly maxEpochs: number;
  readonly batchSize: number;
}

/** The grid `peft demo` searches. */
export const DEFAULT_PROBE_GRID: ProbeGrid = { lrs: [1e-3, 3e-3, 1e-2, 3e-2], weightDecays: [0, 0.01, 0.1], maxEpochs: 40, batchSize: 32 };

/** Higher validation accuracy, then lower loss: how the probe picks its epoch and its grid point. */
function betterScores(a: ProbeScores, b: ProbeScores): boolean {
  return a.accuracy > b.accuracy || (a.accuracy === b.accuracy && a.loss < b.loss);
}

/** Embeds texts with the frozen USE-lite encoder (length-sorted batches; output in input order). */
export async function embedFrozen(texts: readonly string[], opts: { threads?: number; batchSize?: number } = {}): Promise<Float32Array> {
  const embedder = await UseLiteEmbedder.create({ ...(opts.threads !== undefined ? { threads: opts.threads } : {}), batchSize: opts.batchSize ?? 64 });
  try {
    const order = texts.map((_, i) => i).sort((a, b) => texts[a]!.length - texts[b]!.length);
    const vecs = await embedder.embed(order.map((i) => texts[i]!));
    const dim = vecs[0]?.length ?? 0;
    const out = new Float32Array(texts.length * dim);
    order.forEach((i, k) => out.set(vecs[k]!, i * dim));
    return out;
  } finally {
    await embedder.release();
  }
}

/** Rows `idx` of a row-major matrix. */
export function selectRows(x: Float32Array, dim: number, idx: readonly number[]): Float32Array {
  const out = new Float32Array(idx.length * dim);
  idx.forEach((r, k) => out.set(x.subarray(r * dim, (r + 1) * dim), k * dim));
  return out;
}

/** Logistic regression on fixed features: one compiled graph giving loss, logits and gradients. */
export class LinearProbe {
  private constructor(
    private readonly session: CompiledGraph,
    readonly dim: number,
    readonly numLabels: number,
  ) {}

  static async create(dim: number, numLabels: number, threads?: number): Promise<LinearProbe> {
    const g = new Graph("linear_probe");
    const x = g.input("x", "float32", ["batch", dim]);
    const labels = g.input("labels", "int64", ["batch"]);
    const w = g.input("classifier.weight", "float32", [numLabels, dim]);
    const b = g.input("classifier.bias", "float32", [numLabels]);
    const logits = linear(x, w, b);
    const loss = crossEntropy(logits, labels);
    g.output(loss, "loss");
    g.output(logits, "logits");
    const [gw, gb] = grad(loss, [w, b]);
    g.output(gw!, "grad_weight");
    g.output(gb!, "grad_bias");
    return new LinearProbe(await CompiledGraph.create(g, threads !== undefined ? { threads } : {}), dim, numLabels);
  }

  private feeds(x: Float32Array, labels: readonly number[], w: Float32Array, b: Float32Array): Record<string, Tensor> {
    const n = labels.length;
    return {
      x: { dtype: "float32", shape: [n, this.dim], data: x },
      labels: { dtype: "int64", shape: [n], data: BigInt64Array.from(labels, (l) => BigInt(l)) },
      "classifier.weight": { dtype: "float32", shape: [this.numLabels, this.dim], data: w },
      "classifier.bias": { dtype: "float32", shape: [this.numLabels], data: b },
    };
  }

  /** Mean loss, accuracy and macro-F1 of weights `w`, `b` on `f`. */
  async score(f: Features, w: Float32Array, b: Float32Array): Promise<ProbeScores> {
    const r = await this.session.run(this.feeds(f.x, f.labels, w, b), ["loss", "logits"]);
    const preds = argmaxRows(r.logits!.data as Float32Array, this.numLabels);
    return { loss: Number(r.loss!.data[0]), accuracy: accuracy(preds, f.labels), f1: macroF1(preds, f.labels) };
  }

  /**
   * Trains from the nn.Linear initialisation (uniform ±1/√dim, seeded) with AdamW (bias without
   * decay) and returns, after each epoch, the validation scores; keeps the best epoch's weights.
   */
  async fit(train: Features, val: Features, cfg: ProbeConfig): Promise<{ bestEpoch: number; best: ProbeScores; weight: Float32Array; bias: Float32Array }> {
    const rng = new Rng(cfg.seed);
    const bound = 1 / Math.sqrt(this.dim);
    const w = Float32Array.from({ length: this.numLabels * this.dim }, () => (rng.uniform() * 2 - 1) * bound);
    const b = Float32Array.from({ length: this.numLabels }, () => (rng.uniform() * 2 - 1) * bound);
    const opt = new AdamW(excludeFromWeightDecay([{ name: "classifier.weight", data: w }, { name: "classifier.bias", data: b }]), { lr: cfg.lr, weightDecay: cfg.weightDecay });
    const n = train.labels.length;
    const keeper = new BestKeeper<ProbeScores & { epoch: number }>(betterScores);
    const params = new Map([
      ["weight", w],
      ["bias", b],
    ]);
    for (let epoch = 1; epoch <= cfg.epochs; epoch++) {
      const order = rng.permutation(n);
      for (let s = 0; s < n; s += cfg.batchSize) {
        const idx = Array.from(order.subarray(s, s + cfg.batchSize));
        const r = await this.session.run(this.feeds(selectRows(train.x, this.dim, idx), idx.map((i) => train.labels[i]!), w, b), ["grad_weight", "grad_bias"]);
        opt.step(new Map([["classifier.weight", r.grad_weight!.data as Float32Array], ["classifier.bias", r.grad_bias!.data as Float32Array]]));
      }
      keeper.observe({ ...(await this.score(val, w, b)), epoch }, params);
    }
    const { epoch: bestEpoch, ...best } = keeper.best!;
    return { bestEpoch, best, weight: keeper.bestParams!.get("weight")!, bias: keeper.bestParams!.get("bias")! };
  }

  async release(): Promise<void> {
    await this.session.release();
  }
}

/**
 * Grid search on validation: for each (lr, weight decay) the best epoch, then the best trial
 * (highest validation accuracy, then lowest validation loss); reports its test scores.
 */
export async function tuneLinearProbe(
  train: Features,
  val: Features,
  test: Features | null,
  numLabels: number,
  opts: { grid?: ProbeGrid; seed: number; threads?: number },
): Promise<ProbeResult> {
  const grid = opts.grid ?? DEFAULT_PROBE_GRID;
  if (val.labels.length === 0) throw new ConfigError("linear probe", "validation", "the validation split is empty; the probe's hyperparameters are chosen on it");
  const probe = await LinearProbe.create(train.dim, numLabels, opts.threads);
  try {
    const trials: ProbeTrial[] = [];
    const keeper = new BestKeeper<ProbeTrial>((a, b) => betterScores(a.validation, b.validation));
    for (const lr of grid.lrs) {
      for (const weightDecay of grid.weightDecays) {
        const fit = await probe.fit(train, val, { lr, weightDecay, epochs: grid.maxEpochs, batchSize: grid.batchSize, seed: opts.seed });
        const trial: ProbeTrial = { lr, weightDecay, bestEpoch: fit.bestEpoch, validation: fit.best };
        trials.push(trial);
        keeper.observe(trial, new Map([
          ["weight", fit.weight],
          ["bias", fit.bias],
        ]));
      }
    }
    const best = keeper.bestParams!;
    const testScores = test && test.labels.length > 0 ? await probe.score(test, best.get("weight")!, best.get("bias")!) : null;
    return { selected: keeper.best!, trials, test: testScores, trainableParams: numLabels * (train.dim + 1) };
  } finally {
    await probe.release();
  }
}
