import { describe, test } from "node:test";
import assert from "node:assert/strict";
import * as G from "../../graph/api.js";
import { grad } from "../../graph/autodiff.js";
import { crossEntropy } from "../../graph/composite.js";
import { Graph } from "../../graph/graph.js";
import { ModelContext } from "../../models/context.js";
import { CompiledGraph } from "../../runtime/session.js";
import { tensor } from "../../tensor.js";
import { collate } from "../../train/batch.js";
import { AdamW } from "../../train/optim/adamw.js";
import { syntheticTask, tinyModel } from "../../compose/atlas/tiny-model.test-util.js";
import { intrinsicDimension } from "./d90.js";
import { type ProjectionKind, type ProjectionSpec, fastfoodParts, projectGraph, projectHost } from "./projection.js";
import { type SubspaceProblem, SubspaceTrainer, classifierProblem } from "./subspace.js";

const model = tinyModel(5, 2);
const PARAMS = ["encoder.layer.0.attention.self.query.weight", "encoder.layer.1.intermediate.dense.bias", "classifier.weight", "classifier.bias"];
const examples = syntheticTask(12, 3);

async function projectWithGraph(spec: ProjectionSpec, d: Float64Array): Promise<Float64Array> {
  const g = new Graph("p");
  const x = g.input("d", "float64", [spec.dim]);
  g.output(projectGraph(g, x, spec, "float64"), "y");
  const s = await CompiledGraph.create(g);
  try {
    const out = await s.run({ d: tensor("float64", [spec.dim], d) }, ["y"]);
    return out.y!.data as Float64Array;
  } finally {
    await s.release();
  }
}

