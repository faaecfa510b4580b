import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import { syntheticTask, tinyModel, TINY_CONFIG } from "../../compose/atlas/tiny-model.test-util.js";
import { PeftError } from "../../errors.js";
import { Graph } from "../../graph/graph.js";
import { loadSafetensors } from "../../io/safetensors.js";
import { PeftModel } from "../../peft/peft-model.js";
import { gradCheck } from "../../runtime/gradcheck.js";
import { CompiledGraph } from "../../runtime/session.js";
import { type Tensor, toFloat32 } from "../../tensor.js";
import { fixtureModel, maxDiff } from "../../train/method-suite.test-util.js";
import { patternCorpus } from "../../train/tiny-llama.test-util.js";
import { Trainer } from "../../train/trainer.js";
import { type EncoderShape, encoderGraph, encoderOutput, encoderShapes } from "./encoder.js";

const t = (shape: number[], data: number[]): Tensor => ({ dtype: "float32", shape, data: Float32Array.from(data) });
const ids = (rows: number[][]): Tensor<"int64"> => ({ dtype: "int64", shape: [rows.length, rows[0]!.length], data: BigInt64Array.from(rows.flat(), BigInt) });
const sig = (v: number) => 1 / (1 + Math.exp(-v));
const relu = (v: number) => Math.max(0, v);

/** Runs `encoderGraph` on explicit tensors (float64). */
async function runEncoder(s: EncoderShape, tensors: Map<string, Tensor>): Promise<Float64Array> {
  const g = new Graph("enc");
  const to64 = (x: Tensor): Tensor => ({ dtype: "float64", shape: x.shape, data: Float64Array.from(toFloat32(x)) });
  g.output(encoderGraph(s, (k) => g.constant(to64(tensors.get(k)!)), null), "y");
  const cg = await CompiledGraph.create(g, { threads: 1 });
  const out = await cg.run({});
  await cg.release();
  return out.y!.data as Float64Array;
}

/** P-tuning MLP on 2 virtual tokens of width 2, hidden 2, written out by hand. */
const MLP: EncoderShape = { type: "MLP", n: 2, dim: 2, hidden: 2, layers: 2 };
const MLP_T = new Map<string, Tensor>([
  ["prompt_encoder.embedding.weight", t([2, 2], [1, -2, 0.5, 3])],
  ["prompt_encoder.mlp_head.0.weight", t([2, 2], [0.5, 0.25, -1, 0.5])],
  ["prompt_encoder.mlp_head.0.bias", t([2], [0.1, 0.2])],
  ["prompt_encoder.mlp_head.2.weight", t([2, 2], [1, -0.5, 0.75, 2])],
  ["prompt_encoder.mlp_head.2.bias", t([2], [0, -0.1])],
  ["prompt_encoder.mlp_head.4.weight", t([2, 2], [0.3, -0.7, 1.5, 0.2])],
  ["prompt_encoder.mlp_head.4.bias", t([2], [0.05, -0.05])],
]);
function mlpByHand(): number[] {
  const rows = [
    [1, -2],
    [0.5, 3],
  ];
  return rows.flatMap(([a, b]) => {
    const h1 = [relu(0.5 * a! + 0.25 * b! + 0.1), relu(-1 * a! + 0.5 * b! + 0.2)];
    const h2 = [relu(1 * h1[0]! - 0.5 * h1[1]! + 0), relu(0.75 * h1[0]! + 2 * h1[1]! - 0.1)];
    return [0.3 * h2[0]! - 0.7 * h2[1]! + 0.05, 1.5 * h2[0]! + 0.2 * h2[1]! - 0.05];
  });
}

