/** `peft demo`: LoRA on USE-lite vs a tuned frozen-encoder baseline on UCI sentiment. */
import type { Command } from "commander";
import { checkOutput } from "../../io/output.js";
import type { CliContext } from "../context.js";
import { addOutputOption } from "../output-option.js";
import { parseNonNegativeInt, parsePositiveInt, parsePositiveNumber } from "../train/options.js";
import { createProgress, formatSeconds } from "../train/progress.js";

interface RawDemoOptions {
  out: string;
  overwrite?: boolean;
  seed: number;
  threads?: number;
  maxExamples?: number;
  epochs?: number;
  maxSteps?: number;
  mfu: boolean;
  plot: boolean;
  progress: boolean;
  json?: boolean;
}

export function register(program: Command, ctx: CliContext): void {
  const cmd = program
    .command("demo")
    .description(
      "train a LoRA adapter on USE-lite for UCI sentiment and compare it with a frozen-encoder baseline (logistic regression on frozen embeddings) on the same seeded split; writes <out>/metrics.json",
    )
    .option("--seed <n>", "seed of the split, initialisation and data order", parseNonNegativeInt, 0)
    .option("--threads <n>", "onnxruntime intra-op threads (default: all cores)", parsePositiveInt)
    .option("--max-examples <n>", "quick run on a stratified subset of N sentences", parsePositiveInt)
    .option("--epochs <x>", "LoRA epochs (default: the demo recipe's 3)", parsePositiveNumber)
    .option("--max-steps <n>", "LoRA training steps (overrides its epochs; the learning-rate schedule spans them)", parsePositiveInt)
    .option("--no-mfu", "skip timing the matmul ceiling (achieved FLOP/s fraction)")
    .option("--no-plot", "do not render the LoRA run's curves")
    .option("--no-progress", "plain log lines even on a terminal")
    .option("--json", "print metrics.json to stdout");
  addOutputOption(cmd, "output folder", { kind: "dir", required: false, defaultValue: "runs/demo" });
  cmd.action(async (o: RawDemoOptions) => {
      checkOutput({ out: o.out, kind: "folder", inputs: [], overwrite: o.overwrite === true });
      const { runDemo } = await import("../../runs/demo.js");
      const r = await runDemo(
        {
          out: o.out,
          seed: o.seed,
          mfu: o.mfu,
          plot: o.plot,
          ...(o.threads !== undefined ? { threads: o.threads } : {}),
          ...(o.maxExamples !== undefined ? { maxExamples: o.maxExamples } : {}),
          ...(o.epochs !== undefined ? { epochs: o.epochs } : {}),
          ...(o.maxSteps !== undefined ? { maxSteps: o.maxSteps } : {}),
        },
        createProgress(ctx, o.progress ? {} : { tty: false }),
      );
      const m = r.metrics;
      if (o.json) {
        ctx.json(m);
        return;
      }
      const pct = (x: number) => `${(100 * x).toFixed(2)}%`;
      ctx.out(`UCI sentiment, seed ${m.seed}: ${m.split.counts.train} train / ${m.split.counts.validation} validation / ${m.split.counts.test} test sentences`);
      ctx.out(`frozen encoder + logistic regression  test accuracy ${pct(m.frozen_accuracy)}  (${m.frozen_trainable_params.toLocaleString("en-US")} trainable params)`);
      ctx.out(`LoRA r=8 all-linear + head             test accuracy ${pct(m.lora_accuracy)}  (${m.lora_trainable_params.toLocaleString("en-US")} trainable params = ${pct(m.trainable_fraction)} of the model)`);
      ctx.out(`difference ${((m.lora_accuracy - m.frozen_accuracy) * 100).toFixed(2)} points; ${formatSeconds(m.seconds)} in all`);
      const mfu = m.achieved_fraction_of_ceiling !== null ? `, ${pct(m.achieved_fraction_of_ceiling)} of the ${m.matmul_ceiling_gflops!.toFixed(1)} GFLOP/s matmul ceiling` : "";
      ctx.out(`LoRA training ${m.lora_sentences_per_second.toFixed(1)} sentences/s, ${m.lora_achieved_gflops.toFixed(1)} GFLOP/s${mfu}`);
      ctx.out(`wrote ${o.out}/metrics.json and the adapter in ${o.out}/lora/`);
    });
}
