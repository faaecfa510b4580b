/**
 * The tuner contract seen from outside `src/tuners/`: a toy method registered through the public
 * API (`registerTuner`) is trained, saved, loaded, merged, mixed in a batch, compressed, turned
 * into a task vector and inspected — through the API and the `peft` CLI — with no code in the
 * rest of peft-ts knowing about it.
 *
 * TOY_SCALE: every targeted linear layer's output is scaled by (1 + d), d a learned [out] vector
 * saved as `<module>.toyscale_d` (an update with baseline 0). Its merge scales the weight's
 * output rows and the bias.
 */
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { z } from "zod";
import {
  type AdapterInstance,
  COMMON_KEYS,
  ConfigError,
  PeftModel,
  type Tensor,
  type TunerConfigBase,
  type TunerDef,
  Trainer,
  UnsupportedOptionError,
  atlasTaskVectorFromAdapter,
  baseFields,
  baseSchema,
  baseToRaw,
  combineAdapterDirs,
  loadModel,
  ops as G,
  parseWith,
  registerTuner,
  rejectUnknownKeys,
  toFloat32,
} from "../index.js";
import { patternCorpus } from "../train/tiny-llama.test-util.js";
import { runCli } from "./main.js";
import { makeTinyModelDir, writeTinyDataset } from "../runs/testing.js";

interface ToyConfig extends TunerConfigBase {
  readonly targetModules: readonly string[];
  readonly initScale: number;
}

const KEY = (module: string) => `${module}.toyscale_d`;
const schema = z.object({ ...baseSchema, peft_type: z.literal("TOY_SCALE"), target_modules: z.array(z.string()).min(1), init_scale: z.number().min(0).optional() });

const targets = (c: ToyConfig, linear: readonly { name: string }[]) => linear.filter((m) => c.targetModules.some((t) => m.name === t || m.name.endsWith(`.${t}`)));

const toy: TunerDef<ToyConfig> = {
  name: "toy_scale",
  peftType: "TOY_SCALE",
  prefix: "toyscale_",
  method: "toy-scale",
  kind: "module",
  parseConfig(raw, file) {
    rejectUnknownKeys(raw, [...COMMON_KEYS, "target_modules", "init_scale"], file);
    const c = parseWith(schema, raw, file);
    return { ...baseFields(c), targetModules: c.target_modules, initScale: c.init_scale ?? 0 };
  },
  toRaw: (c) => ({ ...baseToRaw(c), target_modules: [...c.targetModules], init_scale: c.initScale }),
  resolve: (c) => c,
  expectedTensors: (c, model) => new Map(targets(c, model.linearModules).map((m) => [KEY(m.name), [model.linearModules.find((l) => l.name === m.name)!.outFeatures]])),
  init(c, model, rng) {
    const out = new Map<string, Tensor>();
    for (const m of model.linearModules.filter((l) => targets(c, [l]).length > 0)) {
      out.set(KEY(m.name), { dtype: "float32", shape: [m.outFeatures], data: Float32Array.from({ length: m.outFeatures }, () => rng.normal() * c.initScale) });
    }
    return out;
  },
  role: (key) => (key.endsWith(".toyscale_d") ? { kind: "update", module: key.slice(0, -".toyscale_d".length), baseline: 0 } : null),
  hooks: (adapter, param) => ({
    linear: (name) => (adapter.tensors.has(KEY(name)) ? (site) => G.mul(site.base(site.x), G.add(param(KEY(name)), 1)) : null),
  }),
  merge(adapter, model) {
    const out = new Map<string, Tensor>();
    for (const [key, t] of adapter.tensors) {
      const role = toy.role(key);
      if (role?.kind !== "update") continue;
      const d = toFloat32(t);
      const lin = model.linearModules.find((m) => m.name === role.module)!;
      const w = model.weight(`${role.module}.weight`);
      const [d0, d1] = w.shape as [number, number];
      const wd = Float32Array.from(toFloat32(w), (v, i) => v * (1 + d[lin.fanInFanOut ? i % d1 : Math.floor(i / d1)]!));
      out.set(`${role.module}.weight`, { dtype: "float32", shape: [d0, d1], data: wd });
      if (model.has(`${role.module}.bias`)) out.set(`${role.module}.bias`, { dtype: "float32", shape: [d.length], data: Float32Array.from(toFloat32(model.weight(`${role.module}.bias`)), (v, i) => v * (1 + d[i]!)) });
    }
    return out;
  },
  mixedBatch: {},
  trainConfig(o, model) {
    if (o.feedforward !== null) throw new ConfigError("peft train", "--feedforward", "does not apply to --method toy-scale");
    return { peft_type: "TOY_SCALE", task_type: o.taskType, target_modules: o.target ?? [...model.defaultTargets], ...(o.modulesToSave.length ? { modules_to_save: [...o.modulesToSave] } : {}) };
  },
};

function maxDiff(a: Tensor, b: Tensor): number {
  assert.deepEqual([...a.shape], [...b.shape]);
  const x = toFloat32(a);
  const y = toFloat32(b);
  let m = 0;
  for (let i = 0; i < x.length; i++) m = Math.max(m, Math.abs(x[i]! - y[i]!));
  return m;
}

