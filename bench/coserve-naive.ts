/**
 * The naive alternative of `npm run bench -- coserve`: the fine-tuning job in a process of its own
 * beside the serving process, competing for the same cores. Started by `bench/coserve.ts` with
 * fork (argument: JSON { shape, job, threads }); messages: `free` starts training and counting,
 * `pause` pauses and answers { tokens } trained since `free`, `exit` ends the process.
 */
import { PeftModel } from "../src/peft/peft-model.js";
import { type CoserveJob, SwitchGate, addJobAdapter, trainUntil } from "./coserve.js";
import { type Gpt2Shape, randomGpt2 } from "./models.js";

const { shape, job, threads } = JSON.parse(process.argv[2]!) as { shape: Gpt2Shape; job: CoserveJob; threads: number };
const pm = new PeftModel(randomGpt2(shape, 3));
addJobAdapter(pm, job);
const gate = new SwitchGate();
let done = false;
let window: { stop(): Promise<number> } | null = null;
const training = trainUntil(pm, gate, job, shape.vocab, threads, () => done);

process.on("message", (m: { cmd: "free" | "pause" | "exit" }) => {
  if (m.cmd === "free") {
    window = gate.count();
    gate.set({ kind: "free" });
  } else if (m.cmd === "pause") {
    gate.set({ kind: "paused" });
    const w = window;
    window = null;
    void (w ? w.stop() : Promise.resolve(0)).then((tokens) => process.send!({ tokens }));
  } else {
    done = true;
    gate.set({ kind: "free" });
    void training.then(async () => {
      await pm.dispose();
      process.disconnect();
      process.exit(0);
    });
  }
});

// compiled and warm: one step, then paused until the first window
await gate.ready;
gate.set({ kind: "free" });
await new Promise((r) => setTimeout(r, 1000));
gate.set({ kind: "paused" });
process.send!({ ready: true });
