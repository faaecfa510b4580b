import assert from "node:assert/strict";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { ConfigError, MissingFileError, MissingTensorError, ShapeMismatchError, UnsupportedOptionError } from "../../errors.js";
import { loadSafetensors, saveSafetensors } from "../../io/safetensors.js";
import { parseUseLiteConfig, USE_LITE_DEFAULT_CONFIG, useLiteConfigJson } from "./config.js";
import { convertUseLite, loadUseLite } from "./convert.js";
import { loadUseLiteWeights, useLiteLinearModules, useLitePackageDir, useLiteParamShapes } from "./weights.js";

const dir = mkdtempSync(join(tmpdir(), "use-lite-convert-"));
after(() => rmSync(dir, { recursive: true, force: true }));

describe("USE-lite weights from the installed package", () => {
  const w = loadUseLiteWeights();

  test("every parameter is present with its HF layout, ~7M parameters", () => {
    const shapes = useLiteParamShapes(USE_LITE_DEFAULT_CONFIG);
    assert.deepEqual([...w.keys()].sort(), [...shapes.keys()].sort());
    for (const [k, s] of shapes) assert.deepEqual(w.get(k)!.shape, s, k);
    const n = [...w.values()].reduce((s, t) => s + t.data.length, 0);
    assert.ok(n > 6.5e6 && n < 7.5e6, `${n} parameters`);
  });

  test("q/k/v are the transposed thirds of the fused TF kernel", () => {
    const tfName = "module/Encoder_en/KonaTransformer/Encode/Layer_1/TransformerLayer/MultiheadAttention/qkv_transform_single/kernel/part_0";
    const model = JSON.parse(readFileSync(join(useLitePackageDir(), "model.json"), "utf8")) as {
      weightsManifest: { weights: { name: string; shape: number[] }[] }[];
    };
    // locate the kernel's bytes in the concatenated shards independently of the loader
    let off = 0;
    for (const s of model.weightsManifest[0]!.weights) {
      if (s.name === tfName) break;
      off += s.shape.reduce((a, b) => a * b, 1) * 4;
    }
    const shards = model.weightsManifest[0] as unknown as { paths: string[] };
    const stream = Buffer.concat(shards.paths.map((p) => readFileSync(join(useLitePackageDir(), p))));
    const kernel = (i: number, o: number) => stream.readFloatLE(off + (i * 1536 + o) * 4); // [1, 1, 512, 1536]
    const q = w.get("encoder.layer.1.attention.self.query.weight")!.data as Float32Array;
    const v = w.get("encoder.layer.1.attention.self.value.weight")!.data as Float32Array;
    for (const [o, i] of [[0, 0], [5, 17], [511, 300]] as const) {
      assert.equal(q[o * 512 + i], kernel(i, o));
      assert.equal(v[o * 512 + i], kernel(i, 1024 + o));
    }
  });

  test("linear modules (LoRA targets) are listed in forward order", () => {
    const names = useLiteLinearModules();
    assert.equal(names.length, 14);
    assert.equal(names[4], "encoder.layer.0.attention.residual_projection");
    assert.ok(!names.includes("encoder.layer.1.attention.residual_projection"));
    assert.equal(names.at(-1), "pooler.dense");
  });
});

