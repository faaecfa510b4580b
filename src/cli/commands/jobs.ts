/**
 * `peft jobs list|show|cancel --url URL`: the fine-tuning jobs of a running `peft serve` (or any
 * OpenAI-compatible server), printed as a table, a job card or JSON. See docs/fine-tuning.md.
 */
import type { Command } from "commander";
import type { FineTuningJob, JobsClient } from "../../runs/finetune/index.js";
import type { CliContext } from "../context.js";
import { parsePositiveInt } from "../train/options.js";

interface ServerOptions {
  url: string;
  apiKey?: string;
  json?: boolean;
}

async function client(o: ServerOptions): Promise<JobsClient> {
  const { JobsClient } = await import("../../runs/finetune/client.js");
  const apiKey = o.apiKey ?? process.env.PEFT_API_KEY;
  return new JobsClient({ url: o.url, ...(apiKey ? { apiKey } : {}) });
}

const time = (t: number | null) => (t === null ? "-" : new Date(t * 1000).toISOString().replace(/\.\d+Z$/u, "Z"));

function table(rows: string[][]): string[] {
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
  return rows.map((r) => r.map((cell, c) => (c === r.length - 1 ? cell : cell.padEnd(widths[c]!))).join("  "));
}

function card(j: FineTuningJob): string[] {
  const h = j.hyperparameters;
  return [
    `id                ${j.id}`,
    `status            ${j.status}`,
    `model             ${j.model}`,
    `fine_tuned_model  ${j.fine_tuned_model ?? "-"}`,
    `training_file     ${j.training_file}${j.validation_file ? ` (validation ${j.validation_file})` : ""}`,
    `hyperparameters   n_epochs ${h.n_epochs}, batch_size ${h.batch_size}, learning_rate_multiplier ${h.learning_rate_multiplier}`,
    ...(j.peft ? [`peft              ${j.peft.method}, r ${j.peft.r}, alpha ${j.peft.lora_alpha}, targets ${JSON.stringify(j.peft.target_modules ?? "default")}`] : []),
    `seed              ${j.seed}`,
    `created_at        ${time(j.created_at)}`,
    `finished_at       ${time(j.finished_at)}`,
    `trained_tokens    ${j.trained_tokens ?? "-"}`,
    ...(j.error ? [`error             [${j.error.code}] ${j.error.message}`] : []),
  ];
}

function withServer(cmd: Command): Command {
  return cmd
    .requiredOption("--url <url>", "the server's base URL (http://host:port)")
    .option("--api-key <key>", "the server's API key (default: $PEFT_API_KEY)")
    .option("--json", "print the server's JSON");
}

export function register(program: Command, ctx: CliContext): void {
  const jobs = program.command("jobs").description("list, show and cancel the fine-tuning jobs of a server (peft serve)");
  withServer(jobs.command("list").description("the server's fine-tuning jobs, newest first"))
    .option("--limit <n>", "at most this many jobs", parsePositiveInt, 20)
    .option("--after <id>", "the jobs after this one (paging)")
    .action(async (o: ServerOptions & { limit: number; after?: string }) => {
      const page = await (await client(o)).list({ limit: o.limit, ...(o.after !== undefined ? { after: o.after } : {}) });
      if (o.json) return ctx.json(page);
      if (page.data.length === 0) return ctx.out("no fine-tuning jobs");
      const rows = [["ID", "STATUS", "MODEL", "FINE_TUNED_MODEL", "CREATED"], ...page.data.map((j) => [j.id, j.status, j.model, j.fine_tuned_model ?? "-", time(j.created_at)])];
      for (const line of table(rows)) ctx.out(line);
      if (page.has_more) ctx.out(`… more: peft jobs list --url ${o.url} --after ${page.data.at(-1)!.id}`);
    });
  withServer(jobs.command("show").description("one job and its latest events").argument("<id>", "the job id (ftjob-…)"))
    .option("--events <n>", "how many of the latest events to print", parsePositiveInt, 10)
    .action(async (id: string, o: ServerOptions & { events: number }) => {
      const c = await client(o);
      const job = await c.get(id);
      const events = await c.events(id, o.events);
      if (o.json) return ctx.json({ ...job, events: events.data });
      for (const line of card(job)) ctx.out(line);
      if (events.data.length > 0) {
        ctx.out("events (oldest first):");
        for (const e of [...events.data].reverse()) ctx.out(`  ${time(e.created_at)}  ${e.level.padEnd(5)}  ${e.message}`);
      }
    });
  withServer(jobs.command("cancel").description("cancel a queued or running job").argument("<id>", "the job id (ftjob-…)")).action(async (id: string, o: ServerOptions) => {
    const job = await (await client(o)).cancel(id);
    if (o.json) return ctx.json(job);
    ctx.out(`${job.id}: ${job.status === "cancelled" ? "cancelled" : `cancelling (status ${job.status}; it stops after its current step)`}`);
  });
}
