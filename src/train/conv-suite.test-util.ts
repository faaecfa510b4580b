/**
 * The checks a method that adapts convolutions passes on the tiny `simple_cnn` (LoRA, FLoRA):
 * its conv hook against finite differences, merge == unmerged forward, a byte-stable save/load
 * round trip, and a few Trainer steps lowering the loss with only the adapter's tensors changing.
 * The hand-computed forward reference stays in each method's own test.
 */
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import * as G from "../graph/api.js";
import { Graph } from "../graph/graph.js";
import type { Value } from "../graph/types.js";
import { ModelContext, type ConvSite, mapSource } from "../models/context.js";
import { tinyCnn, tinyImages } from "../models/simple-cnn.test-util.js";
import { PeftModel } from "../peft/peft-model.js";
import { gradCheck } from "../runtime/gradcheck.js";
import { type Tensor, toFloat32 } from "../tensor.js";
import type { AdapterInstance } from "../tuners/common/types.js";
import { tunerFor } from "../tuners/registry.js";
import { Trainer } from "./trainer.js";

export interface ConvCase {
  /** The method's config (PEFT names) and the module the tensors belong to. */
  readonly raw: Readonly<Record<string, unknown>>;
  readonly module: string;
  readonly tensors: ReadonlyMap<string, Tensor>;
  /** Kernel [out, in, kh, kw]; input [n, in, h, w]. */
  readonly weight: Tensor;
  readonly x: Tensor;
  readonly stride: number;
  readonly padding: number;
}

/** A convolution site over graph values (one tuner hook alone). */
export function convSite(g: Graph, name: string, x: Value, w: Value, stride: number, padding: number): ConvSite {
  const [outChannels, inChannels, kh, kw] = w.shape as [number, number, number, number];
  const geo = { strides: [stride, stride] as const, pads: [padding, padding, padding, padding] as const };
  return {
    g,
    name,
    x,
    weight: w,
    bias: null,
    inChannels,
    outChannels,
    kernel: [kh, kw],
    stride: [stride, stride],
    padding: [padding, padding],
    dilation: [1, 1],
    base: (inp) => G.conv2d(inp, w, null, geo),
    conv: (inp, k) => G.conv2d(inp, k, null, geo),
    ctx: new ModelContext(g, mapSource(new Map())),
  };
}

function adapterOf(c: ConvCase): AdapterInstance {
  const tuner = tunerFor(String(c.raw.peft_type));
  return { name: "t", tuner, config: tuner.parseConfig({ ...c.raw }, "test config"), tensors: new Map(c.tensors) };
}

/**
 * Finite-difference check of the conv hook's graph, d/dx and d/d(every adapter tensor), in float32
 * (onnxruntime has no float64 Conv); the hook is multilinear in each tensor, so central
 * differences are exact up to rounding.
 */
export async function gradCheckConv(c: ConvCase, tol = 3e-3): Promise<void> {
  const a = adapterOf(c);
  const keys = [...a.tensors.keys()];
  const inputs = [
    { name: "x", shape: c.x.shape, values: toFloat32(c.x) },
    { name: "w", shape: c.weight.shape, values: toFloat32(c.weight), check: false },
    ...keys.map((k) => ({ name: k, shape: a.tensors.get(k)!.shape, values: toFloat32(a.tensors.get(k)!) })),
  ];
  const r = await gradCheck(
    inputs,
    (x, w, ...ts) => {
      const val = new Map(keys.map((k, i) => [k, ts[i]!]));
      const h = a.tuner.hooks(a, (k) => val.get(k)!, { training: false, seed: 0 }).conv!(c.module)!;
      return h(convSite(x!.graph, c.module, x!, w!, c.stride, c.padding));
    },
    { dtype: "float32", eps: 1e-2, maxElements: 32 },
  );
  for (const [k, e] of Object.entries(r.maxError)) assert.ok(e <= tol, `d/d${k}: error ${e} > ${tol}`);
  for (const k of keys) assert.ok(r.analytic[k]!.some((v) => Math.abs(v) > 1e-4), `the gradient of ${k} is not identically zero`);
}

