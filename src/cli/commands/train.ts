/** `peft train`: train an adapter of any registered method on a dataset and write a run folder. */
import { type Command, Option } from "commander";
import { ConfigError } from "../../errors.js";
import { checkOutput } from "../../io/output.js";
import type { CliContext } from "../context.js";
import { DEFAULT_SPLIT, parseSplitFractions } from "../../runs/data.js";
import { TRAIN_DEFAULTS } from "../../runs/defaults.js";
import type { ScheduleName, TrainMethod, TrainRunOptions } from "../../runs/train.js";
import { addOutputOption } from "../output-option.js";
import {
  parseFraction,
  parseNonNegativeInt,
  parseNonNegativeNumber,
  parsePositiveInt,
  parsePositiveNumber,
  parseTargetSpec,
  parseConfigAssignment,
} from "../train/options.js";
import { formatTrainSummary } from "../train/report.js";
import { createProgress } from "../train/progress.js";
import type { TargetSpec } from "../../tuners/common/target.js";

interface RawTrainOptions {
  model: string;
  data: string;
  out: string;
  method: TrainMethod;
  r: number;
  alpha: number;
  dropout: number;
  target?: TargetSpec;
  feedforward?: TargetSpec;
  numVirtualTokens: number;
  adapterConfig?: Record<string, unknown>;
  loraplusLrRatio?: number;
  init?: string;
  epochs: number;
  lr: number;
  batchSize: number;
  seed: number;
  weightDecay: number;
  warmupRatio: number;
  schedule: ScheduleName;
  gradAccum: number;
  maxGradNorm: number;
  evalEvery?: number;
  patience?: number;
  maxLength?: number;
  threads?: number;
  maxExamples?: number;
  maxSteps?: number;
  split: string;
  resume?: boolean;
  overwrite?: boolean;
  plot: boolean;
  progress: boolean;
  json?: boolean;
  dtype: "float32" | "float16";
  groupByLength?: boolean;
}

/** `--init`: PEFT's `init_lora_weights` names of the initialisations that read the base weight. */
function parseLoraInit(v: string): string {
  if (v === "pissa" || v === "olora" || /^pissa_niter_[1-9]\d*$/u.test(v)) return v;
  throw new ConfigError("peft train", "--init", `'${v}': expected pissa, pissa_niter_K (K ≥ 1) or olora`);
}

/** `--method`'s choices are the tuner registry's methods, plugins included: loaded only when `peft train` runs or shows its help. */
export async function prepare(cmd: Command): Promise<void> {
  const { trainMethods } = await import("../../tuners/registry.js");
  cmd.options.find((o) => o.long === "--method")?.choices(trainMethods());
}

