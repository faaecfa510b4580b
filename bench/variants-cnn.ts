/**
 * `npm run bench -- variants-cnn`: FLoRA against LoRA on convolution kernels (issue 17, docs/lora-variants.md).
 *
 * 1. A base `simple_cnn` (conv1 1→16, conv2 16→32, kernel 3, stride 2, padding 1, fc 1,568 → 10)
 *    is trained on MNIST digits (the `mnist` package: 10,000 digits as JSON) with the Trainer: a
 *    full-rank LoRA on both convolutions (rank = the kernel's rank bound: 9 for conv1's [16, 9],
 *    32 for conv2's [32, 144]) and the head in full, merged into a plain model
 *    (`mergeAndUnload`), written as an HF-style folder and loaded back with `loadModel`.
 * 2. That base is adapted to Fashion-MNIST (Debian's `dataset-fashion-mnist`, IDX files) with LoRA
 *    (lora_A [r, in, 3, 3], lora_B [out, r, 1, 1]) and with FLoRA (core [r, r, r, r], one factor per
 *    mode) on conv1 and conv2 at about the same adapter parameters, each with the classifier head
 *    trained (`--head trained`, SEQ_CLS) and/or the digit head kept frozen (`--head frozen`: the
 *    adapter alone maps garments onto the ten outputs), the same steps, learning rate and seeds.
 *
 * Prints one JSON line: the base's MNIST accuracy, every run (test accuracy, trainable and adapter
 * parameters, seconds) and per setup and method the mean test accuracy ± standard error.
 *
 *   npm run bench -- variants-cnn --seeds 0,1,2 --threads 2
 */
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { gunzipSync } from "node:zlib";
import type { Command } from "commander";
import { idxExamples, parseIdx } from "../src/data/idx.js";
import { DatasetError } from "../src/errors.js";
import { saveSafetensors } from "../src/io/safetensors.js";
import { mapSource } from "../src/models/context.js";
import { loadModel, type LoadedModel } from "../src/models/load.js";
import { parseSimpleCnnConfig, simpleCnn, simpleCnnConfigJson, simpleCnnShapes } from "../src/models/simple-cnn.js";
import { PeftModel } from "../src/peft/peft-model.js";
import type { Tensor } from "../src/tensor.js";
import { type TokenizedExample, Trainer } from "../src/train/trainer.js";
import { Rng } from "../src/util/rng.js";
import { benchEnvironment, emitResult, positiveInt, progress } from "./env.js";
import { meanSe } from "./variants.js";

export const FASHION_DIR = "/usr/share/datasets/fashion-mnist";
const FASHION_LABELS = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"];

const BASE_RAW = { model_type: "simple_cnn", image_size: 28, num_channels: 1, conv_channels: [16, 32], kernel_size: 3, stride: 2, padding: 1, num_labels: 10 };

/** The `mnist` package's digits: per digit, its images as pixel bytes (the JSON holds them /255, rounded to 3 decimals). */
function mnistDigits(): Uint8Array[][] {
  const dir = join(dirname(createRequire(import.meta.url).resolve("mnist")), "..", "src", "digits");
  return Array.from({ length: 10 }, (_, d) => {
    const raw = (JSON.parse(readFileSync(join(dir, `${d}.json`), "utf8")) as { data: number[] }).data;
    const n = Math.floor(raw.length / 784);
    return Array.from({ length: n }, (_, i) => Uint8Array.from(raw.slice(i * 784, (i + 1) * 784), (v) => Math.round(v * 255)));
  });
}

/** Interleaved by class (0, 1, …, 9, 0, 1, …): the first n examples are balanced. */
function balanced(byClass: readonly (readonly Uint8Array[])[], from: number, perClass: number): TokenizedExample[] {
  const out: TokenizedExample[] = [];
  for (let i = from; i < from + perClass; i++) byClass.forEach((xs, label) => xs[i] && out.push({ ids: Array.from(xs[i]), label }));
  return out;
}

function fashion(dir: string, split: "train" | "t10k"): Uint8Array[][] {
  const read = (name: string) => {
    const file = join(dir, `${split}-${name}-ubyte.gz`);
    if (!existsSync(file)) throw new DatasetError(file, null, "Fashion-MNIST file not found: install Debian's dataset-fashion-mnist (apt-get install -y --no-install-recommends dataset-fashion-mnist) or pass --fashion-dir");
    return { file, idx: parseIdx(new Uint8Array(gunzipSync(readFileSync(file))), file) };
  };
  const images = read("images-idx3");
  const labels = read("labels-idx1");
  const byClass: Uint8Array[][] = Array.from({ length: 10 }, () => []);
  for (const e of idxExamples(images.idx, labels.idx, images.file)) byClass[e.label]!.push(e.pixels);
  return byClass;
}