/** A one-layer bidirectional LSTM of hidden size 1 over 2 virtual tokens of width 1, then the 2-layer MLP head. */
const LSTM: EncoderShape = { type: "LSTM", n: 2, dim: 1, hidden: 1, layers: 1 };
const LSTM_T = new Map<string, Tensor>([
  ["prompt_encoder.embedding.weight", t([2, 1], [0.7, -1.2])],
  // gates i, f, g, o
  ["prompt_encoder.lstm_head.weight_ih_l0", t([4, 1], [0.5, -0.3, 0.8, 0.2])],
  ["prompt_encoder.lstm_head.weight_hh_l0", t([4, 1], [0.1, 0.4, -0.6, 0.9])],
  ["prompt_encoder.lstm_head.bias_ih_l0", t([4], [0.05, 0.1, -0.05, 0])],
  ["prompt_encoder.lstm_head.bias_hh_l0", t([4], [0, 0.2, 0.1, -0.1])],
  ["prompt_encoder.lstm_head.weight_ih_l0_reverse", t([4, 1], [-0.4, 0.6, 0.3, -0.2])],
  ["prompt_encoder.lstm_head.weight_hh_l0_reverse", t([4, 1], [0.7, -0.1, 0.5, 0.3])],
  ["prompt_encoder.lstm_head.bias_ih_l0_reverse", t([4], [0.1, 0, 0.2, -0.3])],
  ["prompt_encoder.lstm_head.bias_hh_l0_reverse", t([4], [-0.1, 0.05, 0, 0.15])],
  ["prompt_encoder.mlp_head.0.weight", t([2, 2], [0.9, -0.4, 0.3, 1.1])],
  ["prompt_encoder.mlp_head.0.bias", t([2], [0.02, 0.5])],
  ["prompt_encoder.mlp_head.2.weight", t([1, 2], [1.3, -0.8])],
  ["prompt_encoder.mlp_head.2.bias", t([1], [0.07])],
]);
function lstmByHand(): number[] {
  const x = [0.7, -1.2];
  const cell = (wih: number[], whh: number[], b: number[], xt: number, h: number, c: number) => {
    const z = [0, 1, 2, 3].map((j) => wih[j]! * xt + whh[j]! * h + b[j]!);
    const c2 = sig(z[1]!) * c + sig(z[0]!) * Math.tanh(z[2]!);
    return { h: sig(z[3]!) * Math.tanh(c2), c: c2 };
  };
  const bf = [0.05, 0.3, 0.05, -0.1];
  const br = [0, 0.05, 0.2, -0.15];
  const f0 = cell([0.5, -0.3, 0.8, 0.2], [0.1, 0.4, -0.6, 0.9], bf, x[0]!, 0, 0);
  const f1 = cell([0.5, -0.3, 0.8, 0.2], [0.1, 0.4, -0.6, 0.9], bf, x[1]!, f0.h, f0.c);
  const r1 = cell([-0.4, 0.6, 0.3, -0.2], [0.7, -0.1, 0.5, 0.3], br, x[1]!, 0, 0);
  const r0 = cell([-0.4, 0.6, 0.3, -0.2], [0.7, -0.1, 0.5, 0.3], br, x[0]!, r1.h, r1.c);
  return [
    [f0.h, r0.h],
    [f1.h, r1.h],
  ].map(([a, b]) => {
    const h = [relu(0.9 * a! - 0.4 * b! + 0.02), relu(0.3 * a! + 1.1 * b! + 0.5)];
    return 1.3 * h[0]! - 0.8 * h[1]! + 0.07;
  });
}

