/**
 * float16 training against float32: one LoRA step's loss and gradients (float32 master weights,
 * loss scaling), on the CPU and with every float16 value rounded as on a device with float16
 * kernels (`emulateHalf`), and short training runs that must end at the float32 run's loss.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import * as G from "../graph/api.js";
import { grad } from "../graph/autodiff.js";
import { emulateHalf } from "../graph/half-emulation.js";
import { loadModel } from "../models/load.js";
import { PeftModel } from "../peft/peft-model.js";
import { CompiledGraph } from "../runtime/session.js";
import type { Tensor } from "../tensor.js";
import { fixturePath } from "../util/paths.js";
import { Rng } from "../util/rng.js";
import { GradScaler, LOSS_SCALE_INPUT, LossScaledStep } from "./grad-scaler.js";
import { AdamW, excludeFromWeightDecay } from "./optim/index.js";
import { type LossTask, taskLoss } from "./loss.js";
import { type Batch, GRAD_PREFIX, TrainStep } from "./step.js";
import { type TokenizedExample, Trainer, type TrainerConfig, collate } from "./trainer.js";

type Arch = "bert" | "gpt2" | "llama";
const TASK: Record<Arch, LossTask> = { bert: "seq-cls", gpt2: "causal-lm", llama: "causal-lm" };
const TARGETS: Record<Arch, string[]> = { bert: ["query", "value"], gpt2: ["c_attn"], llama: ["q_proj", "v_proj"] };

function loraModel(arch: Arch, init: "gaussian" | true = "gaussian"): PeftModel {
  const raw = {
    peft_type: "LORA",
    r: 4,
    lora_alpha: 8,
    target_modules: TARGETS[arch],
    lora_dropout: 0,
    // gaussian: B is random too, so every LoRA tensor gets a gradient
    init_lora_weights: init,
    ...(arch === "gpt2" ? { fan_in_fan_out: true } : {}),
    ...(arch === "bert" ? { task_type: "SEQ_CLS" } : {}),
  };
  return PeftModel.create(loadModel(fixturePath("peft-parity", arch, "base")), raw, "default", { seed: 3 });
}

/** Random ids of uneven lengths (padding in every batch), labels alternating. */
function randomExamples(n: number, seed: number): TokenizedExample[] {
  const rng = new Rng(seed);
  return Array.from({ length: n }, (_, i) => ({ ids: Array.from({ length: 10 - (i % 3) }, () => 3 + rng.int(120)), label: i % 2 }));
}

/** Relative error of the concatenated gradient vector: ‖a − b‖ / ‖b‖. */
function relError(a: ReadonlyMap<string, ArrayLike<number>>, b: ReadonlyMap<string, ArrayLike<number>>): number {
  let num = 0;
  let den = 0;
  for (const [n, gb] of b) {
    const ga = a.get(n)!;
    for (let i = 0; i < gb.length; i++) {
      num += (ga[i]! - gb[i]!) ** 2;
      den += gb[i]! ** 2;
    }
  }
  return Math.sqrt(num / den);
}

interface Runner {
  run(batch: Batch, params: ReadonlyMap<string, Tensor>, scale: number): Promise<{ loss: number; grads: Map<string, Float32Array> }>;
  release(): Promise<void>;
  readonly initial: ReadonlyMap<string, Tensor>;
}

/** A float16 step (scaled gradients) run with float16 rounding of every value. */
async function emulatedRunner(pm: PeftModel, task: LossTask): Promise<Runner> {
  const built = pm.buildGraph({ training: true, dropout: false, dtype: "float16" });
  const g = built.graph;
  const labels = g.input("labels", "int64", task === "causal-lm" ? ["batch", "seq"] : ["batch"]);
  const loss = taskLoss(task, built.outputs.logits, labels);
  g.output(loss, "loss");
  const names = [...built.trainable.keys()];
  const seed = g.input(LOSS_SCALE_INPUT, "float32", []);
  grad(loss, names.map((n) => g.inputs.find((v) => v.name === n)!), { seed: G.cast(seed, loss.dtype) }).forEach((gv, i) => g.output(gv, GRAD_PREFIX + names[i]!));
  const s = await CompiledGraph.create(emulateHalf(g), {});
  return {
    initial: built.trainable,
    async run(batch, params, scale) {
      const feeds: Record<string, Tensor> = { input_ids: batch.inputIds, attention_mask: batch.attentionMask, labels: batch.labels };
      feeds[LOSS_SCALE_INPUT] = { dtype: "float32", shape: [], data: Float32Array.of(scale) };
      for (const n of names) feeds[n] = params.get(n) ?? built.trainable.get(n)!;
      const out = await s.run(feeds);
      return { loss: Number(out.loss!.data[0]), grads: new Map(names.map((n) => [n, out[GRAD_PREFIX + n]!.data as Float32Array])) };
    },
    release: () => s.release(),
  };
}

