/** `peft intrinsic-dim`: train in random subspaces θ = θ₀ + P·d over a sweep of d and report d90 (docs/search.md). */
import { type Command, Option } from "commander";
import { ConfigError } from "../../errors.js";
import { checkOutput } from "../../io/output.js";
import { DEFAULT_SPLIT, parseSplitFractions } from "../../runs/data.js";
import { INTRINSIC_DIM_DEFAULTS, PROJECTION_KINDS, type ProjectionKind } from "../../search/intrinsic/defaults.js";
import type { IntrinsicDimOptions } from "../../search/intrinsic/run.js";
import type { CliContext } from "../context.js";
import { addOutputOption } from "../output-option.js";
import { parseNonNegativeInt, parsePositiveInt, parsePositiveNumber } from "../train/options.js";
import { createProgress } from "../train/progress.js";

interface RawOptions {
  model: string;
  data: string;
  out: string;
  dims: string;
  projection: ProjectionKind | "auto";
  params?: string;
  epochs: number;
  batchSize: number;
  lr: number;
  fullLr: number;
  fullAccuracy?: number;
  threshold: number;
  seed: number;
  threads?: number;
  split: string;
  maxExamples?: number;
  maxLength?: number;
  overwrite?: boolean;
  progress: boolean;
  json?: boolean;
}

function parseDims(s: string): number[] {
  const parts = s.split(",").map((x) => x.trim());
  const dims = parts.map(Number);
  if (parts.length === 0 || dims.some((d, i) => parts[i] === "" || !Number.isInteger(d) || d < 1)) {
    throw new ConfigError("peft intrinsic-dim", "--dims", `expected comma-separated positive integers such as 10,100,1000, got '${s}'`);
  }
  return dims;
}

export function register(program: Command, ctx: CliContext): void {
  const d = INTRINSIC_DIM_DEFAULTS;
  const cmd = program
    .command("intrinsic-dim")
    .description(
      "intrinsic dimension (Li et al. 2018): train the model's parameters in random subspaces θ = θ₀ + P·d for each --dims value and once in full, report d90 (the smallest d reaching 90 % of the full training's validation accuracy); writes intrinsic_dim.json and intrinsic_dim.svg/png",
    )
    .requiredOption("--model <model>", "'use-lite' or a model folder (a sequence classifier)")
    .requiredOption("--data <data>", "built-in dataset or a .jsonl/.csv file (as peft train)")
    .requiredOption("--dims <list>", "subspace dimensions d, comma-separated (e.g. 10,100,1000)")
    .addOption(new Option("--projection <kind>", "P: dense Gaussian (small D·d), Fastfood (memory O(D)), or auto (dense while D·d ≤ 16M)").choices([...PROJECTION_KINDS].filter((k) => k !== "identity")).default(d.projection))
    .option("--params <regexes>", "comma-separated regular expressions selecting θ by parameter name (default: every parameter except embedding tables)")
    .option("--epochs <n>", "passes over the train split per configuration (may be fractional)", parsePositiveNumber, d.epochs)
    .option("--batch-size <n>", "examples per step", parsePositiveInt, d.batchSize)
    .option("--lr <x>", "learning rate of d (AdamW, constant)", parsePositiveNumber, d.lr)
    .option("--full-lr <x>", "learning rate of the full training (P = I)", parsePositiveNumber, d.fullLr)
    .option("--full-accuracy <x>", "skip the full training and use this validation accuracy as the reference", parsePositiveNumber)
    .option("--threshold <x>", "fraction of the full training's accuracy that d must reach", parsePositiveNumber, d.threshold)
    .option("--seed <n>", "seed of the split, the head, the batch order and the projections", parseNonNegativeInt, d.seed)
    .option("--threads <n>", "onnxruntime intra-op threads (default: all cores)", parsePositiveInt)
    .option("--split <fractions>", "train,validation,test fractions (as 'peft train')", `${DEFAULT_SPLIT.train},${DEFAULT_SPLIT.validation},${DEFAULT_SPLIT.test}`)
    .option("--max-examples <n>", "use a stratified random subset of N examples before splitting", parsePositiveInt)
    .option("--max-length <n>", "truncate texts to N tokens", parsePositiveInt)
    .option("--no-progress", "plain log lines even on a terminal")
    .option("--json", "print intrinsic_dim.json to stdout instead of the summary");
  addOutputOption(cmd, "folder to write (e.g. runs/intrinsic-yelp)", { kind: "dir" });
  cmd.action(async (o: RawOptions) => {
    checkOutput({ out: o.out, kind: "folder", inputs: [o.model, o.data], overwrite: true }); // an existing run: refused by runIntrinsicDim unless --overwrite
    const opts: IntrinsicDimOptions = {
      model: o.model,
      data: o.data,
      out: o.out,
      dims: parseDims(o.dims),
      projection: o.projection,
      params: o.params !== undefined ? o.params.split(",").map((s) => s.trim()).filter((s) => s !== "") : null,
      epochs: o.epochs,
      batchSize: o.batchSize,
      lr: o.lr,
      fullLr: o.fullLr,
      fullAccuracy: o.fullAccuracy ?? null,
      threshold: o.threshold,
      seed: o.seed,
      threads: o.threads ?? null,
      split: parseSplitFractions(o.split, "peft intrinsic-dim"),
      maxExamples: o.maxExamples ?? null,
      maxLength: o.maxLength ?? null,
      overwrite: o.overwrite ?? false,
    };
    const { runIntrinsicDim } = await import("../../search/intrinsic/run.js");
    const r = await runIntrinsicDim(opts, createProgress(ctx, o.progress ? {} : { tty: false }));
    if (o.json) {
      ctx.json(r.results);
      return;
    }
    const res = r.results;
    const pct = (x: number | undefined) => (x === undefined ? "–" : x.toFixed(4));
    ctx.out(`θ          ${res.parameters.count.toLocaleString("en-US")} parameters in ${res.parameters.blocks.length} tensors`);
    ctx.out(`θ₀         validation accuracy ${pct(res.initial.validation?.accuracy)}`);
    ctx.out(`full       validation accuracy ${pct(res.referenceAccuracy ?? undefined)}${res.full && "given" in res.full ? " (given)" : ""}`);
    for (const p of res.points) ctx.out(`d = ${String(p.dim).padEnd(7)} validation ${pct(p.validation?.accuracy)}  test ${pct(p.test?.accuracy)}  (${p.projection}, ${p.seconds.toFixed(1)} s)`);
    ctx.out(`d${Math.round(res.threshold * 100)}        ${res.d90 ?? `not reached (no d reaches ${(res.threshold * (res.referenceAccuracy ?? 0)).toFixed(4)})`}`);
    ctx.out(`files      ${r.files.map((f) => `${r.out}/${f}`).join(", ")}`);
  });
}
