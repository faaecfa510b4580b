import assert from "node:assert/strict";
import { after, describe, test } from "node:test";
import { loadModel } from "../models/load.js";
import { PeftModel } from "../peft/peft-model.js";
import type { TrainingGate } from "../train/gate.js";
import { type TokenizedExample, Trainer, type TrainerConfig } from "../train/trainer.js";
import { fixturePath } from "../util/paths.js";
import { Rng } from "../util/rng.js";
import { CoServeScheduler } from "./coserve.js";
import { Decoder } from "./decoder.js";
import { GenerationEngine, type GenerationRequest } from "./engine.js";

const GPT2 = loadModel(fixturePath("peft-parity", "gpt2", "base"));
const JOB_LORA = { peft_type: "LORA", r: 4, lora_alpha: 8, target_modules: ["c_attn", "c_fc"], lora_dropout: 0.1, fan_in_fan_out: true };

function corpus(n: number, seed: number): TokenizedExample[] {
  const rng = new Rng(seed);
  return Array.from({ length: n }, () => {
    const start = 3 + rng.int(8);
    return { ids: Array.from({ length: 4 + rng.int(9) }, (_, j) => 3 + ((start + 5 * j) % 90)) };
  });
}

const CFG: TrainerConfig = { task: "causal-lm", epochs: 3, batchSize: 6, gradientAccumulation: 2, lr: 5e-3, seed: 5, maxGradNorm: 1 };

/** The model a server serves: the base with a served LoRA, and the job's trainable adapter made active for the trainer. */
function servedModel(): PeftModel {
  const pm = new PeftModel(GPT2);
  pm.loadAdapter(fixturePath("peft-parity", "gpt2", "lora"), "served");
  pm.addAdapter("job", JOB_LORA, { seed: 9 });
  pm.setAdapter("job");
  return pm;
}

/** The same job on a model of its own, trained without a gate. */
async function trainedAlone(data: readonly TokenizedExample[]): Promise<PeftModel> {
  const pm = PeftModel.create(GPT2, JOB_LORA, "job", { seed: 9 });
  await new Trainer(pm, CFG, data).fit();
  return pm;
}

function maxDelta(a: PeftModel, b: PeftModel): number {
  let d = 0;
  for (const [k, t] of a.adapter("job").tensors) {
    const x = t.data as Float32Array;
    const y = b.adapter("job").tensors.get(k)!.data as Float32Array;
    for (let i = 0; i < x.length; i++) d = Math.max(d, Math.abs(x[i]! - y[i]!));
  }
  return d;
}

/**
 * Watches decode runs and training slices: counts any moment both are in flight. Decoder runs
 * are observed by wrapping `Decoder.prototype.step`; slices by wrapping the gate.
 */
class OverlapProbe {
  decoding = 0;
  training = false;
  overlaps = 0;
  decodeRuns = 0;
  grants: { want: number; rows: number }[] = [];
  private readonly original = Decoder.prototype.step;

  constructor() {
    const original = this.original;
    const enter = () => {
      if (this.training) this.overlaps++;
      this.decoding++;
      this.decodeRuns++;
    };
    const leave = () => this.decoding--;
    Decoder.prototype.step = async function (this: Decoder, ...args: Parameters<Decoder["step"]>) {
      enter();
      try {
        return await original.apply(this, args);
      } finally {
        leave();
      }
    };
  }

  wrap(gate: TrainingGate): TrainingGate {
    return {
      acquire: async (want, tokensPerRow) => {
        const rows = await gate.acquire(want, tokensPerRow);
        if (this.decoding > 0) this.overlaps++;
        this.training = true;
        this.grants.push({ want, rows });
        return rows;
      },
      release: () => {
        this.training = false;
        gate.release();
      },
    };
  }

  restore(): void {
    Decoder.prototype.step = this.original;
  }
}

const REQUESTS: GenerationRequest[] = [
  { promptIds: [5, 17, 42], adapter: "served", params: { maxNewTokens: 12, ignoreEos: true } },
  { promptIds: [1, 2, 3, 4, 5, 6, 7], adapter: null, params: { maxNewTokens: 9, ignoreEos: true } },
  { promptIds: [99, 3], adapter: "served", params: { maxNewTokens: 10, doSample: true, temperature: 1.3, topK: 40, seed: 3, ignoreEos: true } },
  { promptIds: [8, 30, 31, 2], adapter: null, params: { maxNewTokens: 14, doSample: true, topP: 0.9, seed: 11, ignoreEos: true } },
];

