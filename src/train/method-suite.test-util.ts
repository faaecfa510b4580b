/**
 * The checks every PEFT method in `src/tuners/<method>/` passes, shared by the methods' tests:
 * its linear-layer graph against finite differences, merge == unmerged forward, a byte-stable
 * save/load round trip, a few training steps lowering the loss, malformed configs and tensors
 * rejected with typed errors naming the field, and — when `test/fixtures/peft-methods/<method>/
 * manifest.json` exists — Python PEFT reference outputs (same manifest shape as
 * `test/fixtures/peft-parity`: `cases[]` of `{ case, model, adapters, outputs, merged_weights? }`,
 * paths relative to that folder, models by name under `test/fixtures/peft-parity/<model>/base`).
 *
 * The hand-computed forward reference stays in each method's own test, built from explicit matrices.
 */
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { PeftError } from "../errors.js";
import { dense } from "../graph/composite.js";
import { gradCheck } from "../runtime/gradcheck.js";
import { Graph } from "../graph/graph.js";
import type { Value } from "../graph/types.js";
import { loadSafetensors, saveSafetensors } from "../io/safetensors.js";
import { ModelContext, mapSource } from "../models/context.js";
import { type LoadedModel, loadModel } from "../models/load.js";
import { PeftModel } from "../peft/peft-model.js";
import { CompiledGraph } from "../runtime/session.js";
import { type Tensor, toFloat32 } from "../tensor.js";
import { patternCorpus } from "./tiny-llama.test-util.js";
import { Trainer } from "./trainer.js";
import { fixturePath } from "../util/paths.js";
import type { AdapterInstance, TunerDef } from "../tuners/common/types.js";
import { tunerFor } from "../tuners/registry.js";

export const fixtureModel = (arch: "bert" | "gpt2" | "llama"): LoadedModel => loadModel(fixturePath("peft-parity", arch, "base"));

export function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length, "lengths");
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(Number(a[i]) - Number(b[i])));
  return m;
}

/** A linear site over graph values (for running or differentiating one tuner hook alone). */
function site(g: Graph, name: string, x: Value, w: Value, bias: Value | null, fanInFanOut: boolean) {
  const [d0, d1] = w.shape as [number, number];
  return {
    g,
    name,
    x,
    weight: w,
    bias,
    fanInFanOut,
    inFeatures: fanInFanOut ? d0 : d1,
    outFeatures: fanInFanOut ? d1 : d0,
    base: (inp: Value) => dense(inp, w, bias, { transB: !fanInFanOut }),
    ctx: new ModelContext(g, mapSource(new Map())),
  };
}

export interface LinearCase {
  /** The method's config (PEFT names) and the module name the tensors belong to. */
  readonly raw: Readonly<Record<string, unknown>>;
  readonly module: string;
  /** The adapter's tensors, keyed without `base_model.model.`. */
  readonly tensors: ReadonlyMap<string, Tensor>;
  /** Stored base weight ([out, in], or [in, out] with fanInFanOut) and optional bias. */
  readonly weight: Tensor;
  readonly bias?: Tensor;
  readonly fanInFanOut?: boolean;
  /** [rows, in] input. */
  readonly x: Tensor;
}

function adapterOf(c: LinearCase): AdapterInstance {
  const tuner = tunerFor(String(c.raw.peft_type));
  return { name: "t", tuner, config: tuner.parseConfig({ ...c.raw }, "test config"), tensors: new Map(c.tensors) };
}

/** The tuner's hook for `c.module` applied to `c.x`, run in float64 (inference graph). */
export async function runLinear(c: LinearCase): Promise<Float64Array> {
  const a = adapterOf(c);
  const g = new Graph("linear");
  const x = g.input("x", "float64", c.x.shape);
  const w = g.constant(to64(c.weight));
  const b = c.bias ? g.constant(to64(c.bias)) : null;
  const hooks = a.tuner.hooks(a, (k) => g.constant(to64(a.tensors.get(k)!)), { training: false, seed: 0 });
  const h = hooks.linear?.(c.module);
  assert.ok(h, `the tuner adapts ${c.module}`);
  g.output(h(site(g, c.module, x, w, b, c.fanInFanOut ?? false)), "y");
  const cg = await CompiledGraph.create(g, { threads: 1 });
  const out = await cg.run({ x: to64(c.x) });
  await cg.release();
  return Float64Array.from(out.y!.data as Float64Array);
}

function to64(t: Tensor): Tensor {
  return { dtype: "float64", shape: t.shape, data: Float64Array.from(toFloat32(t)) };
}

