import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { grad } from "../graph/autodiff.js";
import { loadModel } from "../models/load.js";
import { PeftModel } from "../peft/peft-model.js";
import type { Tensor } from "../tensor.js";
import { predictWebgpuPlacement } from "../runtime/webgpu-kernels.js";
import { fixturePath } from "../util/paths.js";
import { Rng } from "../util/rng.js";
import { FUSED_NAMES, FusedAdamWStep, type FusedAdamWStepOptions, buildFusedAdamWGraph } from "./fused-step.js";
import { AdamW, clipGradNorm, gradNorm } from "./optim/index.js";
import type { OptimizerState } from "./optim/types.js";
import { type Batch, TrainStep, buildLossGraph } from "./step.js";
import { collate } from "./trainer.js";

const LORA = { peft_type: "LORA", r: 4, lora_alpha: 8, target_modules: ["q_proj", "v_proj"], lora_dropout: 0, init_lora_weights: false };
const LLAMA = loadModel(fixturePath("peft-parity", "llama", "base"));
const pmOf = () => PeftModel.create(LLAMA, LORA, "default", { seed: 7 });

/** Different toy batches per step (learnable patterns, some padding). */
function batches(n: number, seed: number): Batch[] {
  const rng = new Rng(seed);
  return Array.from({ length: n }, () =>
    collate(
      Array.from({ length: 4 }, () => {
        const start = 3 + rng.int(8);
        return { ids: Array.from({ length: 6 + rng.int(5) }, (_, j) => 3 + ((start + 3 * j) % 40)) };
      }),
      "causal-lm",
    ),
  );
}

/** A warm-up then decaying schedule, so each step has its own learning rate. */
const LRS = [2e-3, 1e-2, 8e-3, 6e-3, 4e-3];
const Q0A = "default/model.layers.0.self_attn.q_proj.lora_A.weight";
const V1B = "default/model.layers.1.self_attn.v_proj.lora_B.weight";

interface HostRun {
  losses: number[];
  norms: number[];
  params: Map<string, Float32Array>;
  opt: AdamW;
  step: TrainStep;
}

/** The reference: TrainStep's gradients, clip.ts, the JavaScript AdamW. */
async function hostRun(data: Batch[], o: { weightDecay: number; overrides?: Map<string, number>; maxGradNorm?: number; keep?: boolean }): Promise<HostRun> {
  const step = await TrainStep.create(pmOf(), { task: "causal-lm", dropout: false });
  const params = new Map(step.names.map((n) => [n, Float32Array.from(step.initial.get(n)!.data as Float32Array)]));
  const opt = new AdamW(
    step.names.map((n) => ({ name: n, data: params.get(n)!, ...(o.overrides?.has(n) ? { weightDecay: o.overrides.get(n)! } : {}) })),
    { lr: 1e-3, weightDecay: o.weightDecay },
  );
  const losses: number[] = [];
  const norms: number[] = [];
  for (const [k, b] of data.entries()) {
    const r = await step.run(b, tensors(step, params));
    losses.push(r.loss);
    const grads = r.grads as Map<string, Float32Array>;
    norms.push(o.maxGradNorm ? clipGradNorm(grads, o.maxGradNorm) : gradNorm(grads));
    opt.step(grads, LRS[k % LRS.length]);
  }
  if (!o.keep) await step.release();
  return { losses, norms, params, opt, step };
}

function tensors(step: TrainStep, params: Map<string, Float32Array>): Map<string, Tensor> {
  return new Map([...params].map(([n, d]) => [n, { dtype: "float32", shape: step.initial.get(n)!.shape, data: d } as Tensor]));
}

async function fusedRun(data: Batch[], o: Omit<FusedAdamWStepOptions, "task">, from = 0) {
  const fs = await FusedAdamWStep.create(pmOf(), { task: "causal-lm", dropout: false, lr: 1e-3, ...o });
  const losses: number[] = [];
  const norms: number[] = [];
  for (const [k, b] of data.entries()) {
    const r = await fs.run(b, LRS[(k + from) % LRS.length]);
    losses.push(r.loss);
    if (r.gradNorm !== undefined) norms.push(r.gradNorm);
  }
  return { fs, losses, norms };
}