const maxDiff = (a: ArrayLike<number>, b: ArrayLike<number>) => Array.from(a).reduce((m, v, i) => Math.max(m, Math.abs(v - Number(b[i]))), 0);

/** Merge, save/load and training checks on the tiny CNN for a config whose fresh adapter is non-trivial (`random`) and one with the method's default init (`train`). */
export function convSuite(s: { method: string; random: Readonly<Record<string, unknown>>; train: Readonly<Record<string, unknown>> }): void {
  const model = tinyCnn(5);
  const pixels = tinyImages(model.config, 6, 9);

  test(`${s.method} on convolutions: merge == unmerged forward; unmerge restores the base; mergeAndUnload is plain`, async () => {
    const pm = PeftModel.create(model, s.random, "default", { seed: 3 });
    const adapted = await pm.forward({ inputIds: pixels });
    const base = await pm.disableAdapter(() => pm.forward({ inputIds: pixels }));
    assert.ok(maxDiff(adapted.data as Float32Array, base.data as Float32Array) > 1e-3, "the random adapter changes the logits");
    pm.mergeAdapter();
    assert.ok(maxDiff((await pm.forward({ inputIds: pixels })).data as Float32Array, adapted.data as Float32Array) < 1e-4, "merged forward");
    pm.unmergeAdapter();
    assert.deepEqual((await pm.disableAdapter(() => pm.forward({ inputIds: pixels }))).data, base.data);
    const plain = new PeftModel(pm.mergeAndUnload());
    assert.ok(maxDiff((await plain.forward({ inputIds: pixels })).data as Float32Array, adapted.data as Float32Array) < 1e-4);
    await pm.dispose();
    await plain.dispose();
  });

  test(`${s.method} on convolutions: save → load → save is byte-stable and loads to the same logits`, async () => {
    const dir = mkdtempSync(join(tmpdir(), `peft-conv-${s.method}-`));
    try {
      const pm = PeftModel.create(model, s.random, "default", { seed: 4 });
      pm.savePretrained(join(dir, "a"));
      const pm2 = PeftModel.fromPretrained(model, join(dir, "a"));
      pm2.savePretrained(join(dir, "b"));
      assert.deepEqual(readFileSync(join(dir, "b", "adapter_model.safetensors")), readFileSync(join(dir, "a", "adapter_model.safetensors")));
      assert.deepEqual((await pm2.forward({ inputIds: pixels })).data, (await pm.forward({ inputIds: pixels })).data);
      await pm.dispose();
      await pm2.dispose();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test(`${s.method} on convolutions: Trainer steps lower the loss and change only the adapter (and the saved head)`, async () => {
    const pm = PeftModel.create(model, s.train, "default", { seed: 6 });
    const before = new Map([...pm.adapter("default").tensors].map(([k, t]) => [k, Float32Array.from(toFloat32(t))]));
    const examples = Array.from({ length: 12 }, (_, i) => ({ ids: Array.from((pixels.data as BigInt64Array).slice((i % 6) * 36, (i % 6 + 1) * 36), Number), label: i % 4 }));
    const trainer = new Trainer(pm, { task: "seq-cls", epochs: 30, batchSize: 12, lr: 0.05, seed: 0, dropout: false }, examples);
    const hist = (await trainer.fit()).history;
    const first = hist.steps[0]!.loss;
    const last = hist.steps[hist.steps.length - 1]!.loss;
    assert.ok(last < first * 0.9, `loss ${first} → ${last}`);
    const after = pm.adapter("default").tensors;
    const changed = [...before].filter(([k, v]) => maxDiff(v, toFloat32(after.get(k)!)) > 0).map(([k]) => k);
    assert.ok(changed.some((k) => k.startsWith("conv")), `a conv adapter tensor trained: ${changed.join(", ")}`);
    assert.deepEqual(pm.stateDict().get("conv1.weight")!.data, model.weights.get("conv1.weight").data, "the base kernel is untouched");
    await trainer.release();
    await pm.dispose();
  });
}