/** Finite-difference check of the hook's graph: d/dx and d/d(every adapter tensor). */
export async function gradCheckLinear(c: LinearCase, tol = 1e-6): Promise<void> {
  const a = adapterOf(c);
  const keys = [...a.tensors.keys()].filter((k) => a.tuner.role(k)?.kind !== "frozen");
  const frozen = [...a.tensors.keys()].filter((k) => !keys.includes(k));
  const inputs = [
    { name: "x", shape: c.x.shape, values: toFloat32(c.x) },
    { name: "w", shape: c.weight.shape, values: toFloat32(c.weight), check: false },
    ...keys.map((k) => ({ name: k, shape: a.tensors.get(k)!.shape, values: toFloat32(a.tensors.get(k)!) })),
  ];
  const r = await gradCheck(inputs, (x, w, ...ts) => {
    const g = x!.graph;
    const val = new Map(keys.map((k, i) => [k, ts[i]!]));
    for (const k of frozen) val.set(k, g.constant(to64(a.tensors.get(k)!)));
    const h = a.tuner.hooks(a, (k) => val.get(k)!, { training: false, seed: 0 }).linear!(c.module)!;
    return h(site(g, c.module, x!, w!, null, c.fanInFanOut ?? false));
  });
  for (const [k, e] of Object.entries(r.maxError)) assert.ok(e <= tol, `d/d${k}: error ${e} > ${tol}`);
  for (const k of keys) assert.ok(r.analytic[k]!.some((v) => Math.abs(v) > 1e-6), `the gradient of ${k} is not identically zero`);
}

export interface MethodSuite {
  /** Directory name under test/fixtures/peft-methods and the `peft_type` lowercased. */
  readonly method: string;
  readonly arch: "bert" | "gpt2" | "llama";
  /** A config whose fresh adapter is non-trivial (random init), e.g. `init_weights: false`. */
  readonly randomConfig: Readonly<Record<string, unknown>>;
  /** A config with PEFT's default init (trained in the loss test). */
  readonly trainConfig: Readonly<Record<string, unknown>>;
  /** Bad configs and the field the error must name. */
  readonly badConfigs: readonly (readonly [Readonly<Record<string, unknown>>, string])[];
  /** False for methods PEFT cannot merge. */
  readonly merges?: boolean;
  /** Learning rate of the loss test. */
  readonly lr?: number;
  /** The method has no random init (its fresh adapter equals the base): perturb its tensors for the merge and save tests. */
  readonly perturb?: boolean;
}

/** A fresh adapter of `raw`, its tensors moved off their initial values when `perturb`. */
function created(model: LoadedModel, raw: Readonly<Record<string, unknown>>, seed: number, perturb: boolean): PeftModel {
  const pm = PeftModel.create(model, raw, "default", { seed });
  if (perturb) {
    const a = pm.adapter("default");
    pm.updateAdapterTensors("default", new Map([...a.tensors].map(([k, t]) => [k, { dtype: "float32", shape: t.shape, data: Float32Array.from(toFloat32(t), (v, i) => v * (1 + 0.3 * Math.sin(i + seed)) + 0.05 * Math.cos(i)) } as Tensor])));
  }
  return pm;
}

const IDS: Tensor<"int64"> = { dtype: "int64", shape: [2, 6], data: BigInt64Array.from([5, 9, 11, 4, 7, 30, 8, 8, 20, 3, 6, 2], BigInt) };