export function register(program: Command, ctx: CliContext): void {
  const d = TRAIN_DEFAULTS;
  const cmd = program
    .command("train")
    .description("train an adapter (--method: LoRA, (IA)³, prompt tuning, …) on a labelled dataset; writes the adapter (PEFT format), metrics.json, config.json and loss curves to --out")
    .requiredOption("--model <model>", "'use-lite' (Universal Sentence Encoder lite) or a model folder (config.json + model.safetensors + tokenizer.json)")
    .requiredOption("--data <data>", "built-in dataset (uci-sentiment, uci-amazon, uci-imdb, uci-yelp) or a .jsonl/.csv file with text and label")
    .addOption(new Option("--method <method>", "adapter type (PEFT method)").default(d.method)) // choices: prepare()
    .option("--r <n>", "rank of low-rank methods (LoRA, LoHa, LoKr, AdaLoRA…)", parsePositiveInt, d.r)
    .option("--alpha <x>", "alpha of low-rank methods (scale alpha/r)", parsePositiveNumber, d.alpha)
    .option("--dropout <p>", "adapter dropout", parseFraction, d.dropout)
    .option("--num-virtual-tokens <n>", "prompt-learning methods: virtual tokens", parsePositiveInt, 20)
    .option(
      "--adapter-config <key=value>",
      "set an adapter_config.json field (PEFT's name, JSON value), e.g. --adapter-config decompose_both=true; repeatable",
      parseConfigAssignment,
    )
    .option("--target <modules>", "modules to adapt: 'all-linear' or comma-separated names (default: the model's usual targets, e.g. query,value)", parseTargetSpec)
    .option("--feedforward <modules>", "(IA)³ only: feed-forward modules among the targets (comma-separated names)", parseTargetSpec)
    .option("--loraplus-lr-ratio <x>", "LoRA+: learning rate of the low-rank B factors (and 1-D tensors) = lr × x (PEFT's create_loraplus_optimizer; 16 in the paper)", parsePositiveNumber)
    .option("--init <kind>", "LoRA: initialise from the base weight, rewriting it as PEFT does — pissa (top-r SVD), pissa_niter_K (randomised SVD, K iterations) or olora (QR); sets init_lora_weights", parseLoraInit)
    .option("--epochs <n>", "training epochs (may be fractional)", parsePositiveNumber, d.epochs)
    .option("--lr <x>", "peak learning rate (AdamW)", parsePositiveNumber, d.lr)
    .option("--batch-size <n>", "examples per micro-batch", parsePositiveInt, d.batchSize)
    .option("--seed <n>", "seed of the split, the adapter and head initialisation, the data order and dropout", parseNonNegativeInt, d.seed)
    .option("--weight-decay <x>", "AdamW weight decay (not on biases and norms)", parseNonNegativeNumber, d.weightDecay)
    .option("--warmup-ratio <x>", "fraction of the steps with a linear warm-up", parseFraction, d.warmupRatio)
    .addOption(new Option("--schedule <kind>", "learning-rate schedule after warm-up").choices(["linear", "cosine", "constant"]).default(d.schedule))
    .option("--grad-accum <n>", "micro-batches per optimizer step", parsePositiveInt, d.gradAccum)
    .option("--max-grad-norm <x>", "clip the gradient norm (0: off)", parseNonNegativeNumber, d.maxGradNorm)
    .option("--eval-every <n>", "evaluate on the validation split every N steps (default: each epoch)", parsePositiveInt)
    .option("--patience <n>", "early stopping: stop after N evaluations without improvement and keep the best adapter", parsePositiveInt)
    .option("--max-length <n>", "truncate texts to N tokens", parsePositiveInt)
    .option("--threads <n>", "onnxruntime intra-op threads (default: all cores)", parsePositiveInt)
    .addOption(
      new Option("--dtype <dtype>", "compute dtype; float16: mixed precision (float16 model, float32 master weights, dynamic loss scaling) — for GPUs, slower on the CPU")
        .choices(["float32", "float16"])
        .default("float32"),
    )
    .option("--group-by-length", "batch texts of similar length together (transformers' group_by_length): less padding, faster epochs")
    .option("--max-examples <n>", "use a stratified random subset of N examples (quick runs)", parsePositiveInt)
    .option("--max-steps <n>", "total optimizer steps, as transformers' max_steps: overrides --epochs; the learning-rate schedule spans them", parsePositiveInt)
    .option("--split <fractions>", "train,validation,test fractions of the seeded stratified split", `${DEFAULT_SPLIT.train},${DEFAULT_SPLIT.validation},${DEFAULT_SPLIT.test}`)
    .option("--resume", "continue the run in --out from its checkpoint (same options)")
    .option("--no-plot", "do not render curves.svg / curves.png")
    .option("--no-progress", "plain log lines even on a terminal")
    .option("--json", "print metrics.json to stdout instead of the summary");
  addOutputOption(cmd, "run folder to write (e.g. runs/my-run)", { kind: "dir" });
  cmd.action(async (o: RawTrainOptions) => {
      if (o.resume && o.overwrite) throw new ConfigError("peft train", "--resume", "cannot be combined with --overwrite; pick one");
      // an existing run in --out is refused (or resumed / replaced) by the run layer, with a run-specific message
      checkOutput({ out: o.out, kind: "folder", inputs: [o.model, o.data], overwrite: true });
      if (o.init !== undefined && o.method !== "lora") throw new ConfigError("peft train", "--init", `applies to --method lora, not ${o.method}`);
      const adapterConfig = o.init !== undefined ? { ...(o.adapterConfig ?? {}), init_lora_weights: o.init } : o.adapterConfig;
      const opts: TrainRunOptions = {
        model: o.model,
        data: o.data,
        out: o.out,
        method: o.method,
        r: o.r,
        alpha: o.alpha,
        dropout: o.dropout,
        target: o.target ?? null,
        feedforward: o.feedforward ?? null,
        numVirtualTokens: o.numVirtualTokens,
        ...(adapterConfig ? { adapterConfig } : {}),
        ...(o.loraplusLrRatio !== undefined ? { loraplusLrRatio: o.loraplusLrRatio } : {}),
        epochs: o.epochs,
        lr: o.lr,
        batchSize: o.batchSize,
        seed: o.seed,
        weightDecay: o.weightDecay,
        warmupRatio: o.warmupRatio,
        schedule: o.schedule,
        gradAccum: o.gradAccum,
        maxGradNorm: o.maxGradNorm,
        evalEvery: o.evalEvery ?? null,
        patience: o.patience ?? null,
        maxLength: o.maxLength ?? null,
        threads: o.threads ?? null,
        maxExamples: o.maxExamples ?? null,
        maxSteps: o.maxSteps ?? null,
        split: parseSplitFractions(o.split),
        mode: o.resume ? "resume" : o.overwrite ? "overwrite" : "new",
        plot: o.plot,
        dtype: o.dtype,
        groupByLength: o.groupByLength ?? false,
      };
      const { runTraining } = await import("../../runs/train.js");
      const r = await runTraining(opts, createProgress(ctx, o.progress ? {} : { tty: false }));
      if (o.json) ctx.json(r.metrics);
      else ctx.out(formatTrainSummary(r));
    });
}