/** Loss and unscaled gradients of one emulated float16 step. */
async function emulatedStep(pm: PeftModel, task: LossTask, batch: Batch, scale: number): Promise<{ loss: number; grads: Map<string, Float64Array> }> {
  const r = await emulatedRunner(pm, task);
  const out = await r.run(batch, new Map(), scale);
  await r.release();
  return { loss: out.loss, grads: new Map([...out.grads].map(([n, g]) => [n, Float64Array.from(g, (v) => v / scale)])) };
}

/**
 * `steps` AdamW steps (lr 1e-2, constant) over `data` in order, batches of 8, with dynamic loss
 * scaling when `scaler` is given: the per-step losses.
 */
async function trainLoop(runner: Runner, data: readonly TokenizedExample[], task: LossTask, steps: number, scaler: GradScaler | null): Promise<number[]> {
  const params = new Map([...runner.initial].map(([n, t]) => [n, Float32Array.from(t.data as Float32Array)]));
  const opt = new AdamW(excludeFromWeightDecay([...params].map(([name, d]) => ({ name, data: d }))), { lr: 1e-2, weightDecay: 0.01 });
  const losses: number[] = [];
  for (let k = 0; k < steps; k++) {
    const start = (k * 8) % data.length;
    const batch = collate(data.slice(start, start + 8), task);
    const current = new Map([...params].map(([n, d]) => [n, { dtype: "float32", shape: runner.initial.get(n)!.shape, data: d } as Tensor]));
    const r = await runner.run(batch, current, scaler?.scale ?? 1);
    losses.push(r.loss);
    if (!scaler || scaler.unscaleAndUpdate(r.grads)) opt.step(r.grads, 1e-2);
  }
  return losses;
}

describe("float16 LoRA step vs float32", () => {
  for (const arch of ["bert", "gpt2", "llama"] as const) {
    test(`${arch}: loss and gradients`, async () => {
      const pm = loraModel(arch);
      const task = TASK[arch];
      const batch = collate(randomExamples(8, 4), task);
      const ref = await TrainStep.create(pm, { task, dropout: false });
      const scaler = new GradScaler({ kind: "static", scale: 1024 });
      const half = await LossScaledStep.create(pm, scaler, { task, dropout: false, dtype: "float16" });
      const params = new Map<string, Tensor>();
      const a = await ref.run(batch, params);
      const b = await half.run(batch, params);
      await ref.release();
      await half.release();
      assert.ok(scaler.unscale(b.grads), "finite");
      const cpu = { loss: Math.abs(b.loss - a.loss) / a.loss, grad: relError(b.grads, a.grads) };
      const emu = await emulatedStep(pm, task, batch, 1024);
      const emulated = { loss: Math.abs(emu.loss - a.loss) / a.loss, grad: relError(emu.grads, a.grads) };
      console.log(
        `# ${arch} LoRA step, float16 vs float32: loss rel ${cpu.loss.toExponential(2)} (emulated ${emulated.loss.toExponential(2)}), ` +
          `gradient vector rel ${cpu.grad.toExponential(2)} (emulated ${emulated.grad.toExponential(2)})`,
      );
      for (const e of [cpu, emulated]) {
        assert.ok(e.loss <= 1e-3, `loss ${e.loss}`);
        assert.ok(e.grad <= 5e-3, `gradients ${e.grad}`);
      }
    });
  }
});