/** Registers the shared tests for one method (call inside its `describe`). */
export function methodSuite(s: MethodSuite): void {
  const model = fixtureModel(s.arch);

  if (s.merges !== false) {
    test("merge == unmerged forward; unmerge restores the base; the merged model is plain", async () => {
      const pm = created(model, s.randomConfig, 3, s.perturb ?? false);
      const adapted = await pm.forward({ inputIds: IDS });
      const base = await pm.disableAdapter(() => pm.forward({ inputIds: IDS }));
      assert.ok(maxDiff(adapted.data as Float32Array, base.data as Float32Array) > 1e-3, "the random adapter changes the logits");
      pm.mergeAdapter();
      const merged = await pm.forward({ inputIds: IDS });
      assert.ok(maxDiff(merged.data as Float32Array, adapted.data as Float32Array) < 1e-4, "merged forward");
      pm.unmergeAdapter();
      const back = await pm.disableAdapter(() => pm.forward({ inputIds: IDS }));
      assert.deepEqual(back.data, base.data);
      const plain = new PeftModel(pm.mergeAndUnload());
      assert.ok(maxDiff((await plain.forward({ inputIds: IDS })).data as Float32Array, adapted.data as Float32Array) < 1e-4);
      await pm.dispose();
      await plain.dispose();
    });
  }

  test("save → load → save is byte-stable and loads to the same logits", async () => {
    const dir = mkdtempSync(join(tmpdir(), `peft-${s.method}-`));
    try {
      const pm = created(model, s.randomConfig, 4, s.perturb ?? false);
      pm.savePretrained(join(dir, "a"));
      const cfg = JSON.parse(readFileSync(join(dir, "a", "adapter_config.json"), "utf8")) as Record<string, unknown>;
      assert.equal(String(cfg.peft_type).toLowerCase(), s.method);
      const pm2 = PeftModel.fromPretrained(model, join(dir, "a"));
      pm2.savePretrained(join(dir, "b"));
      for (const f of ["adapter_config.json", "adapter_model.safetensors"]) assert.deepEqual(readFileSync(join(dir, "b", f)), readFileSync(join(dir, "a", f)), f);
      assert.deepEqual((await pm2.forward({ inputIds: IDS })).data, (await pm.forward({ inputIds: IDS })).data);
      await pm.dispose();
      await pm2.dispose();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("a few training steps lower the loss", async () => {
    const pm = PeftModel.create(model, s.trainConfig, "default", { seed: 5 });
    const fit = await new Trainer(pm, { task: "causal-lm", epochs: 100, maxSteps: 12, batchSize: 16, lr: s.lr ?? 0.01, seed: 0, schedule: "constant", dropout: false }, patternCorpus(16, 2, () => 8)).fit();
    const losses = fit.history.steps.map((x) => x.loss);
    console.log(`# ${s.method}: loss ${losses[0]!.toFixed(4)} → ${losses.at(-1)!.toFixed(4)}`);
    assert.ok(losses.at(-1)! < losses[0]! - 0.02, `loss fell: ${losses.join(", ")}`);
    await pm.dispose();
  });

  test("malformed configs and tensors are rejected with typed errors naming the field", () => {
    for (const [raw, field] of s.badConfigs) {
      assert.throws(
        () => PeftModel.create(model, raw),
        (e: unknown) => e instanceof PeftError && e.message.includes(field),
        `${JSON.stringify(raw)} should be rejected naming ${field}`,
      );
    }
    const dir = mkdtempSync(join(tmpdir(), `peft-${s.method}-bad-`));
    try {
      const pm = PeftModel.create(model, s.randomConfig, "default", { seed: 6 });
      pm.savePretrained(dir);
      const file = join(dir, "adapter_model.safetensors");
      const tensors = loadSafetensors(file).tensors;
      const [key, t] = [...tensors].find(([k]) => pm.adapter("default").tuner.role(k.replace(/^base_model\.model\./u, "")) !== null)!;
      const cut: Tensor = { dtype: "float32", shape: [t.shape[0]! + 1, ...t.shape.slice(1)], data: new Float32Array((t.shape[0]! + 1) * t.shape.slice(1).reduce((a, b) => a * b, 1)) };
      saveSafetensors(file, new Map([...tensors].map(([k, v]) => [k, k === key ? cut : v])));
      assert.throws(
        () => PeftModel.fromPretrained(model, dir),
        (e: unknown) => e instanceof PeftError && e.message.includes(key.replace(/^base_model\.model\./u, "")),
        "a tensor of the wrong shape names its key",
      );
      const missing = new Map([...tensors].filter(([k]) => k !== key));
      saveSafetensors(file, missing);
      assert.throws(() => PeftModel.fromPretrained(model, dir), (e: unknown) => e instanceof PeftError && e.message.includes(key.replace(/^base_model\.model\./u, "")));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  const manifest = fixturePath("peft-methods", s.method, "manifest.json");
  if (existsSync(manifest)) {
    const m = JSON.parse(readFileSync(manifest, "utf8")) as { cases: { case: string; model: string; adapters: string[]; outputs: string; merged_weights?: string }[] };
    for (const c of m.cases) {
      test(`Python PEFT reference: ${c.model}/${c.case}`, async () => {
        const ref = loadSafetensors(fixturePath("peft-methods", s.method, c.outputs)).tensors;
        const base = loadSafetensors(fixturePath("peft-parity", c.model, "base.outputs.safetensors")).tensors;
        const ids = (ref.get("input_ids") ?? base.get("input_ids")) as Tensor<"int64">;
        const mask = (ref.get("attention_mask") ?? base.get("attention_mask")) as Tensor<"int64">;
        const pm = PeftModel.fromPretrained(loadModel(fixturePath("peft-parity", c.model, "base")), fixturePath("peft-methods", s.method, c.adapters[0]!));
        const got = await pm.forward({ inputIds: ids, attentionMask: mask });
        assert.ok(maxDiff(got.data as Float32Array, toFloat32(ref.get("logits")!)) <= 1e-4, "logits");
        if (c.merged_weights) {
          const want = loadSafetensors(fixturePath("peft-methods", s.method, c.merged_weights)).tensors;
          const merged = pm.mergeAndUnload();
          for (const [k, t] of want) assert.ok(maxDiff(toFloat32(merged.weights.get(k)), toFloat32(t)) <= 1e-4, k);
        }
        await pm.dispose();
      });
    }
  }
}

export type { TunerDef };
