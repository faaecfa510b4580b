/**
 * `peft worker`: runs queued jobs (training, fine-tuning, search trials) from a BullMQ queue on
 * Redis. Any number of workers on any machines share one queue; see docs/queue.md.
 */
import type { Command } from "commander";
import { redactQueueUrl } from "../../queue/connection.js";
import type { CliContext } from "../context.js";
import { parsePositiveInt } from "../train/options.js";

interface RawWorkerOptions {
  queue: string;
  state: string;
  adapterStore?: string;
  concurrency: number;
  queueName: string;
  lockDuration: number;
  maxStalled: number;
}

export function register(program: Command, ctx: CliContext): void {
  program
    .command("worker")
    .description("run queued jobs (train, fine-tune, search trials) from a Redis/BullMQ queue; a job whose worker dies is resumed by another from its last checkpoint")
    .requiredOption("--queue <url>", "Redis URL of the queue (redis://host:port[/db])")
    .requiredOption("--state <dir>", "folder of the jobs' checkpoints and run folders (share it between workers so a retried job resumes where it stopped)")
    .option("--adapter-store <dir>", "shared folder where finished adapters are published (one sub-folder per job)")
    .option("--concurrency <n>", "jobs run at once", parsePositiveInt, 1)
    .option("--queue-name <name>", "BullMQ queue name", "peft")
    .option("--lock-duration <ms>", "a job's lock lasts this long without renewal; a dead worker's job is retried after about this long", parsePositiveInt, 30_000)
    .option("--max-stalled <n>", "times a job may be put back after its worker died before it is failed", parsePositiveInt, 3)
    .action(async (o: RawWorkerOptions) => {
      const [{ startQueueWorker }, { withTimeout }] = await Promise.all([import("../../queue/worker.js"), import("../../queue/client.js")]);
      const worker = startQueueWorker({
        url: o.queue,
        stateDir: o.state,
        ...(o.adapterStore !== undefined ? { adapterStore: o.adapterStore } : {}),
        concurrency: o.concurrency,
        queueName: o.queueName,
        lockDurationMs: o.lockDuration,
        maxStalledCount: o.maxStalled,
        onLog: (line) => ctx.out(`peft worker ${worker.name}: ${line}`),
      });
      await new Promise<void>((done, fail) => {
        let stopping = false;
        const stop = (signal: string) => {
          if (stopping) {
            ctx.out(`peft worker ${worker.name}: ${signal} again: stopping now; running jobs go back to the queue`);
            void worker.close(true).then(done, fail);
            return;
          }
          stopping = true;
          ctx.out(`peft worker ${worker.name}: ${signal}: finishing running jobs, taking no new ones (send it again to stop at once)`);
          void worker.close(false).then(done, fail);
        };
        const onTerm = () => stop("SIGTERM");
        const onInt = () => stop("SIGINT");
        process.on("SIGTERM", onTerm);
        process.on("SIGINT", onInt);
        withTimeout(worker.ready(), 30_000, `Redis at ${redactQueueUrl(o.queue)}`).then(
          () => ctx.out(`peft worker ${worker.name}: ready on ${redactQueueUrl(o.queue)} (queue ${o.queueName}, concurrency ${o.concurrency}, kinds: ${worker.kinds.join(", ")})`),
          (e: unknown) => {
            process.off("SIGTERM", onTerm);
            process.off("SIGINT", onInt);
            void worker.close(true).finally(() => fail(e));
          },
        );
      });
      ctx.out(`peft worker ${worker.name}: stopped`);
    });
}