describe("emulated float16 training (float16 rounding of every value) ends where float32 ends", () => {
  for (const arch of ["gpt2", "llama"] as const) {
    test(`${arch}: 50 steps`, async () => {
      const data = corpus(32, 5);
      const ref = await TrainStep.create(loraModel(arch, true), { task: "causal-lm", dropout: false });
      const f32: Runner = {
        initial: ref.initial,
        release: () => ref.release(),
        run: async (b, p) => {
          const r = await ref.run(b, p);
          return { loss: r.loss, grads: r.grads as Map<string, Float32Array> };
        },
      };
      const a = await trainLoop(f32, data, "causal-lm", 50, null);
      await f32.release();
      const emu = await emulatedRunner(loraModel(arch, true), "causal-lm");
      const scaler = new GradScaler();
      const b = await trainLoop(emu, data, "causal-lm", 50, scaler);
      await emu.release();
      const mean = (xs: number[]) => xs.reduce((x, y) => x + y) / xs.length;
      console.log(`# ${arch} emulated float16: loss ${b[0]!.toFixed(4)} → ${mean(b.slice(-10)).toFixed(4)} vs float32 ${a[0]!.toFixed(4)} → ${mean(a.slice(-10)).toFixed(4)}; final loss scale 2^${Math.log2(scaler.scale)}`);
      assert.ok(mean(a.slice(-10)) < a[0]! - 0.1, "float32 learned");
      assert.ok(Math.abs(mean(b.slice(-10)) - mean(a.slice(-10))) <= 0.01);
    });
  }
});

/** Repeated short patterns, learnable by the tiny LMs (the trainer tests' corpus). */
function corpus(n: number, seed: number): TokenizedExample[] {
  const rng = new Rng(seed);
  return Array.from({ length: n }, () => {
    const start = 3 + rng.int(8);
    return { ids: Array.from({ length: 10 }, (_, j) => 3 + ((start + 3 * j) % 40)) };
  });
}

/** Two classes of token ranges (the trainer tests' classification toy). */
function classes(n: number, seed: number): TokenizedExample[] {
  const rng = new Rng(seed);
  return Array.from({ length: n }, () => {
    const label = rng.int(2);
    return { ids: Array.from({ length: 6 }, () => (label === 0 ? 5 + rng.int(20) : 60 + rng.int(20))), label };
  });
}

describe("float16 training runs end where float32 runs end", () => {
  for (const arch of ["gpt2", "llama", "bert"] as const) {
    test(`${arch}: ${arch === "bert" ? "24" : "50"} steps`, async () => {
      const task = TASK[arch];
      const cfg: TrainerConfig =
        task === "causal-lm"
          ? { task, epochs: 100, maxSteps: 50, batchSize: 8, lr: 1e-2, seed: 0, schedule: "constant", dropout: false }
          : { task, epochs: 4, batchSize: 8, lr: 5e-2, seed: 1, dropout: false };
      const train = task === "causal-lm" ? corpus(32, 5) : classes(48, 3);
      const val = task === "causal-lm" ? corpus(16, 11) : classes(24, 4);
      const runs = [];
      for (const dtype of ["float32", "float16"] as const) {
        const r = await new Trainer(loraModel(arch, true), { ...cfg, dtype }, train, val).fit();
        const losses = r.history.steps.map((s) => s.loss);
        runs.push({ dtype, first: losses[0]!, last: losses.slice(-10).reduce((x, y) => x + y) / 10, eval: r.history.evals.at(-1)!, skipped: r.history.steps.filter((s) => s.skipped).length });
      }
      const [f32, f16] = runs as [(typeof runs)[0], (typeof runs)[0]];
      console.log(
        `# ${arch}: train loss ${f32.first.toFixed(4)} → ${f32.last.toFixed(4)} (float32) vs ${f16.first.toFixed(4)} → ${f16.last.toFixed(4)} (float16, ${f16.skipped} steps skipped); ` +
          `eval loss ${f32.eval.loss.toFixed(4)} vs ${f16.eval.loss.toFixed(4)}${f32.eval.accuracy !== undefined ? `, accuracy ${f32.eval.accuracy} vs ${f16.eval.accuracy}` : ""}`,
      );
      assert.ok(f32.last < f32.first - 0.05, "the float32 run learned");
      assert.ok(Math.abs(f16.last - f32.last) <= 0.01, `train loss ${f16.last} vs ${f32.last}`);
      assert.ok(Math.abs(f16.eval.loss - f32.eval.loss) <= 0.01, `eval loss ${f16.eval.loss} vs ${f32.eval.loss}`);
      if (f32.eval.accuracy !== undefined) assert.ok(Math.abs(f16.eval.accuracy! - f32.eval.accuracy) <= 1 / 24 + 1e-9, "accuracy within one example");
    });
  }
});
