import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { toOnnx } from "../../graph/onnx.js";
import { loadSafetensors } from "../../io/safetensors.js";
import type { WeightSource } from "../../models/context.js";
import { forwardLogits } from "../../models/forward.js";
import { loadModel, type LoadedModel } from "../../models/load.js";
import { PeftModel } from "../../peft/peft-model.js";
import { BYTES_PER_ELEMENT, type Tensor, numel } from "../../tensor.js";
import { TrainStep, type Batch } from "../../train/step.js";
import { fixturePath } from "../../util/paths.js";
import { dequantize, type QuantScheme } from "./quantize.js";
import { isQuantizedModel, linearModuleNames, modelSizeReport, quantizeModel, type QuantizedModel } from "./quantized-model.js";

const base = (m: string): LoadedModel => loadModel(fixturePath("peft-parity", m, "base"));

/** The same model with the dequantised weights as plain float32 initializers (no in-graph dequantisation). */
function dequantisedCopy(qm: QuantizedModel): LoadedModel {
  const w = qm.weights;
  const plain: WeightSource = { has: (n) => w.has(n), get: (n) => w.get(n), info: (n) => w.info(n), keys: () => w.keys() };
  return { ...qm, weights: plain };
}

function f64(t: Tensor): Float64Array {
  return Float64Array.from(t.data as Float32Array);
}

function maxAbs(a: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]!));
  return m;
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

/** ‖W − Ŵ‖_F / ‖W‖_F for every quantised weight. */
function relativeWeightErrors(fp: LoadedModel, qm: QuantizedModel): number[] {
  return [...qm.weights.quantized].map(([k, q]) => {
    const w = fp.weights.get(k).data as Float32Array;
    const d = dequantize(q).data as Float32Array;
    let num = 0;
    let den = 0;
    for (let i = 0; i < w.length; i++) {
      num += (w[i]! - d[i]!) ** 2;
      den += w[i]! ** 2;
    }
    return Math.sqrt(num / den);
  });
}

