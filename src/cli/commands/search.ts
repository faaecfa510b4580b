/**
 * `peft search`: multi-objective Bayesian optimisation of the adapter configuration (method,
 * layers, rank per module group, …) — trials in this process, or as BullMQ jobs on `peft worker`s
 * with `--queue`. See docs/search.md.
 */
import type { Command } from "commander";
import { checkOutput } from "../../io/output.js";
import { redactQueueUrl } from "../../queue/connection.js";
import type { TrialExecutor } from "../../search/run.js";
import type { CliContext } from "../context.js";
import { parseNonNegativeInt, parsePositiveInt, parsePositiveNumber } from "../train/options.js";

interface RawSearchOptions {
  space: string;
  data: string;
  model: string;
  out: string;
  trials: number;
  initial?: number;
  seed?: number;
  queue?: string;
  parallel?: number;
  timeBudget?: number;
  threads?: number;
  importance?: string;
  keepLayers?: number;
  json?: boolean;
}

const fmt = (v: number | null | undefined) => (v === null || v === undefined ? "–" : Number.isInteger(v) ? v.toLocaleString("en-US") : v.toFixed(4));

export function register(program: Command, ctx: CliContext): void {
  program
    .command("search")
    .description("search adapter configurations (method, layers, rank per module group) for the Pareto front of validation accuracy vs trainable parameters: Sobol' design, then Bayesian optimisation (GP per objective, expected hypervolume improvement); writes pareto.json, pareto.svg/png and the Pareto configs")
    .requiredOption("--space <file>", "search space, YAML or JSON (see examples/search-space.yaml)")
    .requiredOption("--data <data>", "built-in dataset or a .jsonl/.csv file (as peft train)")
    .requiredOption("--model <model>", "'use-lite' or a model folder")
    .requiredOption("--out <dir>", "search folder; running the same search again continues it (finished trials are kept)")
    .requiredOption("--trials <n>", "trials in all", parsePositiveInt)
    .option("--initial <n>", "Sobol' initial design size (default max(4, 2 × (dimensions + 1)))", parsePositiveInt)
    .option("--seed <n>", "seed of the design and the optimiser (default: the space's train seed)", parseNonNegativeInt)
    .option("--queue <url>", "run trials as BullMQ jobs on 'peft worker's at this Redis URL")
    .option("--parallel <n>", "trials in flight at once (default 1; with --queue, 2)", parsePositiveInt)
    .option("--time-budget <seconds>", "propose no trial after this many seconds", parsePositiveNumber)
    .option("--threads <n>", "onnxruntime intra-op threads of each trial", parsePositiveInt)
    .option("--importance <run>", "layer-importance prior: a 'peft train' run whose importance.json ranks the layers; only the --keep-layers most important are searched, the others never adapted")
    .option("--keep-layers <k>", "with --importance: layers kept (default: half of them, rounded up)", parsePositiveInt)
    .option("--json", "print pareto.json's summary as JSON")
    .action(async (o: RawSearchOptions) => {
      // an existing search folder is continued (never replaced); one that is, holds or lies inside an input is refused
      checkOutput({ out: o.out, kind: "folder", inputs: [o.space, o.model, o.data, o.importance], overwrite: true });
      const [{ readSearchSpace, applyLayerPrior }, { InProcessTrialExecutor, runSearch }] = await Promise.all([import("../../search/space.js"), import("../../search/run.js")]);
      let space = readSearchSpace(o.space);
      if (o.importance !== undefined) {
        const { runLayerRanking } = await import("../../runs/importance.js");
        const ranking = runLayerRanking(o.importance);
        const n = space.layers ? ranking.filter((l) => space.layers!.includes(l)).length : ranking.length;
        space = applyLayerPrior(space, ranking, o.keepLayers ?? Math.ceil(n / 2));
        ctx.err(`peft search: layer prior from ${o.importance} (most important first: ${ranking.join(", ")}); searching layers ${space.layers!.join(", ")}`);
      }
      // BullMQ is loaded only with --queue
      const queue = o.queue !== undefined ? new (await import("../../queue/client.js")).JobQueue(o.queue) : null;
      try {
        if (queue) await queue.ready();
        const executor: TrialExecutor = queue ? new (await import("../../queue/search-kind.js")).QueueTrialExecutor(queue) : new InProcessTrialExecutor(o.out);
        if (queue) ctx.err(`peft search: trials go to the queue at ${redactQueueUrl(o.queue!)}; start 'peft worker --queue …' processes to run them`);
        const result = await runSearch(
          {
            space,
            model: o.model,
            data: o.data,
            out: o.out,
            trials: o.trials,
            ...(o.initial !== undefined ? { initial: o.initial } : {}),
            ...(o.seed !== undefined ? { seed: o.seed } : {}),
            parallel: o.parallel ?? (queue ? 2 : 1),
            timeBudgetSeconds: o.timeBudget ?? null,
            threads: o.threads ?? null,
          },
          executor,
          {
            finished: (t) =>
              ctx.err(
                t.status === "done"
                  ? `trial ${t.index}: ${t.label} → ${space.objectives.map((k) => `${k} ${fmt(k === "accuracy" ? t.result!.accuracy : k === "loss" ? t.result!.loss : k === "trainable_params" ? t.result!.trainableParams : t.result!.stepSeconds)}`).join(", ")}`
                  : `trial ${t.index}: ${t.label} failed: ${t.error}`,
              ),
          },
        );
        if (o.json) {
          ctx.json({ out: result.out, hypervolume: result.hypervolume, ran: result.ran, trials: result.trials.length, pareto: result.pareto });
          return;
        }
        ctx.out(`search     ${result.trials.length} trials (${result.ran} run now) in ${result.out}; hypervolume ${result.hypervolume.toFixed(4)}`);
        ctx.out("pareto front:");
        for (const p of result.pareto) ctx.out(`  trial ${String(p.trial).padStart(3)}  ${Object.entries(p.metrics).map(([k, v]) => `${k} ${fmt(v)}`).join("  ")}  ${p.label}  → ${p.adapterConfig}`);
        ctx.out(`files      ${result.files.join(", ")}`);
      } finally {
        await queue?.close();
      }
    });
}
