/** `peft atlas`: learn aTLAS coefficients over task vectors from `peft train` runs and write a run folder. */
import { type Command, Option } from "commander";
import type { AtlasObjective } from "../../compose/atlas/composer.js";
import type { AtlasMode } from "../../compose/atlas/layout.js";
import { checkOutput } from "../../io/output.js";
import type { CliContext } from "../context.js";
import type { AtlasRunOptions } from "../../runs/atlas/run.js";
import { ATLAS_DEFAULTS } from "../../runs/defaults.js";
import { DEFAULT_SPLIT, parseSplitFractions } from "../../runs/data.js";
import { addOutputOption } from "../output-option.js";
import { formatAtlasSummary } from "../atlas/report.js";
import { parseNonNegativeInt, parseNonNegativeNumber, parsePositiveInt, parsePositiveNumber } from "../train/options.js";
import { createProgress } from "../train/progress.js";

interface RawAtlasOptions {
  model: string;
  taskVectors: string;
  head?: string;
  data: string;
  out: string;
  mode: AtlasMode;
  objective: AtlasObjective;
  shots?: number;
  epochs: number;
  lr?: number;
  weightDecay: number;
  batchSize: number;
  seed: number;
  threads?: number;
  split: string;
  maxExamples?: number;
  maxLength?: number;
  keepBest?: boolean;
  saveModel?: boolean;
  overwrite?: boolean;
  progress: boolean;
  json?: boolean;
}

export function register(program: Command, ctx: CliContext): void {
  const d = ATLAS_DEFAULTS;
  const cmd = program
    .command("atlas")
    .description(
      "aTLAS: compose the task vectors of 'peft train' runs with learned per-block coefficients (λ) on a target dataset; writes atlas_coefficients.json, metrics.json (λ = 0 vs fitted accuracy) and, with --save-model, the composed model to --out",
    )
    .requiredOption("--model <model>", "the base model the runs were trained on: 'use-lite' or a model folder")
    .requiredOption("--task-vectors <runs>", "comma-separated 'peft train' run folders (or PEFT LoRA adapter folders); each gives ΔW = scaling·B·A per adapted module, the classifier left out")
    .option("--head <run>", "run folder whose trained classifier is the target's head, kept fixed (must be trained on --data's labels; default: the first --task-vectors run)")
    .requiredOption("--data <data>", "target dataset: built-in name (uci-sentiment, uci-amazon, uci-imdb, uci-yelp) or a .jsonl/.csv file; split as 'peft train' splits it")
    .addOption(new Option("--mode <mode>", "anisotropic: one λ per task vector and block (parameter tensor); isotropic: one λ per task vector").choices(["anisotropic", "isotropic"]).default(d.mode))
    .addOption(
      new Option("--objective <objective>", "cross-entropy on the labelled training examples, or entropy of the predictions on their texts alone (test-time adaptation)")
        .choices(["cross-entropy", "entropy"])
        .default(d.objective),
    )
    .option("--shots <k>", "keep k examples per class of the train split (seeded; default: the whole train split)", parsePositiveInt)
    .option("--epochs <n>", "passes over the training examples (may be fractional)", parsePositiveNumber, d.epochs)
    .option("--lr <x>", "peak learning rate of λ (AdamW, cosine schedule; default 0.1, or 0.02 with --objective entropy)", parsePositiveNumber)
    .option("--weight-decay <x>", "AdamW weight decay on λ (pulls it towards 0, the base model)", parseNonNegativeNumber, d.weightDecay)
    .option("--batch-size <n>", "examples per step (capped at the number of training examples)", parsePositiveInt, d.batchSize)
    .option("--seed <n>", "seed of the split (use the runs' seed to keep their test split held out), the shots, a fresh head and the data order", parseNonNegativeInt, d.seed)
    .option("--threads <n>", "onnxruntime intra-op threads (default: all cores)", parsePositiveInt)
    .option("--split <fractions>", "train,validation,test fractions of the seeded stratified split (as 'peft train')", `${DEFAULT_SPLIT.train},${DEFAULT_SPLIT.validation},${DEFAULT_SPLIT.test}`)
    .option("--max-examples <n>", "use a stratified random subset of N examples before splitting (as 'peft train')", parsePositiveInt)
    .option("--max-length <n>", "truncate texts to N tokens", parsePositiveInt)
    .option("--keep-best", "evaluate on the validation split after every epoch and keep the best λ (the paper's protocol)")
    .option("--save-model", "also write the composed model (config.json + model.safetensors + tokenizer files) to <out>/model")
    .option("--no-progress", "plain log lines even on a terminal")
    .option("--json", "print metrics.json to stdout instead of the summary");
  addOutputOption(cmd, "run folder to write (e.g. runs/atlas-yelp)", { kind: "dir" });
  cmd.action(async (o: RawAtlasOptions) => {
      const [{ runAtlas }, { parseRunList }] = await Promise.all([import("../../runs/atlas/run.js"), import("../../runs/atlas/sources.js")]);
      const taskVectors = parseRunList(o.taskVectors);
      checkOutput({ out: o.out, kind: "folder", inputs: [o.model, o.data, o.head, ...taskVectors], overwrite: true }); // an existing run: refused by runAtlas unless --overwrite
      const opts: AtlasRunOptions = {
        model: o.model,
        taskVectors,
        head: o.head ?? null,
        data: o.data,
        out: o.out,
        mode: o.mode,
        objective: o.objective,
        shots: o.shots ?? null,
        epochs: o.epochs,
        lr: o.lr ?? null,
        weightDecay: o.weightDecay,
        batchSize: o.batchSize,
        seed: o.seed,
        threads: o.threads ?? null,
        split: parseSplitFractions(o.split, "peft atlas"),
        maxExamples: o.maxExamples ?? null,
        maxLength: o.maxLength ?? null,
        keepBest: o.keepBest ?? false,
        saveModel: o.saveModel ?? false,
        overwrite: o.overwrite ?? false,
      };
      const r = await runAtlas(opts, createProgress(ctx, o.progress ? {} : { tty: false }));
      if (o.json) ctx.json(r.metrics);
      else ctx.out(formatAtlasSummary(r));
    });
}
