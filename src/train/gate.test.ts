import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { loadModel } from "../models/load.js";
import { PeftModel } from "../peft/peft-model.js";
import { fixturePath } from "../util/paths.js";
import { Rng } from "../util/rng.js";
import { collate } from "./batch.js";
import { type TrainingGate, lossWeights, sliceBatch } from "./gate.js";
import { patternCorpus, separableClasses } from "./tiny-llama.test-util.js";
import { type TokenizedExample, Trainer, type TrainerConfig } from "./trainer.js";

/** A gate that grants a random number of rows (1…wanted) and checks acquire/release pairing. */
class RandomGate implements TrainingGate {
  private readonly rng: Rng;
  held = false;
  grants: number[] = [];
  constructor(seed: number) {
    this.rng = new Rng(seed);
  }
  async acquire(wantRows: number, tokensPerRow: number): Promise<number> {
    assert.ok(!this.held, "acquire while a slice is held");
    assert.ok(wantRows >= 1 && tokensPerRow >= 1);
    await new Promise((r) => setImmediate(r));
    this.held = true;
    const n = 1 + this.rng.int(wantRows);
    this.grants.push(n);
    return n;
  }
  release(): void {
    assert.ok(this.held, "release without acquire");
    this.held = false;
  }
}

function maxDelta(a: PeftModel, b: PeftModel, name: string): number {
  let d = 0;
  const ta = a.adapter(name).tensors;
  for (const [k, t] of ta) {
    const x = t.data as Float32Array;
    const y = b.adapter(name).tensors.get(k)!.data as Float32Array;
    for (let i = 0; i < x.length; i++) d = Math.max(d, Math.abs(x[i]! - y[i]!));
  }
  return d;
}

const GPT2 = loadModel(fixturePath("peft-parity", "gpt2", "base"));
const gpt2Lora = () =>
  PeftModel.create(GPT2, { peft_type: "LORA", r: 4, lora_alpha: 8, target_modules: ["c_attn", "c_fc"], lora_dropout: 0.1, fan_in_fan_out: true }, "default", { seed: 4 });

describe("TrainingGate", () => {
  test("sliceBatch keeps the padded length; lossWeights count the labels the LM loss sees", () => {
    const b = collate([{ ids: [5, 6, 7] }, { ids: [8] }, { ids: [9, 10] }], "causal-lm", 0);
    assert.deepEqual(lossWeights(b, "causal-lm"), [2, 0, 1]);
    const s = sliceBatch(b, 1, 3);
    assert.deepEqual(s.inputIds.shape, [2, 3]);
    assert.deepEqual([...s.labels.data].map(Number), [8, -100, -100, 9, 10, -100]);
    const c = collate([{ ids: [1], label: 0 }, { ids: [2, 3], label: 1 }], "seq-cls", 0);
    assert.deepEqual([...sliceBatch(c, 1, 2).labels.data].map(Number), [1]);
    assert.deepEqual(lossWeights(c, "seq-cls"), [1, 1]);
  });

  test("causal LM with dropout and gradient accumulation: a run gated with random grants equals the ungated run (max |Δparam| ≤ 1e-6)", async () => {
    // lengths 2…12: rows weigh differently in the token-mean loss, and some slices are padding-heavy
    const data = patternCorpus(24, 3, (rng) => 2 + rng.int(11));
    const cfg: TrainerConfig = { task: "causal-lm", epochs: 2, batchSize: 6, gradientAccumulation: 2, lr: 5e-3, seed: 7, maxGradNorm: 1, dropout: true };
    const alone = gpt2Lora();
    const gatedModel = gpt2Lora();
    const gate = new RandomGate(11);
    const a = await new Trainer(alone, cfg, data, data.slice(0, 5)).fit();
    const b = await new Trainer(gatedModel, { ...cfg, gate }, data, data.slice(0, 5)).fit();
    assert.equal(b.steps, a.steps);
    assert.ok(gate.grants.some((n) => n < 6), "the gate split some batches");
    assert.ok(!gate.held);
    const d = maxDelta(alone, gatedModel, "default");
    console.log(`# gated vs ungated: ${gate.grants.length} slices, max |Δparam| ${d.toExponential(2)}, final loss ${a.history.steps.at(-1)!.loss.toFixed(5)} / ${b.history.steps.at(-1)!.loss.toFixed(5)}`);
    assert.ok(d <= 1e-6, `max |Δparam| ${d}`);
    // the adapter did train (a no-op run would also be "equal")
    const lb = alone.adapter("default").tensors.get("transformer.h.0.attn.c_attn.lora_B.weight")!.data as Float32Array;
    assert.ok(lb.some((v) => Math.abs(v) > 1e-4));
    for (let i = 0; i < a.history.steps.length; i++) assert.ok(Math.abs(a.history.steps[i]!.loss - b.history.steps[i]!.loss) < 1e-5);
    assert.ok(Math.abs(a.history.evals.at(-1)!.loss - b.history.evals.at(-1)!.loss) < 1e-5);
  });

  test("classification (BERT, dropout, SGD): gated with random grants equals ungated, evaluation included", async () => {
    const make = separableClasses(new Rng(2));
    const data: TokenizedExample[] = make(20);
    const bert = loadModel(fixturePath("peft-parity", "bert", "base"));
    const model = () => PeftModel.create(bert, { peft_type: "LORA", task_type: "SEQ_CLS", r: 4, lora_alpha: 8, target_modules: ["query", "value"], lora_dropout: 0.1 }, "default", { seed: 1 });
    const cfg: TrainerConfig = { task: "seq-cls", epochs: 2, batchSize: 5, lr: 5e-2, seed: 3, optimizer: "sgd", momentum: 0.9 };
    const x = model();
    const y = model();
    const val = make(7);
    const a = await new Trainer(x, cfg, data, val).fit();
    const b = await new Trainer(y, { ...cfg, gate: new RandomGate(5) }, data, val).fit();
    const d = maxDelta(x, y, "default");
    assert.ok(d <= 1e-6, `max |Δparam| ${d}`);
    assert.deepEqual(b.history.evals.map((e) => e.accuracy), a.history.evals.map((e) => e.accuracy));
  });
});