/** PyTorch's default init of nn.Conv2d / nn.Linear: weight and bias U(±1/√fan_in). */
function initialWeights(seed: number): Map<string, Tensor> {
  const c = parseSimpleCnnConfig(BASE_RAW, "base config");
  const rng = new Rng(seed);
  const out = new Map<string, Tensor>();
  const shapes = simpleCnnShapes(c);
  for (const [k, shape] of shapes) {
    const w = shapes.get(k.replace(/\.bias$/u, ".weight"))!;
    const fanIn = w.slice(1).reduce((a, b) => a * b, 1);
    const n = shape.reduce((a, b) => a * b, 1);
    out.set(k, { dtype: "float32", shape, data: Float32Array.from({ length: n }, () => (rng.uniform() * 2 - 1) / Math.sqrt(fanIn)) });
  }
  return out;
}

export interface CnnRun {
  readonly setup: "trained" | "frozen";
  readonly method: string;
  readonly seed: number;
  readonly r: number;
  readonly testAccuracy: number;
  readonly trainableParams: number;
  readonly adapterParams: number;
  readonly seconds: number;
}

export interface CnnBenchOptions {
  readonly seeds: readonly number[];
  readonly heads: readonly ("trained" | "frozen")[];
  readonly methods: readonly ("lora" | "flora")[];
  /** LoRA's rank and FLoRA's core rank (r × r × r × r), chosen so the adapter parameters are close. */
  readonly loraR: number;
  readonly floraR: number;
  readonly lr: number;
  readonly steps: number;
  readonly batchSize: number;
  readonly pretrainSteps: number;
  readonly trainPerClass: number;
  readonly testPerClass: number;
  readonly threads: number | null;
  readonly fashionDir: string;
}

/** The adapters' configs at rank r: LoRA lora_alpha 2r (scaling 2), FLoRA scale 2 (alpha/r as `peft train` sets it). */
function adapterConfig(method: "lora" | "flora", r: number, head: "trained" | "frozen"): Record<string, unknown> {
  const task = head === "trained" ? { task_type: "SEQ_CLS" } : {};
  const targets = ["conv1", "conv2"];
  return method === "lora" ? { peft_type: "LORA", ...task, r, lora_alpha: 2 * r, target_modules: targets } : { peft_type: "FLORA", ...task, r, scale: 2, target_modules: targets };
}

async function pretrain(o: CnnBenchOptions, dir: string): Promise<{ model: LoadedModel; mnistAccuracy: number; seconds: number }> {
  const t0 = performance.now();
  const config = parseSimpleCnnConfig(BASE_RAW, "base config");
  const init: LoadedModel = { dir: "mnist-init", config, def: simpleCnn, weights: mapSource(initialWeights(1234), "initial weights") };
  const digits = mnistDigits();
  const train = balanced(digits, 0, 800);
  const test = balanced(digits, 800, 80);
  // full-rank LoRA (r = the kernel's rank bound) and the head in full: every weight can move; merged afterwards
  const pm = PeftModel.create(init, { peft_type: "LORA", task_type: "SEQ_CLS", r: 32, lora_alpha: 32, target_modules: ["conv1", "conv2"], rank_pattern: { conv1: 9 }, alpha_pattern: { conv1: 9 } }, "default", { seed: 0 });
  const session = o.threads !== null ? { threads: o.threads } : {};
  const trainer = new Trainer(pm, { task: "seq-cls", epochs: 100, batchSize: 64, lr: 3e-3, seed: 0, stopAfterSteps: o.pretrainSteps, session }, train);
  await trainer.fit();
  const acc = (await trainer.evaluate(test)).accuracy ?? Number.NaN;
  await trainer.release();
  const merged = pm.mergeAndUnload();
  const tensors = new Map([...simpleCnnShapes(config).keys()].map((k) => [k, merged.weights.get(k)]));
  writeFileSync(join(dir, "config.json"), JSON.stringify(simpleCnnConfigJson(config)));
  saveSafetensors(join(dir, "model.safetensors"), tensors);
  await pm.dispose();
  return { model: loadModel(dir), mnistAccuracy: acc, seconds: (performance.now() - t0) / 1000 };
}

