import { test, describe } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ConfigError, MissingFileError, UnsupportedOptionError } from "../errors.js";
import { fixturePath } from "../util/paths.js";
import { loadHfConfig, parseHfConfig, safeParseHfConfig } from "./hf-config.js";

const fixtureRaw = (arch: string): Record<string, unknown> =>
  JSON.parse(readFileSync(fixturePath("peft-parity", arch, "base", "config.json"), "utf8")) as Record<string, unknown>;

function expectError<E extends Error>(fn: () => unknown, cls: new (...a: never[]) => E, check: (e: E) => void): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof cls, `expected ${cls.name}, got ${String(e)}`);
    check(e);
    return true;
  });
}

describe("hf-config: reference fixtures", () => {
  test("bert", () => {
    const c = loadHfConfig(fixturePath("peft-parity", "bert", "base"));
    assert.equal(c.modelType, "bert");
    if (c.modelType !== "bert") return;
    assert.equal(c.hiddenSize, 32);
    assert.equal(c.numLayers, 2);
    assert.equal(c.numHeads, 2);
    assert.equal(c.headDim, 16);
    assert.equal(c.intermediateSize, 64);
    assert.equal(c.vocabSize, 128);
    assert.equal(c.maxPositionEmbeddings, 64);
    assert.equal(c.typeVocabSize, 2);
    assert.equal(c.layerNormEps, 1e-12);
    assert.equal(c.activation, "gelu");
    assert.equal(c.padTokenId, 0);
    assert.deepEqual(c.labels, ["LABEL_0", "LABEL_1", "LABEL_2"]);
    assert.equal(c.numLabels, 3);
    assert.equal(c.classifierDropout, null);
    assert.equal(c.hiddenDropout, 0.1);
    assert.deepEqual(c.architectures, ["BertForSequenceClassification"]);
    assert.equal(c.dtype, "float32");
    assert.equal(c.file, fixturePath("peft-parity", "bert", "base", "config.json"));
  });

  test("gpt2: n_inner null → 4·n_embd, gelu_new → gelu_tanh, tied embeddings", () => {
    const c = loadHfConfig(fixturePath("peft-parity", "gpt2", "base", "config.json"));
    assert.equal(c.modelType, "gpt2");
    if (c.modelType !== "gpt2") return;
    assert.equal(c.hiddenSize, 32);
    assert.equal(c.intermediateSize, 128);
    assert.equal(c.activation, "gelu_tanh");
    assert.equal(c.layerNormEps, 1e-5);
    assert.equal(c.tieWordEmbeddings, true);
    assert.equal(c.padTokenId, null);
    assert.equal(c.eosTokenId, 50256);
    assert.equal(c.scaleAttnWeights, true);
    assert.equal(c.maxPositionEmbeddings, 64);
    assert.equal(c.headDim, 16);
  });

  test("llama: GQA, head_dim, rope_parameters.rope_theta, untied", () => {
    const c = loadHfConfig(fixturePath("peft-parity", "llama", "base"));
    assert.equal(c.modelType, "llama");
    if (c.modelType !== "llama") return;
    assert.equal(c.numHeads, 4);
    assert.equal(c.numKeyValueHeads, 2);
    assert.equal(c.headDim, 8);
    assert.equal(c.ropeTheta, 10000);
    assert.equal(c.rmsNormEps, 1e-6);
    assert.equal(c.activation, "silu");
    assert.equal(c.tieWordEmbeddings, false);
    assert.equal(c.attentionBias, false);
    assert.equal(c.mlpBias, false);
  });
});

describe("hf-config: defaults", () => {
  test("minimal configs get transformers' defaults", () => {
    const b = parseHfConfig({ model_type: "bert" }, "b.json");
    assert.equal(b.hiddenSize, 768);
    assert.equal(b.numLabels, 2);
    assert.deepEqual(b.labels, ["LABEL_0", "LABEL_1"]);
    assert.equal(b.padTokenId, 0);
    assert.equal(b.tieWordEmbeddings, true);
    const g = parseHfConfig({ model_type: "gpt2", n_embd: 64, n_head: 4 }, "g.json");
    assert.equal(g.intermediateSize, 256);
    assert.equal(g.vocabSize, 50257);
    assert.equal(g.bosTokenId, 50256);
    const l = parseHfConfig({ model_type: "llama", hidden_size: 64, num_attention_heads: 8 }, "l.json");
    assert.equal(l.headDim, 8);
    assert.equal(l.modelType === "llama" && l.numKeyValueHeads, 8);
    assert.equal(l.modelType === "llama" && l.ropeTheta, 10000);
    assert.equal(l.tieWordEmbeddings, false);
    assert.equal(l.bosTokenId, 1);
  });

  test("legacy rope_theta and rope_scaling: null (transformers 4.x) are read", () => {
    const l = parseHfConfig({ model_type: "llama", rope_theta: 500000, rope_scaling: null }, "l.json");
    assert.equal(l.modelType === "llama" && l.ropeTheta, 500000);
    const l2 = parseHfConfig({ model_type: "llama", rope_theta: 1, rope_parameters: { rope_type: "default", rope_theta: 250 } }, "l.json");
    assert.equal(l2.modelType === "llama" && l2.ropeTheta, 250);
  });

  test("num_labels without id2label; unknown keys tolerated and kept in raw", () => {
    const c = parseHfConfig({ model_type: "bert", num_labels: 5, my_custom_key: [1, 2] }, "b.json");
    assert.equal(c.numLabels, 5);
    assert.equal(c.labels[4], "LABEL_4");
    assert.deepEqual(c.raw["my_custom_key"], [1, 2]);
  });

  test("swish and gelu_pytorch_tanh are folded to their math", () => {
    assert.equal(parseHfConfig({ model_type: "llama", hidden_act: "swish" }, "l.json").activation, "silu");
    assert.equal(parseHfConfig({ model_type: "bert", hidden_act: "gelu_pytorch_tanh" }, "b.json").activation, "gelu_tanh");
  });
});