describe("quantizeModel", () => {
  test("quantises every linear weight except the output modules; the rest is shared", () => {
    const fp = base("bert");
    const qm = quantizeModel(fp, { kind: "nf4", blockSize: 64, doubleQuant: true });
    assert.ok(isQuantizedModel(qm));
    assert.ok(!isQuantizedModel(fp));
    const modules = linearModuleNames(fp);
    assert.ok(modules.includes("classifier") && modules.includes("bert.encoder.layer.0.attention.self.query"));
    const want = modules.filter((m) => m !== "classifier").map((m) => `${m}.weight`).sort();
    assert.deepEqual([...qm.weights.quantized.keys()].sort(), want);
    for (const q of qm.weights.quantized.values()) {
      assert.equal(q.kind, "nf4");
      assert.equal(q.blockSize, 64);
      assert.equal(q.scales.kind, "nested");
    }
    assert.deepEqual(qm.quantization, { kind: "nf4", blockSize: 64, doubleQuant: true, skipModules: ["classifier"] });
    // unquantised tensors come from the original source; quantised ones come back dequantised
    assert.deepEqual(qm.weights.get("bert.embeddings.word_embeddings.weight"), fp.weights.get("bert.embeddings.word_embeddings.weight"));
    const k = "bert.encoder.layer.0.attention.self.query.weight";
    assert.deepEqual(qm.weights.get(k).data, dequantize(qm.weights.quantized.get(k)!).data);
    assert.deepEqual(qm.weights.info(k), { dtype: "float32", shape: [32, 32] });
    assert.deepEqual(qm.weights.keys().sort(), fp.weights.keys().sort());
    const noSkip = quantizeModel(fp, { kind: "int8", skipModules: [] });
    assert.ok(noSkip.weights.quantized.has("classifier.weight"));
    assert.equal(noSkip.quantization.blockSize, 64, "bitsandbytes' default block size");
  });

  test("bad options and double quantisation are refused", () => {
    const fp = base("llama");
    assert.throws(() => quantizeModel(fp, { kind: "nf5" } as unknown as QuantScheme), { code: "PEFT_ERR_CONFIG" });
    assert.throws(() => quantizeModel(fp, { kind: "dynamic-unsigned" }), { code: "PEFT_ERR_CONFIG" });
    assert.throws(() => quantizeModel(fp, { kind: "nf4", blockSize: 48 }), { code: "PEFT_ERR_QUANT_SCHEME" });
    assert.throws(() => quantizeModel(quantizeModel(fp, { kind: "nf4" }), { kind: "int8" }), /already quantised/);
  });

  for (const model of ["bert", "llama"]) {
    test(`${model}: logits equal the dequantised weights' and stay within the quantisation error of float32`, async () => {
      const fp = base(model);
      const io = loadSafetensors(fixturePath("peft-parity", model, "base.outputs.safetensors")).tensors;
      const ids = io.get("input_ids") as Tensor<"int64">;
      const mask = io.get("attention_mask") as Tensor<"int64">;
      const ref = f64(await forwardLogits(fp, ids, mask));
      const errors: Record<string, number> = {};
      for (const scheme of [{ kind: "int8" }, { kind: "nf4" }, { kind: "nf4", doubleQuant: true }, { kind: "fp4", blockSize: 32 }] as QuantScheme[]) {
        const label = `${scheme.kind}${scheme.doubleQuant ? "+dq" : ""}`;
        const qm = quantizeModel(fp, scheme);
        const got = f64(await forwardLogits(qm, ids, mask));
        const exact = f64(await forwardLogits(dequantisedCopy(qm), ids, mask));
        assert.ok(maxAbsDiff(got, exact) <= 1e-6 * (1 + maxAbs(exact)), `${label}: in-graph dequantisation differs from the host's`);
        // First-order bound: each quantised layer perturbs the output by at most its relative
        // weight error (relative to the logits' scale), so the sum over layers bounds the total.
        const eps = relativeWeightErrors(fp, qm);
        const bound = eps.reduce((s, e) => s + e, 0) * maxAbs(ref);
        const err = maxAbsDiff(got, ref);
        errors[label] = err;
        console.log(`# ${model} ${label}: max |Δlogits| ${err.toExponential(2)}, bound ${bound.toExponential(2)}, max rel weight error ${Math.max(...eps).toExponential(2)}`);
        assert.ok(err > 0, `${label}: quantisation changes the logits`);
        assert.ok(err <= bound, `${label}: max |Δlogits| ${err} exceeds the first-order bound ${bound}`);
      }
      assert.ok(errors.int8! < errors.nf4!, "int8 (8 bits) is closer to float32 than NF4 (4 bits)");
    });
  }

  test("LoRA on an NF4 base: gradients reach only the adapter and match float64 central differences", async () => {
    const fp = base("llama");
    const qm = quantizeModel(fp, { kind: "nf4", blockSize: 64, doubleQuant: true });
    const ref = loadSafetensors(fixturePath("peft-parity", "llama", "lora.grads.safetensors")).tensors;
    const batch: Batch = {
      inputIds: ref.get("input_ids") as Tensor<"int64">,
      attentionMask: ref.get("attention_mask") as Tensor<"int64">,
      labels: ref.get("labels") as Tensor<"int64">,
    };
    const adapter = fixturePath("peft-parity", "llama", "lora");
    const make = (m: LoadedModel) => TrainStep.create(PeftModel.fromPretrained(m, adapter, { isTrainable: true }), { task: "causal-lm", dtype: "float64", dropout: false });
    const step = await make(qm);
    assert.equal(step.names.length, 8);
    assert.ok(step.names.every((n) => /lora_[AB]/.test(n)), `trainable: ${step.names.join(", ")}`);
    const r = await step.run(batch, new Map());
    let worst = 0;
    for (const name of step.names) {
      const t = step.initial.get(name)!;
      const vals = Float64Array.from(t.data as Float64Array);
      const g = r.grads.get(name)!;
      for (let e = 0; e < vals.length; e += Math.max(1, Math.floor(vals.length / 4))) {
        const at = async (v: number) => {
          const p = Float64Array.from(vals);
          p[e] = v;
          return (await step.run(batch, new Map([[name, { dtype: "float64", shape: t.shape, data: p } as Tensor]]))).loss;
        };
        const eps = 1e-6;
        const num = ((await at(vals[e]! + eps)) - (await at(vals[e]! - eps))) / (2 * eps);
        worst = Math.max(worst, Math.abs(num - g[e]!) / Math.max(1e-3, Math.abs(num)));
      }
    }
    console.log(`# llama NF4 base: LoRA autodiff vs finite differences, max rel err ${worst.toExponential(2)}`);
    assert.ok(worst <= 1e-4, `relative error ${worst}`);
    // same loss and gradients as float32 initializers holding the dequantised weights; not the float32 base's
    const plain = await make(dequantisedCopy(qm));
    const full = await make(fp);
    const rp = await plain.run(batch, new Map());
    const rf = await full.run(batch, new Map());
    assert.ok(Math.abs(r.loss - rp.loss) <= 1e-12 * Math.abs(rp.loss), `loss ${r.loss} vs ${rp.loss}`);
    assert.ok(Math.abs(r.loss - rf.loss) > 1e-6, "the NF4 base changes the loss");
    for (const n of step.names) assert.ok(maxAbsDiff(r.grads.get(n)!, rp.grads.get(n)!) <= 1e-12, n);
    await Promise.all([step.release(), plain.release(), full.release()]);
  });

  test("a quantised weight that is trainable (modules_to_save) or merged is used in float32", async () => {
    const fp = base("bert");
    const qm = quantizeModel(fp, { kind: "int8", skipModules: [] });
    assert.ok(qm.weights.quantized.has("classifier.weight"));
    const adapter = fixturePath("peft-parity", "bert", "lora");
    const pm = PeftModel.fromPretrained(qm, adapter, { isTrainable: true });
    const step = await TrainStep.create(pm, { task: "seq-cls", dropout: false });
    assert.ok(step.names.includes("classifier.weight"), `trainable: ${step.names.join(", ")}`);
    // the trainable head starts from the adapter's saved copy, not from the quantised base weight
    const saved = loadSafetensors(fixturePath("peft-parity", "bert", "lora", "adapter_model.safetensors")).tensors;
    assert.deepEqual(step.initial.get("classifier.weight")!.data, saved.get("base_model.model.classifier.weight")!.data);
    await step.release();

    const io = loadSafetensors(fixturePath("peft-parity", "bert", "base.outputs.safetensors")).tensors;
    const inputs = { inputIds: io.get("input_ids") as Tensor<"int64">, attentionMask: io.get("attention_mask") as Tensor<"int64"> };
    const unmerged = f64(await pm.forward(inputs));
    pm.mergeAdapter();
    const merged = f64(await pm.forward(inputs));
    assert.ok(maxAbsDiff(unmerged, merged) <= 1e-5, `merged vs unmerged ${maxAbsDiff(unmerged, merged)}`);
    await pm.dispose();
  });

  test("size accounting: packed codes and scales, and a smaller ONNX graph", () => {
    const fp = base("llama");
    const qm = quantizeModel(fp, { kind: "nf4", blockSize: 64, doubleQuant: true });
    const r = modelSizeReport(qm);
    let qParams = 0;
    let qBytes = 0;
    for (const [k, q] of qm.weights.quantized) {
      const n = numel(fp.weights.info(k).shape);
      const nb = Math.ceil(n / 64);
      qParams += n;
      qBytes += Math.ceil(n / 2) + nb + 4 * Math.ceil(nb / 256) + 4; // codes + nested codes + nested absmax + offset
      assert.equal(q.codes.length, Math.ceil(n / 2));
    }
    assert.equal(r.quantizedParams, qParams);
    assert.equal(r.quantizedBytes, qBytes);
    assert.equal(r.quantizedTensors, qm.weights.quantized.size);
    const plain = modelSizeReport(fp);
    assert.equal(plain.quantizedParams, 0);
    assert.equal(r.totalParams, plain.totalParams);
    assert.equal(r.otherParams, plain.totalParams - qParams);
    assert.equal(r.float32Bytes, 4 * plain.totalParams);
    assert.equal(r.totalBytes, qBytes + 4 * r.otherParams);
    assert.ok(r.bitsPerQuantizedParam > 4 && r.bitsPerQuantizedParam < 4.6, `bits ${r.bitsPerQuantizedParam}`);
    const built = (m: LoadedModel) => {
      const b = new PeftModel(m).buildGraph();
      b.graph.output(b.outputs.logits, "logits");
      let init = 0;
      for (const v of b.graph.initializers) init += numel(v.shape.map(Number)) * BYTES_PER_ELEMENT[v.dtype];
      return { init, onnx: toOnnx(b.graph).length };
    };
    const q = built(qm);
    const f = built(fp);
    console.log(`# llama: ONNX graph ${f.onnx} bytes (float32) vs ${q.onnx} (NF4 + double quant); parameters ${plain.totalBytes} vs ${r.totalBytes} bytes`);
    // the graph's constants shrink by exactly what quantisation saves, up to the shared code
    // books (512 + 256 floats) and a few int64 shape constants
    const saved = 4 * qParams - qBytes;
    assert.ok(q.init >= f.init - saved && q.init <= f.init - saved + 4 * 768 + 1024, `initializer bytes ${f.init} → ${q.init}`);
    assert.ok(q.onnx < f.onnx, `ONNX bytes ${f.onnx} → ${q.onnx}`);
  });
});