async function maxParamDiff(fs: FusedAdamWStep, ref: Map<string, Float32Array>): Promise<number> {
  const got = await fs.downloadParams();
  let worst = 0;
  for (const [n, r] of ref) {
    const d = got.get(n)!.data as Float32Array;
    assert.equal(d.length, r.length, n);
    for (let i = 0; i < r.length; i++) worst = Math.max(worst, Math.abs(d[i]! - r[i]!));
  }
  return worst;
}

function maxDiff(a: readonly number[], b: readonly number[]): number {
  assert.equal(a.length, b.length);
  return Math.max(...a.map((x, i) => Math.abs(x - b[i]!)));
}

function maxStateDiff(a: OptimizerState, b: OptimizerState): number {
  assert.deepEqual([...a.tensors.keys()].sort(), [...b.tensors.keys()].sort());
  let worst = 0;
  for (const [k, x] of a.tensors) {
    const y = b.tensors.get(k)!;
    const scale = Math.max(...y.map(Math.abs));
    assert.ok(scale > 0, `${k} is all zeros`);
    for (let i = 0; i < x.length; i++) worst = Math.max(worst, Math.abs(x[i]! - y[i]!) / scale);
  }
  return worst;
}

describe("FusedAdamWStep", () => {
  const data = batches(5, 3);
  const overrides = new Map([
    [Q0A, 0],
    [V1B, 0.5],
  ]);

  test("5 steps with a schedule and per-parameter weight decay give the parameters of TrainStep + AdamW", async () => {
    const host = await hostRun(data, { weightDecay: 0.1, overrides });
    const { fs, losses } = await fusedRun(data, { weightDecay: 0.1, weightDecayOverrides: overrides });
    const dp = await maxParamDiff(fs, host.params);
    const dl = maxDiff(losses, host.losses);
    console.log(`# fused vs host, 5 steps: max |Δparam| = ${dp.toExponential(2)}, max |Δloss| = ${dl.toExponential(2)}`);
    assert.equal(fs.stepCount, 5);
    assert.ok(dp <= 2e-6, `parameters differ by ${dp}`);
    assert.ok(dl <= 1e-5, `losses differ by ${dl}`);
    // the parameters moved by far more than that, and the overrides matter at this tolerance
    const init = fs.initial.get(V1B)!.data as Float32Array;
    const moved = Math.max(...host.params.get(V1B)!.map((v, i) => Math.abs(v - init[i]!)));
    assert.ok(moved > 1e-2, `moved ${moved}`);
    const plain = await hostRun(data, { weightDecay: 0.1 });
    const overrideEffect = Math.max(...plain.params.get(V1B)!.map((v, i) => Math.abs(v - host.params.get(V1B)![i]!)));
    assert.ok(overrideEffect > 100 * dp, `weight-decay override changes ${V1B} by ${overrideEffect}`);
    await fs.release();
  });

  for (const maxGradNorm of [0.05, 1e4]) {
    test(`clipping at max norm ${maxGradNorm} (${maxGradNorm < 1 ? "active" : "inactive"}) equals clip.ts + AdamW, and outputs the norm before clipping`, async () => {
      const host = await hostRun(data, { weightDecay: 0.01, maxGradNorm });
      const { fs, losses, norms } = await fusedRun(data, { weightDecay: 0.01, maxGradNorm });
      assert.ok(fs.clips);
      const dp = await maxParamDiff(fs, host.params);
      const dn = Math.max(...norms.map((x, i) => Math.abs(x - host.norms[i]!) / host.norms[i]!));
      console.log(`# clip ${maxGradNorm}: norms ${host.norms.map((x) => x.toFixed(3)).join(", ")}; max rel Δnorm ${dn.toExponential(2)}, max |Δparam| ${dp.toExponential(2)}`);
      if (maxGradNorm < 1) assert.ok(host.norms.every((x) => x > maxGradNorm), "the test clips every step");
      else assert.ok(host.norms.every((x) => x < maxGradNorm));
      assert.ok(dn <= 1e-5, `gradient norms differ by ${dn}`);
      assert.ok(dp <= 2e-6, `parameters differ by ${dp}`);
      assert.ok(maxDiff(losses, host.losses) <= 1e-5);
      await fs.release();
    });
  }

  test("on webgpu, with parameters and moments kept in GPU buffers between steps, the same 5 steps give the host run's parameters", async (t) => {
    let run: Awaited<ReturnType<typeof fusedRun>>;
    try {
      run = await fusedRun(data, { weightDecay: 0.1, weightDecayOverrides: overrides, maxGradNorm: 1, session: { ep: "webgpu" } });
    } catch (e) {
      if ((e as { code?: string }).code === "PEFT_ERR_EXECUTION_PROVIDER") return t.skip("no WebGPU adapter here");
      throw e;
    }
    const host = await hostRun(data, { weightDecay: 0.1, overrides, maxGradNorm: 1 });
    const dp = await maxParamDiff(run.fs, host.params);
    const dl = maxDiff(run.losses, host.losses);
    console.log(`# fused on webgpu vs host on cpu, 5 steps: max |Δparam| = ${dp.toExponential(2)}, max |Δloss| = ${dl.toExponential(2)}`);
    assert.ok(dp <= 1e-4, `parameters differ by ${dp}`);
    assert.ok(dl <= 1e-4, `losses differ by ${dl}`);
    await run.fs.release();
  });

  test("float16 on webgpu with in-graph loss scaling follows the float32 host run (losses, parameters)", async (t) => {
    let run: Awaited<ReturnType<typeof fusedRun>>;
    try {
      run = await fusedRun(data, { weightDecay: 0.1, maxGradNorm: 1, dtype: "float16", session: { ep: "webgpu" } });
    } catch (e) {
      if ((e as { code?: string }).code === "PEFT_ERR_EXECUTION_PROVIDER") return t.skip("no WebGPU adapter here");
      throw e;
    }
    const host = await hostRun(data, { weightDecay: 0.1, maxGradNorm: 1 });
    assert.equal(run.fs.scaler?.scale, 65536, "PyTorch's initial scale, no overflow in 5 steps");
    assert.equal(run.fs.stepCount, 5);
    // Adam moves each element by about ±lr·m/√v, so a near-zero gradient's float16 rounding can
    // flip an element's direction: compare the whole update (L2), not the worst element
    const got = await run.fs.downloadParams();
    let diff = 0;
    let moved = 0;
    for (const [n, p] of host.params) {
      const [g0, q] = [run.fs.initial.get(n)!.data as Float32Array, got.get(n)!.data as Float32Array];
      for (let i = 0; i < p.length; i++) {
        diff += (q[i]! - p[i]!) ** 2;
        moved += (p[i]! - g0[i]!) ** 2;
      }
    }
    const rel = Math.sqrt(diff / moved);
    const dl = Math.max(...run.losses.map((l, i) => Math.abs(l - host.losses[i]!) / host.losses[i]!));
    console.log(`# float16 fused on webgpu vs float32 host, 5 steps: max rel Δloss ${dl.toExponential(2)}, ‖Δparam‖ / ‖update‖ ${rel.toExponential(2)}`);
    assert.ok(dl <= 1e-3, `losses differ by ${dl}`);
    assert.ok(rel <= 0.1, `parameters differ by ${rel} of the update`);
    await run.fs.release();
  });

  test("clipping changes the result (so the clipped comparison can fail)", async () => {
    const clipped = await fusedRun(data.slice(0, 2), { weightDecay: 0.01, maxGradNorm: 0.05 });
    const free = await fusedRun(data.slice(0, 2), { weightDecay: 0.01 });
    assert.equal(free.fs.clips, false);
    assert.equal(free.norms.length, 0, "no norm output without clipping");
    const a = await clipped.fs.downloadParams();
    const b = await free.fs.downloadParams();
    const d = Math.max(...(a.get(V1B)!.data as Float32Array).map((v, i) => Math.abs(v - (b.get(V1B)!.data as Float32Array)[i]!)));
    assert.ok(d > 1e-4, `clipping changed ${V1B} by only ${d}`);
    await clipped.fs.release();
    await free.fs.release();
  });

  test("state: stateDict equals AdamW's (checkpoint form), the host AdamW resumes from it, and the fused step resumes from AdamW's", async () => {
    const first = data.slice(0, 3);
    const rest = data.slice(3);
    const host = await hostRun(first, { weightDecay: 0.1, overrides, keep: true });
    const { fs } = await fusedRun(first, { weightDecay: 0.1, weightDecayOverrides: overrides });
    const hs = host.opt.stateDict();
    const fsState = await fs.stateDict();
    assert.equal(fsState.kind, "adamw");
    assert.equal(fsState.step, 3);
    assert.deepEqual(fsState.params, hs.params);
    assert.deepEqual(fsState.hyperparams, hs.hyperparams);
    const ds = maxStateDiff(fsState, hs);
    console.log(`# state after 3 steps: max |Δmoment| / max |moment| per buffer ${ds.toExponential(2)}`);
    assert.ok(ds <= 1e-5, `moments differ by ${ds} (relative to each buffer's largest entry)`);

    // resume the fused step from the host state and parameters: 2 more steps = 5 host steps
    const resumed = await FusedAdamWStep.create(pmOf(), { task: "causal-lm", dropout: false, weightDecay: 0.5 });
    resumed.loadStateDict(hs);
    resumed.setParams(tensors(host.step, host.params));
    assert.equal(resumed.weightDecay, 0.1, "hyperparameters come from the state");
    assert.equal(resumed.stepCount, 3);
    for (const [k, b] of rest.entries()) await resumed.run(b, LRS[(k + 3) % LRS.length]);
    const full = await hostRun(data, { weightDecay: 0.1, overrides });
    const dResume = await maxParamDiff(resumed, full.params);
    console.log(`# fused resumed from AdamW state: max |Δparam| vs 5 host steps ${dResume.toExponential(2)}`);
    assert.ok(dResume <= 2e-6, `resumed fused step differs by ${dResume}`);

    // and the host optimizer takes the fused state: 2 host steps from it = 5 host steps
    const opt2 = new AdamW(
      host.step.names.map((n) => ({ name: n, data: host.params.get(n)! })),
      {},
    );
    const fusedParams = await fs.downloadParams();
    for (const [n, t] of fusedParams) host.params.get(n)!.set(t.data as Float32Array);
    opt2.loadStateDict(fsState);
    for (const [k, b] of rest.entries()) {
      const r = await host.step.run(b, tensors(host.step, host.params));
      opt2.step(r.grads as Map<string, Float32Array>, LRS[(k + 3) % LRS.length]);
    }
    let dHost = 0;
    for (const [n, p] of host.params) {
      const f = full.params.get(n)!;
      for (let i = 0; i < p.length; i++) dHost = Math.max(dHost, Math.abs(p[i]! - f[i]!));
    }
    assert.ok(dHost <= 2e-6, `host optimizer resumed from the fused state differs by ${dHost}`);
    await host.step.release();
    await resumed.release();
    await fs.release();
  });

  test("a fresh step's state is empty like AdamW's, and reading a released step is a typed error", async () => {
    const fs = await FusedAdamWStep.create(pmOf(), { task: "causal-lm", dropout: false });
    const st = await fs.stateDict();
    assert.equal(st.step, 0);
    assert.equal(st.tensors.size, 0);
    await fs.run(data[0]!);
    assert.equal((await fs.stateDict()).tensors.size, 2 * fs.names.length);
    await fs.release();
    await assert.rejects(fs.downloadParams(), (e: Error & { code?: string }) => e.code === "PEFT_ERR_DISPOSED_VALUE");
  });

  test("misuse raises typed errors", async () => {
    const pm = pmOf();
    await assert.rejects(FusedAdamWStep.create(pm, { task: "causal-lm", amsgrad: true }), (e: Error & { code?: string }) => e.code === "PEFT_ERR_UNSUPPORTED_OPTION");
    await assert.rejects(
      FusedAdamWStep.create(pm, { task: "causal-lm", weightDecayOverrides: new Map([["nope", 0]]) }),
      (e: Error & { code?: string }) => e.code === "PEFT_ERR_CONFIG" && /nope/.test(e.message),
    );
    await assert.rejects(FusedAdamWStep.create(pm, { task: "causal-lm", betas: [1, 0.999] }), (e: Error & { code?: string }) => e.code === "PEFT_ERR_CONFIG");
    const fs = await FusedAdamWStep.create(pm, { task: "causal-lm", dropout: false });
    assert.throws(
      () => fs.setParams(new Map([[Q0A, { dtype: "float32", shape: [2], data: new Float32Array(2) } as Tensor]])),
      (e: Error & { code?: string }) => e.code === "PEFT_ERR_SHAPE_MISMATCH",
    );
    assert.throws(() => fs.loadStateDict({ kind: "sgd", step: 0, hyperparams: {}, params: [], tensors: new Map() }), (e: Error & { code?: string }) => e.code === "PEFT_ERR_CONFIG");
    await assert.rejects(fs.run(data[0]!, -1), (e: Error & { code?: string }) => e.code === "PEFT_ERR_CONFIG");
    assert.equal(fs.stepCount, 0, "a rejected step changes nothing");
    await fs.release();
  });

  test("webgpu placement (predicted statically): per step only the batch and the optimizer scalars go in, the loss and norm come out", () => {
    const fg = buildFusedAdamWGraph(pmOf(), { task: "causal-lm", dropout: false, maxGradNorm: 1 });
    const state = fg.names.flatMap((n) => [n, FUSED_NAMES.expAvg(n), FUSED_NAMES.expAvgSq(n)]);
    const dims = { batch: 4, seq: 16 };
    const p = predictWebgpuPlacement(fg.graph, { dims, deviceInputs: state, deviceOutputs: fg.stateOutputs });
    const moved = (kind: string) => p.crossings.filter((c) => c.kind === kind).map((c) => c.value);
    const fed = moved("feed");
    assert.ok(fed.every((v) => ["input_ids", "attention_mask", "labels"].includes(v) || v.startsWith("adamw::") || v.startsWith("clip::")), `fed: ${fed.join(", ")}`);
    assert.deepEqual(moved("fetch").sort(), ["grad_norm", "loss"]);
    // the optimizer adds no CPU node: the same CPU nodes (int64 shape arithmetic, the loss) as loss + gradients alone
    const lg = buildLossGraph(pmOf(), { task: "causal-lm", dropout: false });
    grad(lg.loss, lg.params).forEach((gv, i) => lg.graph.output(gv, `grad::${lg.names[i]}`));
    const host = predictWebgpuPlacement(lg.graph, { dims });
    assert.equal(p.summary.cpuNodes, host.summary.cpuNodes);
    const stateBytes = fg.names.reduce((s, n) => s + 4 * fg.initial.get(n)!.data.length, 0);
    console.log(`# predicted per-step host<->GPU bytes: fused ${p.summary.bytesByKind.feed + p.summary.bytesByKind.fetch} (feeds + fetches) vs ${host.summary.bytesByKind.feed + host.summary.bytesByKind.fetch} for loss + gradients (parameters ${stateBytes} B)`);
    assert.ok(host.summary.bytesByKind.feed + host.summary.bytesByKind.fetch >= 2 * stateBytes, "the host path copies parameters in and gradients out");
  });
});