describe("a tuner registered from outside src/tuners", () => {
  let root = "";
  let gpt2 = "";
  let data = "";
  before(() => {
    registerTuner(toy as unknown as TunerDef);
    root = mkdtempSync(join(tmpdir(), "peft-plugin-"));
    gpt2 = makeTinyModelDir("gpt2", join(root, "gpt2"));
    data = writeTinyDataset(join(root, "data.jsonl"), 48, 4);
  });
  after(() => rmSync(root, { recursive: true, force: true }));

  test("trains through the Trainer (loss falls) and PeftModel counts its parameters", async () => {
    const pm = PeftModel.create(loadModel(gpt2), { peft_type: "TOY_SCALE", target_modules: ["c_attn", "c_fc"] }, "default", { seed: 1 });
    // 2 layers × (c_attn 3·32 + c_fc 4·32) outputs
    assert.equal(pm.getNbTrainableParameters()[0], 2 * (96 + 128));
    const fit = await new Trainer(pm, { task: "causal-lm", epochs: 100, maxSteps: 20, batchSize: 16, lr: 0.05, seed: 0, schedule: "constant", dropout: false }, patternCorpus(16, 2, () => 8)).fit();
    const losses = fit.history.steps.map((s) => s.loss);
    assert.ok(losses.at(-1)! < losses[0]! - 0.05, `loss fell: ${losses[0]} → ${losses.at(-1)}`);
    await pm.dispose();
  });

  test("peft train --method toy-scale, then load, merge, mix, save, compress, task vector and inspect", async () => {
    const run = join(root, "run");
    const r = await runCli(["train", "--model", gpt2, "--data", data, "--out", run, "--method", "toy-scale", "--epochs", "1", "--batch-size", "8", "--lr", "0.05", "--threads", "1", "--no-progress", "--no-plot", "--json"]);
    assert.equal(r.code, 0, r.stderr);
    const cfg = JSON.parse(readFileSync(join(run, "adapter_config.json"), "utf8")) as Record<string, unknown>;
    assert.equal(cfg.peft_type, "TOY_SCALE");
    assert.deepEqual(cfg.target_modules, ["c_attn"], "the architecture's default targets");

    const model = loadModel(gpt2);
    const pm = PeftModel.fromPretrained(model, run);
    const ids: Tensor<"int64"> = { dtype: "int64", shape: [2, 5], data: BigInt64Array.from([5, 9, 11, 4, 7, 8, 8, 20, 3, 6], BigInt) };
    const adapted = await pm.forward({ inputIds: ids });
    const base = await pm.disableAdapter(() => pm.forward({ inputIds: ids }));
    assert.ok(maxDiff(adapted, base) > 1e-4, "the trained adapter changes the logits");

    // merge == unmerged forward; the merged model is a plain model
    const merged = new PeftModel(pm.mergeAndUnload());
    assert.ok(maxDiff(await merged.forward({ inputIds: ids }), adapted) < 1e-4);

    // mixed batch: row 0 with the adapter, row 1 without
    const mixed = await pm.forward({ inputIds: ids, adapterNames: ["default", "__base__"] });
    const half = adapted.data.length / 2;
    const rows = (t: Tensor, r0: number) => ({ dtype: "float32", shape: [half], data: toFloat32(t).slice(r0 * half, (r0 + 1) * half) }) as Tensor;
    assert.ok(maxDiff(rows(mixed, 0), rows(adapted, 0)) < 1e-5);
    assert.ok(maxDiff(rows(mixed, 1), rows(base, 1)) < 1e-5);

    // save → load → save is byte-stable
    const again = join(root, "again");
    pm.savePretrained(again);
    assert.deepEqual(readFileSync(join(again, "adapter_model.safetensors")), readFileSync(join(run, "adapter_model.safetensors")));
    assert.deepEqual(JSON.parse(readFileSync(join(again, "adapter_config.json"), "utf8")), cfg);

    // ComPEFT through the CLI: the update tensors are compressed against their baseline 0
    const file = join(root, "toy.cpeft");
    const c = await runCli(["compress", "compeft", run, "-o", file, "--density", "1", "--json"]);
    assert.equal(c.code, 0, c.stderr);
    const cr = JSON.parse(c.stdout) as { peftType: string; sparseTensors: number; denseTensors: number };
    assert.equal(cr.peftType, "TOY_SCALE");
    assert.equal(cr.sparseTensors, 2, "both layers' toyscale_d");
    const back = join(root, "back");
    assert.equal((await runCli(["decompress", file, "-o", back])).code, 0);
    const pm2 = PeftModel.fromPretrained(loadModel(gpt2), back);
    assert.ok(maxDiff(await pm2.forward({ inputIds: ids }), base) > 1e-4, "the decompressed adapter still adapts");

    // task vector = merged − base for the adapted parameters
    const a: AdapterInstance = pm.adapter("default");
    const tv = atlasTaskVectorFromAdapter("toy", a, pm.info);
    const key = "transformer.h.0.attn.c_attn.weight";
    const w = toFloat32(model.weights.get(key));
    const d = toFloat32(a.tensors.get("transformer.h.0.attn.c_attn.toyscale_d")!);
    const cols = model.weights.get(key).shape[1]!;
    const tau = tv.blocks.get(key)!;
    for (let i = 0; i < w.length; i += 37) assert.ok(Math.abs(tau[i]! - w[i]! * d[i % cols]!) < 1e-6);
    assert.ok(tv.blocks.has("transformer.h.1.attn.c_attn.bias"));

    // not a low-rank method: add_weighted_adapter refuses it with a typed error
    assert.throws(() => combineAdapterDirs({ base: gpt2, adapters: [run], weights: [1], outDir: join(root, "combined") }), UnsupportedOptionError);

    // inspect finds the adapted modules through the tuner's roles
    const ins = await runCli(["inspect", run, "--json"]);
    assert.equal(ins.code, 0, ins.stderr);
    const rep = JSON.parse(ins.stdout) as { adaptedModules: string[]; parameters: { adapter: number; savedModules: number } };
    assert.deepEqual(rep.adaptedModules, ["transformer.h.0.attn.c_attn", "transformer.h.1.attn.c_attn"]);
    assert.equal(rep.parameters.adapter, 2 * 96);
    await pm.dispose();
    await pm2.dispose();
    await merged.dispose();
  });
});
