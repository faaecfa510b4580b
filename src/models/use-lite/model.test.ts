import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { grad } from "../../graph/autodiff.js";
import * as G from "../../graph/api.js";
import { Graph } from "../../graph/graph.js";
import type { Value } from "../../graph/types.js";
import { CompiledGraph } from "../../runtime/session.js";
import { tensor, type DType, type Tensor } from "../../tensor.js";
import { mapSource, ModelContext, type LinearSite } from "../context.js";
import { loadUseLite } from "./convert.js";
import { UseLiteEmbedder } from "./embed.js";
import { buildUseLiteEncoder, useLite } from "./model.js";
import { maxAbsDiff, readUseLiteReference } from "./reference-fixture.js";
import { useLiteLinearModules, useLiteParamShapes } from "./weights.js";

const model = loadUseLite();
const ref = readUseLiteReference();

/** Deterministic pseudo-random values in [−scale, scale). */
function noise(n: number, seed: number, scale: number): number[] {
  let s = seed >>> 0;
  return Array.from({ length: n }, () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return (s / 2 ** 32 - 0.5) * 2 * scale;
  });
}

function floatTensor(dtype: "float32" | "float64", shape: number[], values: number[]): Tensor {
  return dtype === "float32" ? tensor("float32", shape, Float32Array.from(values)) : tensor("float64", shape, Float64Array.from(values));
}

describe("USE-lite forward pass against the package's TF.js output", () => {
  let embedder: UseLiteEmbedder;
  before(async () => {
    embedder = await UseLiteEmbedder.create({ model, threads: 2 });
  });
  after(async () => embedder.release());

  test("the fixture has a dozen 512-d embeddings, one of them for an empty text", () => {
    assert.ok(ref.embeddings.texts.length >= 12);
    assert.equal(ref.embeddings.dim, 512);
    assert.ok(ref.embeddings.texts.includes(""));
  });

  test("sentence embeddings equal the reference to ≤ 1e-4 (one padded batch)", async (t) => {
    const out = await embedder.embed(ref.embeddings.texts);
    assert.equal(out.length, ref.embeddings.texts.length);
    let worst = 0;
    out.forEach((row, i) => {
      const d = maxAbsDiff(row, ref.embeddings.values[i]!);
      worst = Math.max(worst, d);
      assert.ok(d <= 1e-4, `${JSON.stringify(ref.embeddings.texts[i])}: max |Δ| = ${d}`);
    });
    t.diagnostic(`max |peft-ts − TF.js| = ${worst.toExponential(2)}`);
  });

  test("padding and batch composition do not change an embedding", async () => {
    const texts = ref.embeddings.texts.filter((s) => s !== "");
    const batch = await embedder.embed(texts);
    for (const i of [0, 3, texts.length - 1]) {
      const [alone] = await embedder.embed([texts[i]!]);
      assert.ok(maxAbsDiff(alone!, batch[i]!) <= 1e-5, `text ${i} alone vs in a batch`);
    }
  });

  test("left padding gives the same embedding as right padding", async () => {
    const g = new Graph("use_lite_left_pad");
    g.output(buildUseLiteEncoder(new ModelContext(g, mapSource(model.weights)), model.config).sentenceEmbedding, "e");
    const cg = await CompiledGraph.create(g, { threads: 2 });
    try {
      const texts = ["Hello world.", "The movie was absolutely wonderful, I loved every minute of it."];
      const right = model.tokenizer.encodeBatch(texts);
      const [b, w] = right.inputIds.shape as [number, number];
      const ids = new BigInt64Array(b * w);
      const mask = new BigInt64Array(b * w);
      right.lengths.forEach((len, r) => {
        for (let k = 0; k < len; k++) {
          ids[r * w + w - len + k] = right.inputIds.data[r * w + k]!;
          mask[r * w + w - len + k] = 1n;
        }
      });
      const l = await cg.run({ input_ids: tensor("int64", [b, w], ids), attention_mask: tensor("int64", [b, w], mask) });
      const r = await cg.run({ input_ids: right.inputIds, attention_mask: right.attentionMask });
      assert.ok(right.lengths[0]! < w, "the first row is padded");
      assert.ok(maxAbsDiff(l["e"]!.data as Float32Array, r["e"]!.data as Float32Array) <= 1e-5);
    } finally {
      await cg.release();
    }
  });

  test("an empty text embeds as l2normalize(tanh(pooler bias)), as TF does inside a batch", async () => {
    const bias = model.weights.get("pooler.dense.bias")!.data as Float32Array;
    const y = Array.from(bias, Math.tanh);
    const norm = Math.sqrt(y.reduce((s, v) => s + v * v, 0));
    const expected = y.map((v) => v / norm);
    const [alone] = await embedder.embed([""]);
    assert.ok(maxAbsDiff(alone!, expected) <= 1e-6);
    assert.ok(maxAbsDiff(ref.embeddings.values[ref.embeddings.texts.indexOf("")]!, expected) <= 1e-6);
  });
});

