/** `peft eval`: accuracy / F1 (classification) or loss / perplexity (LM) of an adapter on a dataset split. */
import { type Command, Option } from "commander";
import { checkOutput } from "../../io/output.js";
import type { CliContext } from "../context.js";
import { parseSplitFractions } from "../../runs/data.js";
import type { EvalSplit } from "../../runs/evaluate.js";
import { addOutputOption } from "../output-option.js";
import { parseNonNegativeInt, parsePositiveInt } from "../train/options.js";
import { formatSplitMetrics } from "../train/report.js";

interface RawEvalOptions {
  adapter: string;
  data: string;
  model?: string;
  split: EvalSplit;
  batchSize: number;
  threads?: number;
  maxLength?: number;
  seed?: number;
  fractions?: string;
  json?: boolean;
  out?: string;
  overwrite?: boolean;
}

export function register(program: Command, ctx: CliContext): void {
  const cmd = program
    .command("eval")
    .description("evaluate an adapter on a dataset split: accuracy and macro-F1 (classification) or loss and perplexity (causal LM)")
    .requiredOption("--adapter <dir>", "PEFT adapter folder (e.g. the --out of peft train)")
    .requiredOption("--data <data>", "built-in dataset or a .jsonl/.csv file")
    .option("--model <model>", "'use-lite' or a model folder (default: the model the run was trained on)")
    .addOption(new Option("--split <name>", "which split to score").choices(["train", "validation", "test", "all"]).default("test"))
    .option("--batch-size <n>", "examples per batch", parsePositiveInt, 32)
    .option("--threads <n>", "onnxruntime intra-op threads", parsePositiveInt)
    .option("--max-length <n>", "truncate texts to N tokens (default: the run's setting)", parsePositiveInt)
    .option("--seed <n>", "split seed (default: the run's seed for its own dataset, else 0)", parseNonNegativeInt)
    .option("--fractions <f>", "train,validation,test fractions of the split (default: the run's, else 0.8,0.1,0.1)")
    .option("--json", "print the report as JSON");
  addOutputOption(cmd, "also write the report as JSON to this file", { kind: "file", required: false }).action(async (o: RawEvalOptions) => {
      if (o.out !== undefined) checkOutput({ out: o.out, kind: "file", inputs: [o.adapter, o.data, o.model], overwrite: o.overwrite === true });
      const [{ runEvaluation }, { writeJsonAtomic }] = await Promise.all([import("../../runs/evaluate.js"), import("../../runs/run-dir.js")]);
      const r = await runEvaluation({
        adapter: o.adapter,
        data: o.data,
        split: o.split,
        batchSize: o.batchSize,
        ...(o.model !== undefined ? { model: o.model } : {}),
        ...(o.threads !== undefined ? { threads: o.threads } : {}),
        ...(o.maxLength !== undefined ? { maxLength: o.maxLength } : {}),
        ...(o.seed !== undefined ? { seed: o.seed } : {}),
        ...(o.fractions !== undefined ? { fractions: parseSplitFractions(o.fractions, "peft eval", "--fractions") } : {}),
      });
      if (o.out !== undefined) writeJsonAtomic(o.out, r);
      if (o.json) ctx.json(r);
      else ctx.out(`${r.split} split of ${r.data} with ${r.adapter} on ${r.model}: ${formatSplitMetrics({ ...r })}`);
    });
}