function maxAbs(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

describe("random projections", () => {
  for (const [kind, dim, size] of [
    ["dense", 7, 50],
    ["fastfood", 5, 37],
    ["fastfood", 100, 1000],
    ["fastfood", 3000, 9000],
  ] as const) {
    test(`${kind} d=${dim} D=${size}: the graph computes the host's P·d, and P's columns have unit norm`, async () => {
      const spec: ProjectionSpec = { kind, dim, size, seed: 9 };
      const d = Float64Array.from({ length: dim }, (_, i) => Math.sin(3 * i + 1));
      const host = projectHost(spec, d);
      const graph = await projectWithGraph(spec, d);
      assert.ok(maxAbs(host, graph) < 1e-9, `graph vs host ${maxAbs(host, graph)}`);
      // columns: P·e_j; untruncated Fastfood columns are exactly unit, the cut rows take a little off
      const full = kind === "fastfood" ? { ...spec, size: fastfoodParts(spec).blocks * fastfoodParts(spec).blockSize } : spec;
      for (const j of [0, dim - 1]) {
        const e = new Float64Array(dim);
        e[j] = 1;
        const col = projectHost(full, e);
        const norm = Math.sqrt(col.reduce((s, v) => s + v * v, 0));
        assert.ok(Math.abs(norm - 1) < 1e-9, `column ${j} norm ${norm}`);
      }
      // a different seed is a different projection
      assert.ok(maxAbs(host, projectHost({ ...spec, seed: 10 }, d)) > 1e-3);
    });
  }

  test("Fastfood columns are nearly orthogonal and spread over all D rows", () => {
    const spec: ProjectionSpec = { kind: "fastfood", dim: 16, size: 4096, seed: 1 };
    const cols = [0, 1, 2].map((j) => projectHost(spec, Float64Array.from({ length: 16 }, (_, i) => (i === j ? 1 : 0))));
    const dot = (a: Float64Array, b: Float64Array) => a.reduce((s, v, i) => s + v * b[i]!, 0);
    assert.ok(Math.abs(dot(cols[0]!, cols[1]!)) < 0.1 && Math.abs(dot(cols[1]!, cols[2]!)) < 0.1);
    assert.ok(cols[0]!.every((v) => v !== 0), "every parameter moves with each coordinate");
  });
});

describe("subspace training", () => {
  for (const kind of ["dense", "fastfood"] as const) {
    test(`${kind}: ∂loss/∂d from the graph equals float64 central differences`, async () => {
      const problem = classifierProblem(model, PARAMS);
      const t = SubspaceTrainer.create(problem, { projection: kind, dim: 6, seed: 2, dtype: "float64" });
      try {
        const feeds = problem.feeds(examples);
        const d = Float64Array.from({ length: 6 }, (_, i) => 0.4 * Math.cos(i + 2));
        const { grad: g } = await t.lossAndGradient(feeds, d);
        const eps = 1e-6;
        let worst = 0;
        for (let i = 0; i < d.length; i++) {
          const up = Float64Array.from(d);
          const down = Float64Array.from(d);
          up[i] += eps;
          down[i] -= eps;
          const num = ((await t.evaluate([{ feeds, rows: 1 }], up)).loss - (await t.evaluate([{ feeds, rows: 1 }], down)).loss) / (2 * eps);
          worst = Math.max(worst, Math.abs(num - g[i]!) / Math.max(1e-4, Math.abs(num)));
        }
        assert.ok(worst < 1e-5, `worst relative error ${worst}`);
        assert.ok(g.some((v) => Math.abs(v) > 1e-4), "the gradient is not zero");
      } finally {
        await t.release();
      }
    });
  }

  test("d = D with P = I is ordinary training of the same parameters (AdamW, 4 steps)", async () => {
    const problem = classifierProblem(model, PARAMS);
    const size = problem.blocks.reduce((s, b) => s + b.shape.reduce((a, x) => a * x, 1), 0);
    const t = SubspaceTrainer.create(problem, { projection: "identity", dim: size, seed: 0 });
    const batches = [0, 1, 2, 3].map((k) => examples.slice(3 * k, 3 * k + 3));
    try {
      await t.fit({ steps: 4, lr: 0.05, batch: (s) => problem.feeds(batches[s]!) });
      // ordinary training: the same parameters as graph inputs, the task loss, its gradient, AdamW
      const g = new Graph("ordinary");
      const inputIds = g.input("input_ids", "int64", ["batch", "seq"]);
      const attentionMask = g.input("attention_mask", "int64", ["batch", "seq"]);
      const ctx = new ModelContext(g, model.weights, { inputParams: (n) => PARAMS.includes(n) });
      const { logits } = model.def.build(ctx, model.config, { inputIds, attentionMask });
      const loss = crossEntropy(logits, g.input("labels", "int64", ["batch"]));
      const inputs = PARAMS.map((n) => g.inputs.find((v) => v.name === n)!);
      grad(loss, inputs).forEach((gv, i) => g.output(gv, `grad_${i}`));
      const s = await CompiledGraph.create(g);
      const params = PARAMS.map((n) => ({ name: n, data: Float32Array.from(ctx.inputParams.get(n)!.data as Float32Array) }));
      const opt = new AdamW(params, { lr: 0.05, weightDecay: 0 });
      try {
        for (const b of batches) {
          const c = collate(b, "seq-cls");
          const feeds: Record<string, ReturnType<typeof tensor>> = { input_ids: c.inputIds, attention_mask: c.attentionMask, labels: c.labels };
          params.forEach((p, i) => (feeds[p.name] = tensor("float32", problem.blocks[i]!.shape, p.data)));
          const out = await s.run(feeds, PARAMS.map((_, i) => `grad_${i}`));
          opt.step(PARAMS.map((_, i) => out[`grad_${i}`]!.data as Float32Array));
        }
      } finally {
        await s.release();
      }
      const deltas = t.deltas();
      let moved = 0;
      params.forEach((p, i) => {
        const base = model.weights.get(p.name).data as Float32Array;
        const sub = Float64Array.from(base, (v, k) => v + deltas.get(p.name)![k]!);
        assert.ok(maxAbs(sub, p.data) < 1e-5, `${p.name}: ${maxAbs(sub, p.data)}`);
        moved = Math.max(moved, maxAbs(base, p.data));
        assert.equal(t.layout.blocks[i]!.name, p.name);
      });
      assert.ok(moved > 0.05, `training moved the parameters (${moved})`);
    } finally {
      await t.release();
    }
  });

  test("a problem whose intrinsic dimension is 4 by construction: d90 = 4 (dense and Fastfood)", async () => {
    // Li et al.'s toy: θ ∈ R^40 in 4 groups of 10; group g is right when its sum is within 0.02 of
    // its target. The solutions form a 36-dimensional affine subspace, so a random d-dimensional
    // subspace meets it iff d ≥ 4: below, least squares leaves a residual in every group.
    const targets = [1.5, -2, 0.7, 2.5];
    const D = 40;
    const toy: SubspaceProblem = {
      blocks: [{ name: "theta", shape: [D] }],
      build(g, delta, dtype) {
        const theta = G.add(g.initializer("theta0", tensor("float64", [D], new Float64Array(D))), delta("theta")!);
        const sums = G.reduceSum(G.reshape(theta, [4, 10]), [1], false);
        const diff = G.sub(sums, g.initializer("targets", tensor(dtype, [4], Float64Array.from(targets))));
        return { loss: G.meanAll(G.mul(diff, diff)), metric: G.meanAll(G.cast(G.less(G.abs(diff), 0.02), dtype)) };
      },
    };
    const trainAt = async (kind: ProjectionKind, dim: number): Promise<number> => {
      const t = SubspaceTrainer.create(toy, { projection: kind, dim, seed: 7, dtype: "float64" });
      try {
        await t.fit({ steps: 1500, lr: 0.3, schedule: "cosine", batch: () => ({}) });
        return (await t.evaluate([{ feeds: {}, rows: 1 }])).metric;
      } finally {
        await t.release();
      }
    };
    const full = await trainAt("identity", D);
    assert.equal(full, 1, "full training solves every group");
    for (const kind of ["dense", "fastfood"] as const) {
      const points = [];
      for (const dim of [1, 3, 4, 6]) points.push({ dim, metric: await trainAt(kind, dim) });
      assert.deepEqual(points.map((p) => p.metric), [0, 0, 1, 1], `${kind}: ${JSON.stringify(points)}`);
      assert.equal(intrinsicDimension(points, full), 4);
    }
  });
});
