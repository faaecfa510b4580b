/**
 * Checks the description of the TF.js graph in `model.ts` (and docs/use-lite.md) against the
 * package's `model.json`: the constants the peft-ts builder relies on, and the wiring that is
 * easy to get wrong (the doubled embedding, pre-norm, no final norm, relu, l2 output).
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { describe, test } from "node:test";
import { USE_LITE_DEFAULT_CONFIG as C } from "./config.js";
import { loadTfjsWeights, readTfjsModelJson } from "./tfjs-weights.js";
import { useLitePackageDir } from "./weights.js";

const m = readTfjsModelJson(join(useLitePackageDir(), "model.json"));
const w = loadTfjsWeights(m);
const nodes = new Map(m.nodes.map((n) => [n.name, n]));
const K = "module_apply_default/Encoder_en/KonaTransformer/";
const TS = `${K}Encode/TransformerStack/`;

function values(name: string): number[] {
  const t = w.get(name);
  assert.ok(t, `constant ${name}`);
  return Array.from(t.data as ArrayLike<number>);
}
function inputsOf(name: string): readonly string[] {
  const n = nodes.get(name);
  assert.ok(n, `node ${name}`);
  return n.input;
}

describe("USE-lite TF.js graph facts", () => {
  test("inputs are the sparse indices and values; op counts match two layers", () => {
    assert.equal(nodes.get("indices")?.op, "Placeholder");
    assert.equal(nodes.get("values")?.op, "Placeholder");
    const count = (op: string) => m.nodes.filter((n) => n.op === op).length;
    assert.equal(count("Softmax"), C.numLayers);
    assert.equal(count("Relu"), C.numLayers);
    assert.equal(count("Conv2D"), 2 * C.numLayers); // qkv + output projection per layer
    assert.equal(count("Rsqrt"), 2 * C.numLayers + 1); // two layer norms per layer + l2 normalize
    assert.equal(count("Tanh"), 1);
    assert.equal(count("Sin"), 1);
    assert.equal(count("Cos"), 1);
  });

  test("clip length, layer-norm epsilon, l2 epsilon and padding bias", () => {
    assert.deepEqual(values(`${K}ClipToMaxLength/Less/y`), [C.maxPositionEmbeddings]);
    const eps = `${TS}Layer_1/TransformerLayer/FFN/layer_prepostprocess/layer_norm/Cast/x`;
    assert.deepEqual(values(eps), [Math.fround(C.layerNormEps)]);
    const lnAdds = m.nodes.filter((n) => n.name.endsWith("/layer_norm/add"));
    assert.equal(lnAdds.length, 2 * C.numLayers);
    for (const n of lnAdds) assert.equal(n.input[1], eps, n.name);
    assert.deepEqual(values("module_apply_default/Encoder_en/hidden_layers/l2_normalize/Maximum/y"), [Math.fround(C.l2NormEps)]);
    assert.deepEqual(values(`${TS}Layer_1/TransformerLayer/MultiheadAttention/DotProductAttention/attention_bias_ignore_padding/mul/y`), [-1e9]);
  });

  test("heads, head sizes, q/k/v split and query scaling per layer", () => {
    const mha = (i: number) => `${TS}Layer_${i}/TransformerLayer/MultiheadAttention/`;
    assert.deepEqual(values(`${mha(1)}split_heads/split_last_dimension/Reshape/shape/2`), [C.numHeads]);
    [C.embeddingSize, C.hiddenSize].forEach((d, i) => {
      assert.deepEqual(values(`${mha(i)}Const`), [d, d, d]);
      assert.deepEqual(values(`${mha(i)}split_heads/split_last_dimension/Reshape/shape/3`), [d / C.numHeads]);
      assert.deepEqual(values(`${mha(i)}mul/y`), [Math.fround(1 / Math.sqrt(d / C.numHeads))]);
      // q (first SplitV output) is scaled, k (second) is transposed into the product, v (third) is weighted
      assert.deepEqual(inputsOf(`${mha(i)}mul`)[0], `${mha(i)}split_heads/transpose`);
      assert.deepEqual(inputsOf(`${mha(i)}DotProductAttention/BaseDotProductAttention/MatMul`), [`${mha(i)}mul`, `${mha(i)}split_heads_1/transpose`]);
      assert.equal(inputsOf(`${mha(i)}DotProductAttention/BaseDotProductAttention/MatMul_1`)[1], `${mha(i)}split_heads_2/transpose`);
      assert.deepEqual(inputsOf(`${mha(i)}split_heads_2/split_last_dimension/Reshape`)[0], `${mha(i)}split:2`);
    });
  });

  test("encoder input is emb + (emb + timing signal)", () => {
    const scatter = `${K}Encode/Scatter/ScatterNd`;
    assert.deepEqual(inputsOf(`${TS}Layer_0/add`), [scatter, `${TS}Layer_0/AddTimingSignal/Scatter/ScatterNd`]);
    assert.deepEqual(inputsOf(`${TS}Layer_0/AddTimingSignal/add`), [`${TS}Layer_0/AddTimingSignal/Gather/GatherNd`, `${TS}Layer_0/AddTimingSignal/TimingSignal/concat`]);
    assert.equal(inputsOf(`${TS}Layer_0/AddTimingSignal/Gather/GatherNd`)[0], scatter);
    const inv = values(`${TS}Layer_0/AddTimingSignal/TimingSignal/ExpandDims_1`);
    assert.equal(inv.length, C.embeddingSize / 2);
    assert.equal(inv[0], 1);
    assert.ok(Math.abs(inv.at(-1)! - 1e-4) < 1e-9);
  });

  test("pre-norm layers with relu feed-forward, residual projection in layer 0 only, no final norm", () => {
    for (let i = 0; i < C.numLayers; i++) {
      const L = `${TS}Layer_${i}/TransformerLayer/`;
      assert.deepEqual(inputsOf(`${L}FFN/conv1/Relu`), [`${L}FFN/conv1/BiasAdd`]);
      const attnResidual = inputsOf(`${L}layer_postprocess/add`)[1];
      assert.equal(attnResidual, i === 0 ? `${L}AdjustResidualInput/Scatter/ScatterNd` : `${TS}Layer_${i - 1}/TransformerLayer/FFN/layer_postprocess/add`);
      assert.equal(inputsOf(`${L}FFN/layer_postprocess/add`)[1], `${L}layer_postprocess/add`);
    }
    assert.equal(inputsOf(`${K}mul`)[0], `${TS}Layer_${C.numLayers - 1}/TransformerLayer/FFN/layer_postprocess/add`);
    assert.deepEqual(inputsOf(`${K}div`), [`${K}Sum`, `${K}ExpandDims_1`]);
    // the mean divides by max(length, 1)
    const [len, one] = inputsOf(`${K}Maximum`);
    assert.equal(len, `${TS}MaskLength/Sum`);
    assert.deepEqual(values(one!), [1]);
    assert.equal(nodes.get("module_apply_default/Encoder_en/hidden_layers/tanh_layer_0/Tanh")?.op, "Tanh");
    assert.equal(m.nodes.at(-1)?.name, "module_apply_default/Encoder_en/hidden_layers/l2_normalize");
  });
});