describe("hf-config: invalid and unsupported", () => {
  test("wrong type names the key", () =>
    expectError(() => parseHfConfig({ ...fixtureRaw("bert"), hidden_size: "32" }, "cfg.json"), ConfigError, (e) => {
      assert.equal(e.file, "cfg.json");
      assert.equal(e.path, "hidden_size");
      assert.match(e.message, /^cfg\.json: 'hidden_size': /);
    }));

  test("negative and non-integer sizes", () => {
    expectError(() => parseHfConfig({ model_type: "gpt2", n_layer: -1 }, "g.json"), ConfigError, (e) => assert.equal(e.path, "n_layer"));
    expectError(() => parseHfConfig({ model_type: "llama", intermediate_size: 2.5 }, "l.json"), ConfigError, (e) => assert.equal(e.path, "intermediate_size"));
  });

  test("hidden size not divisible by heads", () =>
    expectError(() => parseHfConfig({ model_type: "bert", hidden_size: 30, num_attention_heads: 4 }, "b.json"), ConfigError, (e) =>
      assert.equal(e.path, "num_attention_heads"),
    ));

  test("heads not divisible by kv heads", () =>
    expectError(() => parseHfConfig({ ...fixtureRaw("llama"), num_key_value_heads: 3 }, "l.json"), ConfigError, (e) =>
      assert.equal(e.path, "num_key_value_heads"),
    ));

  test("id2label with non-contiguous ids", () =>
    expectError(() => parseHfConfig({ model_type: "bert", id2label: { "0": "a", "2": "b" } }, "b.json"), ConfigError, (e) =>
      assert.equal(e.path, "id2label.2"),
    ));

  test("missing or unknown model_type", () => {
    expectError(() => parseHfConfig({ hidden_size: 3 }, "x.json"), ConfigError, (e) => assert.equal(e.path, "model_type"));
    expectError(() => parseHfConfig({ model_type: "t5" }, "x.json"), UnsupportedOptionError, (e) => {
      assert.equal(e.option, "model_type");
      assert.equal(e.value, "t5");
    });
    expectError(() => parseHfConfig([1], "x.json"), ConfigError, (e) => assert.match(e.issue, /JSON object/));
  });

  const unsupported: [string, Record<string, unknown>, string][] = [
    ["llama", { rope_parameters: { rope_type: "llama3", rope_theta: 5e5, factor: 8 } }, "rope_parameters.rope_type"],
    ["llama", { rope_parameters: null, rope_scaling: { type: "linear", factor: 2 } }, "rope_scaling.rope_type"],
    ["llama", { partial_rotary_factor: 0.5 }, "partial_rotary_factor"],
    ["llama", { hidden_act: "relu2" }, "hidden_act"],
    ["gpt2", { scale_attn_by_inverse_layer_idx: true }, "scale_attn_by_inverse_layer_idx"],
    ["gpt2", { reorder_and_upcast_attn: true }, "reorder_and_upcast_attn"],
    ["gpt2", { activation_function: "mish" }, "activation_function"],
    ["bert", { position_embedding_type: "relative_key" }, "position_embedding_type"],
    ["bert", { is_decoder: true }, "is_decoder"],
    ["bert", { add_cross_attention: true }, "add_cross_attention"],
  ];
  for (const [arch, patch, option] of unsupported) {
    test(`${arch}: ${option} = ${JSON.stringify(Object.values(patch)[Object.keys(patch).length - 1])} is unsupported`, () =>
      expectError(() => parseHfConfig({ ...fixtureRaw(arch), ...patch }, "c.json"), UnsupportedOptionError, (e) => {
        assert.equal(e.option, option);
        assert.equal(e.file, "c.json");
      }));
  }

  test("safeParse reports every problem at once", () => {
    const r = safeParseHfConfig({ model_type: "gpt2", n_embd: "x", n_layer: 0, reorder_and_upcast_attn: "yes" }, "g.json");
    assert.equal(r.success, false);
    if (r.success) return;
    const paths = r.errors.map((e) => (e instanceof ConfigError ? e.path : "")).sort();
    assert.deepEqual(paths, ["n_embd", "n_layer", "reorder_and_upcast_attn"]);
    const ok = safeParseHfConfig(fixtureRaw("gpt2"), "g.json");
    assert.equal(ok.success, true);
  });

  test("loadHfConfig: missing file and invalid JSON", () => {
    const dir = mkdtempSync(join(tmpdir(), "peft-ts-cfg-"));
    try {
      expectError(() => loadHfConfig(dir), MissingFileError, (e) => assert.equal(e.file, join(dir, "config.json")));
      writeFileSync(join(dir, "config.json"), "{ nope");
      expectError(() => loadHfConfig(dir), ConfigError, (e) => {
        assert.equal(e.file, join(dir, "config.json"));
        assert.match(e.issue, /not valid JSON/);
      });
    } finally {
      rmSync(dir, { recursive: true });
    }
  });
});