describe("USE-lite as a tunable model", () => {
  test("every projection is a ModelContext.linear call under its module name", () => {
    const g = new Graph("use_lite_sites");
    const ctx = new ModelContext(g, mapSource(model.weights));
    buildUseLiteEncoder(ctx, model.config);
    assert.deepEqual(
      ctx.linearSites.map((s) => s.name),
      useLiteLinearModules(model.config),
    );
    const shapes = useLiteParamShapes(model.config);
    for (const s of ctx.linearSites) assert.deepEqual([s.outFeatures, s.inFeatures], shapes.get(`${s.name}.weight`));
  });

  test("useLite.build (ModelDef shape) gives the embeddings as logits; the embeds hook can prepend virtual tokens", async () => {
    const run = async (prompt: boolean) => {
      const g = new Graph("use_lite_def");
      const ids = g.input("input_ids", "int64", ["batch", "seq"]);
      const mask = g.input("attention_mask", "int64", ["batch", "seq"]);
      const embeds = ({ embeds: e, mask: m }: { embeds: Value; mask: Value }) => {
        const batch = G.gather(G.shapeOf(m), g.ints([0]));
        const virt = g.initializer("prompt", floatTensor("float32", [1, 2, 256], noise(512, 5, 0.5)));
        const v = G.expand(virt, G.concat([batch, g.ints([2, 256])], 0));
        const ones = G.expand(g.constant(tensor("int64", [1, 2], BigInt64Array.of(1n, 1n))), G.concat([batch, g.ints([2])], 0));
        return { embeds: G.concat([v, e], 1), mask: G.concat([ones, m], 1) };
      };
      const ctx = new ModelContext(g, mapSource(model.weights), prompt ? { hooks: { embeds } } : {});
      const out = useLite.build(ctx, model.config, { inputIds: ids, attentionMask: mask });
      g.output(out.logits, "logits");
      g.output(out.attentionMask, "mask");
      const cg = await CompiledGraph.create(g, { threads: 2 });
      try {
        const b = model.tokenizer.encodeBatch(["Hello world."]);
        return await cg.run({ input_ids: b.inputIds, attention_mask: b.attentionMask });
      } finally {
        await cg.release();
      }
    };
    const plain = await run(false);
    const hello = ref.embeddings.values[ref.embeddings.texts.indexOf("Hello world.")]!;
    assert.ok(maxAbsDiff(plain["logits"]!.data as Float32Array, hello) <= 1e-4);
    const prompted = await run(true);
    assert.deepEqual(prompted["mask"]!.shape, [1, plain["mask"]!.shape[1]! + 2]);
    assert.ok(maxAbsDiff(prompted["logits"]!.data as Float32Array, hello) > 1e-3);
    assert.equal(useLite.embeddingParam, "embeddings.word_embeddings.weight");
  });

  /**
   * Adds a LoRA-style term x·Aᵀ·Bᵀ to every linear layer (A frozen random, B a graph input) and
   * returns the graph with outputs `loss` = Σ embedding·w and the gradient of each B.
   */
  function loraGraph(dtype: "float32" | "float64", rank: number) {
    const g = new Graph(`use_lite_lora_${dtype}`);
    const bs: { name: string; value: Value; shape: number[] }[] = [];
    const hook = (site: LinearSite): Value => {
      const a = site.g.initializer(`${site.name}.lora_A`, floatTensor(dtype, [rank, site.inFeatures], noise(rank * site.inFeatures, bs.length + 1, 0.05)));
      const shape = [site.outFeatures, rank];
      const b = site.g.input(`${site.name}.lora_B`, dtype as DType, shape);
      bs.push({ name: site.name, value: b, shape });
      return G.add(site.base(site.x), G.matmul(G.matmul(site.x, G.transpose(a, [1, 0])), G.transpose(b, [1, 0])));
    };
    const ctx = new ModelContext(g, mapSource(model.weights), { dtype, hooks: { linear: () => hook } });
    const out = buildUseLiteEncoder(ctx, model.config);
    const w = g.initializer("probe", floatTensor(dtype, [model.config.hiddenSize], noise(model.config.hiddenSize, 99, 1)));
    const loss = G.sumAll(G.mul(out.sentenceEmbedding, w));
    g.output(loss, "loss");
    g.output(out.sentenceEmbedding, "embedding");
    grad(loss, bs.map((b) => b.value)).forEach((gv, i) => g.output(gv, `grad.${bs[i]!.name}`));
    return { g, bs };
  }

  test("a zero LoRA term leaves the output unchanged and every module gets a gradient", async () => {
    const { g, bs } = loraGraph("float32", 2);
    assert.deepEqual(
      bs.map((b) => b.name),
      useLiteLinearModules(model.config),
    );
    const cg = await CompiledGraph.create(g, { threads: 2 });
    try {
      const batch = model.tokenizer.encodeBatch(["Hello world.", "This film was terrible and boring."]);
      const feeds: Record<string, Tensor> = { input_ids: batch.inputIds, attention_mask: batch.attentionMask };
      for (const b of bs) feeds[`${b.name}.lora_B`] = floatTensor("float32", b.shape, new Array<number>(b.shape[0]! * b.shape[1]!).fill(0));
      const res = await cg.run(feeds);
      const [e0, e1] = [ref.embeddings.texts.indexOf("Hello world."), ref.embeddings.texts.indexOf("This film was terrible and boring.")];
      const emb = res["embedding"]!.data as Float32Array;
      assert.ok(maxAbsDiff(emb.subarray(0, 512), ref.embeddings.values[e0]!) <= 1e-4);
      assert.ok(maxAbsDiff(emb.subarray(512), ref.embeddings.values[e1]!) <= 1e-4);
      for (const b of bs) {
        const gv = res[`grad.${b.name}`]!.data as Float32Array;
        assert.ok(gv.some((v) => v !== 0) && gv.every(Number.isFinite), `gradient of ${b.name}`);
      }
    } finally {
      await cg.release();
    }
  });

  test("the gradient of a LoRA B matches central differences (float64)", async () => {
    const { g, bs } = loraGraph("float64", 2);
    const cg = await CompiledGraph.create(g, { threads: 2 });
    try {
      const batch = model.tokenizer.encodeBatch(["Meet me at 12:30.", "a"]);
      const base: Record<string, Tensor> = { input_ids: batch.inputIds, attention_mask: batch.attentionMask };
      bs.forEach((b, i) => (base[`${b.name}.lora_B`] = floatTensor("float64", b.shape, noise(b.shape[0]! * b.shape[1]!, 1000 + i, 0.02))));
      const res = await cg.run(base);
      const h = 1e-5;
      for (const name of ["encoder.layer.0.attention.self.query", "encoder.layer.1.output.dense", "pooler.dense"]) {
        const key = `${name}.lora_B`;
        const analytic = res[`grad.${name}`]!.data as Float64Array;
        for (const k of [0, 3]) {
          const shifted = (delta: number): Record<string, Tensor> => {
            const data = Float64Array.from(base[key]!.data as Float64Array);
            data[k]! += delta;
            return { ...base, [key]: tensor("float64", base[key]!.shape, data) };
          };
          const lp = (await cg.run(shifted(h), ["loss"]))["loss"]!.data[0] as number;
          const lm = (await cg.run(shifted(-h), ["loss"]))["loss"]!.data[0] as number;
          const numeric = (lp - lm) / (2 * h);
          assert.ok(Math.abs(numeric - analytic[k]!) <= 1e-6 + 1e-4 * Math.abs(numeric), `${key}[${k}]: numeric ${numeric} vs analytic ${analytic[k]}`);
        }
      }
    } finally {
      await cg.release();
    }
  });
});