describe("P-tuning", () => {
  test("the MLP and LSTM prompt encoders match explicit computations, in the graph and in what is saved", async () => {
    for (const [s, tensors, want] of [
      [MLP, MLP_T, mlpByHand()],
      [LSTM, LSTM_T, lstmByHand()],
    ] as const) {
      assert.deepEqual([...encoderShapes(s).keys()].sort(), [...tensors.keys()].sort(), "PEFT's parameter names");
      assert.ok(maxDiff(await runEncoder(s, tensors), want) < 1e-6, `${s.type} graph`);
      assert.ok(maxDiff(encoderOutput(s, tensors), want) < 1e-6, `${s.type} host (saved prompt_embeddings)`);
    }
  });

  test("finite-difference gradient check of the encoders' graphs", async () => {
    for (const [s, tensors] of [
      [MLP, MLP_T],
      [{ ...LSTM, n: 3, dim: 2, hidden: 2, layers: 2 } as EncoderShape, null],
    ] as const) {
      const shapes = encoderShapes(s);
      const keys = [...shapes.keys()];
      const inputs = keys.map((k, i) => ({ name: k, shape: shapes.get(k)!, values: tensors ? toFloat32(tensors.get(k)!) : Float32Array.from({ length: shapes.get(k)!.reduce((a, b) => a * b, 1) }, (_, j) => 0.6 * Math.sin(1.3 * j + i)) }));
      const r = await gradCheck(inputs, (...xs) => {
        const m = new Map(keys.map((k, i) => [k, xs[i]!]));
        return encoderGraph(s, (k) => m.get(k)!, null);
      });
      for (const [k, e] of Object.entries(r.maxError)) assert.ok(e <= 1e-6, `${s.type} d/d${k}: ${e}`);
    }
  });

  for (const type of ["MLP", "LSTM"] as const) {
    test(`${type}: trains on a tiny USE-lite (embeddings narrower than hidden); saves PEFT's prompt_embeddings (the encoder's output), which load to the same logits`, async () => {
      const model = tinyModel(2, 2);
      const cfg = { peft_type: "P_TUNING", task_type: "SEQ_CLS", num_virtual_tokens: 4, encoder_reparameterization_type: type, encoder_hidden_size: 6, encoder_num_layers: 1 };
      const pm = PeftModel.create(model, cfg, "default", { seed: 3 });
      const [trainable] = pm.getNbTrainableParameters();
      const d = TINY_CONFIG.embeddingSize;
      const head = 2 * TINY_CONFIG.hiddenSize + 2;
      const encoder = type === "MLP" ? 4 * d + (d * 6 + 6) + (6 * 6 + 6) + (6 * d + d) : 4 * d + 2 * (4 * 6 * (d + 6) + 8 * 6) + (12 * 12 + 12) + (12 * d + d);
      assert.equal(trainable, encoder + head, "PEFT counts the encoder's parameters (and the classifier copy)");
      const fit = await new Trainer(pm, { task: "seq-cls", epochs: 100, maxSteps: 12, batchSize: 16, lr: 0.02, seed: 0, schedule: "constant", dropout: false }, syntheticTask(16, 4)).fit();
      const losses = fit.history.steps.map((x) => x.loss);
      console.log(`# p-tuning ${type}: loss ${losses[0]!.toFixed(4)} → ${losses.at(-1)!.toFixed(4)}`);
      assert.ok(losses.at(-1)! < losses[0]! - 0.02, `loss fell: ${losses.join(", ")}`);
      const dir = mkdtempSync(join(tmpdir(), "peft-ptuning-"));
      try {
        pm.savePretrained(join(dir, "a"));
        const saved = JSON.parse(readFileSync(join(dir, "a", "adapter_config.json"), "utf8")) as Record<string, unknown>;
        assert.equal(saved.peft_type, "P_TUNING");
        assert.equal(saved.inference_mode, true);
        assert.equal(saved.token_dim, d);
        assert.equal(saved.encoder_reparameterization_type, type);
        assert.equal(saved.encoder_hidden_size, 6);
        assert.equal(saved.num_virtual_tokens, 4);
        assert.equal("with_encoder" in saved || "withEncoder" in saved, false);
        const file = loadSafetensors(join(dir, "a", "adapter_model.safetensors")).tensors;
        // PEFT's names: the prompt learning model holds the base model itself as `base_model`
        assert.deepEqual([...file.keys()].sort(), ["base_model.classifier.bias", "base_model.classifier.weight", "prompt_embeddings"], "no encoder parameter is saved");
        assert.deepEqual(file.get("prompt_embeddings")!.shape, [4, d]);
        const pm2 = PeftModel.fromPretrained(model, join(dir, "a"));
        assert.equal(pm2.getNbTrainableParameters()[0], 0);
        const x = ids([
          [9, 14, 30, 7, 22],
          [12, 8, 17, 0, 0],
        ]);
        const mask = ids([
          [1, 1, 1, 1, 1],
          [1, 1, 1, 0, 0],
        ]);
        const a = await pm.forward({ inputIds: x, attentionMask: mask });
        const b = await pm2.forward({ inputIds: x, attentionMask: mask });
        assert.ok(maxDiff(a.data as Float32Array, b.data as Float32Array) < 1e-5, "the saved embeddings give the trained encoder's logits");
        pm2.savePretrained(join(dir, "b"));
        for (const f of ["adapter_config.json", "adapter_model.safetensors"]) assert.deepEqual(readFileSync(join(dir, "b", f)), readFileSync(join(dir, "a", f)), f);
        // loaded trainable, the embeddings themselves train
        const pm3 = PeftModel.fromPretrained(model, join(dir, "a"), { isTrainable: true });
        assert.equal(pm3.getNbTrainableParameters()[0], 4 * d + head);
        await pm2.dispose();
        await pm3.dispose();
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
      await pm.dispose();
    });
  }

  test("trains on GPT-2 (causal LM): the loss skips the virtual positions", async () => {
    const pm = PeftModel.create(fixtureModel("gpt2"), { peft_type: "P_TUNING", task_type: "CAUSAL_LM", num_virtual_tokens: 4, encoder_hidden_size: 16 }, "default", { seed: 5 });
    const fit = await new Trainer(pm, { task: "causal-lm", epochs: 100, maxSteps: 12, batchSize: 16, lr: 0.01, seed: 0, schedule: "constant", dropout: false }, patternCorpus(16, 2, () => 8)).fit();
    const losses = fit.history.steps.map((x) => x.loss);
    console.log(`# p-tuning gpt2: loss ${losses[0]!.toFixed(4)} → ${losses.at(-1)!.toFixed(4)}`);
    assert.ok(losses.at(-1)! < losses[0]! - 0.02, `loss fell: ${losses.join(", ")}`);
    const logits = await pm.forward({ inputIds: ids([[3, 5, 7]]) });
    assert.deepEqual(logits.shape.slice(0, 2), [1, 7]);
    await pm.dispose();
  });

  test("malformed configs are rejected naming the field", () => {
    const model = tinyModel();
    for (const [raw, field] of [
      [{ encoder_reparameterization_type: "GRU" }, "encoder_reparameterization_type"],
      [{ encoder_hidden_size: 0 }, "encoder_hidden_size"],
      [{ encoder_dropout: 2 }, "encoder_dropout"],
      [{ token_dim: 16 }, "token_dim"],
      [{ num_transformer_submodules: 2 }, "num_transformer_submodules"],
      [{ prefix_projection: true }, "prefix_projection"],
    ] as const) {
      assert.throws(
        () => PeftModel.create(model, { peft_type: "P_TUNING", num_virtual_tokens: 3, ...raw }),
        (e: unknown) => e instanceof PeftError && e.message.includes(field),
        field,
      );
    }
  });
});