describe("convertUseLite / loadUseLite", () => {
  test("converts to config.json + model.safetensors + vocab.json that load back identically", () => {
    const out = join(dir, "converted");
    const res = convertUseLite(out);
    assert.deepEqual(res.files.map((f) => f.slice(out.length + 1)), ["config.json", "model.safetensors", "vocab.json"]);
    const cfg = JSON.parse(readFileSync(join(out, "config.json"), "utf8")) as Record<string, unknown>;
    assert.equal(cfg["model_type"], "use-lite");
    assert.equal(cfg["hidden_size"], 512);
    const { metadata } = loadSafetensors(join(out, "model.safetensors"));
    assert.equal(metadata["format"], "pt");
    assert.match(metadata["source"]!, /^@energetic-ai\/model-embeddings-en@/);
    const fromPkg = loadUseLite();
    const converted = loadUseLite(out);
    assert.deepEqual(converted.config, fromPkg.config);
    assert.equal(converted.weights.size, fromPkg.weights.size);
    for (const [k, t] of fromPkg.weights) assert.deepEqual(converted.weights.get(k)!.data, t.data, k);
    assert.deepEqual(converted.tokenizer.encode("Converted models tokenize alike."), fromPkg.tokenizer.encode("Converted models tokenize alike."));
    assert.deepEqual(readFileSync(join(out, "vocab.json")), readFileSync(join(useLitePackageDir(), "vocab.json")));
  });

  test("a failed conversion leaves existing files untouched", () => {
    const out = join(dir, "keep");
    mkdirSync(out);
    writeFileSync(join(out, "config.json"), "old");
    const notTfjs = join(dir, "empty-src");
    mkdirSync(notTfjs);
    assert.throws(() => convertUseLite(out, { from: notTfjs }), MissingFileError);
    assert.equal(readFileSync(join(out, "config.json"), "utf8"), "old");
    assert.ok(!existsSync(join(out, "model.safetensors")));
  });

  test("a TF.js folder loads directly; a folder with neither format is named in the error", () => {
    assert.equal(loadUseLite(useLitePackageDir()).weights.size, useLiteParamShapes(USE_LITE_DEFAULT_CONFIG).size);
    const empty = join(dir, "nothing");
    mkdirSync(empty);
    assert.throws(() => loadUseLite(empty), (e: unknown) => e instanceof MissingFileError && e.file.startsWith(empty));
  });

  test("a converted folder with a missing or mis-shaped tensor is rejected", () => {
    const src = join(dir, "converted");
    const base = loadSafetensors(join(src, "model.safetensors")).tensors;
    const broken = join(dir, "broken");
    mkdirSync(broken);
    writeFileSync(join(broken, "config.json"), readFileSync(join(src, "config.json")));
    writeFileSync(join(broken, "vocab.json"), readFileSync(join(src, "vocab.json")));
    const missing = new Map(base);
    missing.delete("encoder.layer.1.output.dense.bias");
    saveSafetensors(join(broken, "model.safetensors"), missing);
    assert.throws(() => loadUseLite(broken), (e: unknown) => e instanceof MissingTensorError && e.key === "encoder.layer.1.output.dense.bias");
    writeFileSync(join(broken, "config.json"), JSON.stringify({ ...useLiteConfigJson(USE_LITE_DEFAULT_CONFIG), intermediate_size: 1024 }));
    saveSafetensors(join(broken, "model.safetensors"), base);
    assert.throws(() => loadUseLite(broken), ShapeMismatchError);
  });
});

describe("parseUseLiteConfig", () => {
  const f = "config.json";
  test("defaults are the package graph's dimensions and round-trip through useLiteConfigJson", () => {
    assert.deepEqual(parseUseLiteConfig({ model_type: "use-lite" }, f), USE_LITE_DEFAULT_CONFIG);
    assert.deepEqual(parseUseLiteConfig(useLiteConfigJson(USE_LITE_DEFAULT_CONFIG), f), USE_LITE_DEFAULT_CONFIG);
  });
  test("invalid values raise errors naming the key", () => {
    assert.throws(() => parseUseLiteConfig({ model_type: "bert" }, f), (e: unknown) => e instanceof ConfigError && e.path === "model_type");
    assert.throws(() => parseUseLiteConfig({ model_type: "use-lite", hidden_size: -1 }, f), (e: unknown) => e instanceof ConfigError && e.path === "hidden_size");
    assert.throws(() => parseUseLiteConfig({ model_type: "use-lite", num_attention_heads: 3 }, f), (e: unknown) => e instanceof ConfigError && e.path === "num_attention_heads");
    assert.throws(() => parseUseLiteConfig({ model_type: "use-lite", hidden_act: "gelu" }, f), UnsupportedOptionError);
  });
});