describe("co-serving: fine-tuning between decode iterations (GenerationEngine.trainingGate)", () => {
  const cleanup: (() => Promise<void> | void)[] = [];
  after(async () => {
    for (const c of cleanup) await c();
  });

  test("a job co-served with live traffic equals the job run alone (max |Δparam| ≤ 1e-6); the traffic's tokens are those without training; no decode run overlaps a training slice", async () => {
    const data = corpus(24, 2);
    const alone = await trainedAlone(data);
    const pm = servedModel();
    const engine = new GenerationEngine(pm, { maxSlots: 4, prefillTokenBudget: 8 });
    cleanup.push(() => engine.close());
    const reference = await Promise.all(REQUESTS.map((r) => engine.generate(r)));
    const servedBefore = pm.adapterVersion("served");

    const probe = new OverlapProbe();
    cleanup.push(() => probe.restore());
    // a generous target: the tiny model's iterations take a few ms, so most iterations leave slack
    const gate = probe.wrap(engine.trainingGate({ itlSloMs: 200 }));
    let training = true;
    const fit = new Trainer(pm, { ...CFG, gate }, data).fit().finally(() => (training = false));
    // live traffic for the whole job: waves of the reference requests
    let rounds = 0;
    while (training || rounds < 2) {
      rounds++;
      const results = await Promise.all(REQUESTS.map((r) => engine.generate(r)));
      results.forEach((res, i) => assert.deepEqual(res.tokenIds, reference[i]!.tokenIds, `request ${i} in round ${rounds}`));
    }
    await fit;
    probe.restore();

    const stats = engine.coServeStats()!;
    console.log(`# ${rounds} rounds of traffic, ${probe.decodeRuns} decoder runs; training: ${stats.slices} slices (${stats.busySlices} between decode iterations), ${stats.rows} rows, ${stats.trainingMs.toFixed(0)} ms`);
    assert.equal(probe.overlaps, 0, "a decode run and a training slice were in flight together");
    assert.ok(stats.busySlices > 0, "some slices ran between the iterations of live requests");
    assert.equal(stats.slices, probe.grants.length);
    for (const g of probe.grants) assert.ok(g.rows >= 1 && g.rows <= g.want);
    const d = maxDelta(alone, pm);
    console.log(`# co-served vs alone: max |Δparam| ${d.toExponential(2)}`);
    assert.ok(d <= 1e-6, `max |Δparam| ${d}`);
    assert.equal(pm.adapterVersion("served"), servedBefore, "the served adapter was not touched");

    // the trained adapter is served at once, as the job's own model generates
    const soloEngine = new GenerationEngine(alone, { maxSlots: 2 });
    cleanup.push(() => soloEngine.close());
    const req: GenerationRequest = { promptIds: [7, 12, 17], adapter: "job", params: { maxNewTokens: 10, ignoreEos: true } };
    const [served, solo] = await Promise.all([engine.generate(req), soloEngine.generate(req)]);
    assert.deepEqual(served.tokenIds, solo.tokenIds);
    // and differs from the base (the job did train)
    assert.notDeepEqual(served.tokenIds, (await engine.generate({ ...req, adapter: null })).tokenIds);
  });

  test("without traffic training runs in whole micro-batches; with no slack under the target it waits for the traffic to pass (inference first)", async () => {
    const data = corpus(12, 4);
    const pm = servedModel();
    const engine = new GenerationEngine(pm, { maxSlots: 4 });
    cleanup.push(() => engine.close());
    await engine.warmup();

    // idle: after the cost model's first probes, every slice is the whole micro-batch
    const idleProbe = new OverlapProbe();
    const idle = await new Trainer(pm, { ...CFG, epochs: 2, gate: idleProbe.wrap(engine.trainingGate({ itlSloMs: 500 })) }, data).fit();
    idleProbe.restore();
    assert.equal(idle.steps, 2);
    assert.equal(engine.coServeStats()!.busySlices, 0);
    const tail = idleProbe.grants.slice(-2);
    assert.ok(tail.every((g) => g.rows === g.want), `last grants ${JSON.stringify(tail)}`);

    // a second engine whose target leaves no room: while requests run, the job gets no slice
    const tight = new GenerationEngine(pm, { maxSlots: 4 });
    cleanup.push(() => tight.close());
    await tight.warmup();
    const inner = tight.trainingGate({ itlSloMs: 0.001, marginMs: 0 });
    let asked!: () => void;
    const firstAsk = new Promise<void>((r) => (asked = r));
    const gate: TrainingGate = {
      acquire: (want, tokens) => {
        asked();
        return inner.acquire(want, tokens);
      },
      release: () => inner.release(),
    };
    // continuous traffic from three clients (staggered lengths, so the engine is rarely idle)
    let stop = false;
    let served = 0;
    const client = async (k: number) => {
      while (!stop) {
        await tight.generate({ promptIds: [3 + k, 9], params: { maxNewTokens: 15 + 7 * k, ignoreEos: true } });
        served++;
      }
    };
    const clients = [0, 1, 2].map(client);
    const fit = new Trainer(pm, { ...CFG, epochs: 1, maxSteps: 1, gate }, data).fit();
    await firstAsk;
    const until = served + 12;
    while (served < until) await new Promise((r) => setTimeout(r, 5));
    const during = tight.coServeStats()!;
    stop = true;
    await Promise.all(clients);
    const r = await fit;
    const s = tight.coServeStats()!;
    console.log(`# no slack: ${during.starvedIterations} iterations without a slice while the job waited; then ${s.slices} idle slices`);
    assert.equal(s.busySlices, 0, "no slice between the iterations of live requests");
    assert.ok(during.starvedIterations > 0, "iterations ran while the job waited");
    assert.equal(r.steps, 1, "the job finished once the traffic was gone");
    assert.ok(s.slices > 0);
  });

  test("scheduler: slices sized by the measured cost to the slack, none without room, a one-row re-probe after `reprobeAfter` starved iterations, free grants when idle", async () => {
    let busy = true;
    let clock = 0; // slices are timed on this clock: each takes what the test says
    const sched = new CoServeScheduler({ busy: () => busy, now: () => clock }, { itlSloMs: 100, marginMs: 0, reprobeAfter: 3 });
    const gate = sched.gate();
    const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
    // busy engine: nothing is granted until an iteration ends
    let got = gate.acquire(8, 10);
    let granted = -1;
    void got.then((n) => (granted = n));
    await sleep(5);
    assert.equal(granted, -1);
    // first slice: one row, warms up and is not measured; second: one row, measured (40 ms)
    const iteration = sched.afterIteration(50);
    assert.equal(await got, 1);
    assert.ok(sched.training);
    gate.release();
    await iteration;
    got = gate.acquire(8, 10);
    void sched.afterIteration(50);
    assert.equal(await got, 1);
    clock += 40;
    gate.release();
    // 5 ms of slack has no room for a 40 ms row: no slice, twice; the third time a one-row re-probe
    got = gate.acquire(8, 10);
    granted = -1;
    void got.then((n) => (granted = n));
    await sched.afterIteration(95);
    await sched.afterIteration(95);
    await sleep(1);
    assert.equal(granted, -1);
    assert.equal(sched.stats().starvedIterations, 2);
    void sched.afterIteration(95);
    assert.equal(await got, 1);
    assert.equal(sched.stats().reprobes, 1);
    // 90 ms of slack: 2 rows of 40 ms (the median per token over 40 ms and the re-probe's 40 ms)
    clock += 40;
    gate.release();
    got = gate.acquire(8, 10);
    void sched.afterIteration(10);
    assert.equal(await got, 2);
    clock += 80;
    // a whole target: 2.5 rows fit, 2 granted
    gate.release();
    got = gate.acquire(8, 10);
    void sched.afterIteration(0);
    assert.equal(await got, 2);
    // the engine waits for the slice before its next iteration
    let waited = false;
    const before = sched.beforeIteration().then(() => (waited = true));
    await sleep(1);
    assert.equal(waited, false);
    gate.release();
    await before;
    // idle engine: granted at once, without an iteration
    busy = false;
    assert.ok((await gate.acquire(8, 10)) >= 1);
    gate.release();
    await assert.rejects(gate.acquire(0, 10), RangeError);
    assert.throws(() => new CoServeScheduler({ busy: () => false }, { itlSloMs: 0 }), RangeError);
  });
});