export async function benchVariantsCnn(o: CnnBenchOptions) {
  const root = mkdtempSync(join(tmpdir(), "peft-bench-cnn-"));
  try {
    // the Fashion-MNIST files first: a missing package fails before the base model is trained
    const trainSet = fashion(o.fashionDir, "train");
    const testSet = fashion(o.fashionDir, "t10k");
    const base = await pretrain(o, root);
    progress(`base simple_cnn: MNIST test accuracy ${base.mnistAccuracy.toFixed(4)} after ${o.pretrainSteps} steps (${base.seconds.toFixed(1)} s)`);
    const train = balanced(trainSet, 0, o.trainPerClass);
    const test = balanced(testSet, 0, o.testPerClass);
    const session = o.threads !== null ? { threads: o.threads } : {};
    const runs: CnnRun[] = [];
    for (const head of o.heads) {
      for (const seed of o.seeds) {
        for (const method of o.methods) {
          const t0 = performance.now();
          const r = method === "lora" ? o.loraR : o.floraR;
          const pm = PeftModel.create(base.model, adapterConfig(method, r, head), "default", { seed });
          const adapterParams = [...pm.adapter("default").tensors].filter(([k]) => k.startsWith("conv")).reduce((n, [, t]) => n + t.shape.reduce((a, b) => a * b, 1), 0);
          const [trainableParams] = pm.getNbTrainableParameters();
          const trainer = new Trainer(pm, { task: "seq-cls", epochs: 100, batchSize: o.batchSize, lr: o.lr, seed, stopAfterSteps: o.steps, session }, train);
          await trainer.fit();
          const acc = (await trainer.evaluate(test)).accuracy ?? Number.NaN;
          await trainer.release();
          await pm.dispose();
          const seconds = (performance.now() - t0) / 1000;
          runs.push({ setup: head, method, seed, r, testAccuracy: acc, trainableParams, adapterParams, seconds });
          progress(`head ${head}, ${method} r ${r}, seed ${seed}: Fashion-MNIST test accuracy ${acc.toFixed(4)} (${adapterParams} adapter / ${trainableParams} trainable params, ${seconds.toFixed(1)} s)`);
        }
      }
    }
    const summary = o.heads.flatMap((head) =>
      o.methods.map((method) => {
        const rs = runs.filter((x) => x.setup === head && x.method === method);
        const { mean, se } = meanSe(rs.map((x) => x.testAccuracy));
        return { head, method, r: rs[0]!.r, meanAccuracy: mean, seAccuracy: se, perSeed: rs.map((x) => x.testAccuracy), adapterParams: rs[0]!.adapterParams, trainableParams: rs[0]!.trainableParams };
      }),
    );
    return { base: { mnistAccuracy: base.mnistAccuracy, pretrainSteps: o.pretrainSteps, seconds: base.seconds }, data: { train: train.length, test: test.length, labels: FASHION_LABELS }, runs, summary };
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
}

const list = (v: string): string[] => v.split(",").map((s) => s.trim()).filter((s) => s.length > 0);

export function register(program: Command): void {
  program
    .command("variants-cnn")
    .description("FLoRA vs LoRA on convolution kernels: a simple_cnn trained on MNIST digits, adapted to Fashion-MNIST over several seeds (docs/lora-variants.md)")
    .option("--seeds <list>", "seeds, comma-separated", (v: string) => list(v).map(Number), [0, 1, 2])
    .option("--head <list>", "trained (SEQ_CLS: the head is trained with the adapter) and/or frozen (the adapter alone)", list, ["trained", "frozen"])
    .option("--methods <list>", "lora and/or flora", list, ["lora", "flora"])
    .option("--lora-r <n>", "LoRA's rank (adapter parameters r·(in·9 + out) per layer: 804 at r 4, 1,608 at r 8)", positiveInt("--lora-r"), 4)
    .option("--flora-r <n>", "FLoRA's core rank r × r × r × r (r·Σ dims + r⁴ per layer: 820 at r 4, 1,635 at r 5)", positiveInt("--flora-r"), 4)
    .option("--lr <x>", "learning rate", Number, 5e-3)
    .option("--steps <n>", "optimizer steps per adaptation run", positiveInt("--steps"), 1000)
    .option("--batch-size <n>", "batch size", positiveInt("--batch-size"), 32)
    .option("--pretrain-steps <n>", "optimizer steps of the MNIST base model (batch 64)", positiveInt("--pretrain-steps"), 1500)
    .option("--train-per-class <n>", "Fashion-MNIST training images per class", positiveInt("--train-per-class"), 2000)
    .option("--test-per-class <n>", "Fashion-MNIST test images per class (t10k: 1,000 each, the whole test set)", positiveInt("--test-per-class"), 1000)
    .option("--threads <n>", "onnxruntime threads", positiveInt("--threads"))
    .option("--fashion-dir <dir>", "folder of the Fashion-MNIST IDX files (.gz)", FASHION_DIR)
    .action(async (a: { seeds: number[]; head: string[]; methods: string[]; loraR: number; floraR: number; lr: number; steps: number; batchSize: number; pretrainSteps: number; trainPerClass: number; testPerClass: number; threads?: number; fashionDir: string }) => {
      const heads = a.head.map((h) => {
        if (h !== "trained" && h !== "frozen") throw new Error(`variants-cnn: --head takes trained and/or frozen, got '${h}'`);
        return h;
      });
      const methods = a.methods.map((m) => {
        if (m !== "lora" && m !== "flora") throw new Error(`variants-cnn: --methods takes lora and/or flora, got '${m}'`);
        return m;
      });
      const r = await benchVariantsCnn({ ...a, heads, methods, threads: a.threads ?? null });
      emitResult({ bench: "variants-cnn", loraR: a.loraR, floraR: a.floraR, lr: a.lr, steps: a.steps, batchSize: a.batchSize, ...r, env: benchEnvironment({ threads: a.threads ?? 0, ep: "cpu" }) });
    });
}
