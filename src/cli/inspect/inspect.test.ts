import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync, copyFileSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { runCli } from "../main.js";
import { fixturePath } from "../../util/paths.js";
import { readAdapterDir, writeAdapterDir } from "../../io/peft-files.js";
import { PEFT_TS_VERSION } from "../../util/version.js";
import type { AdapterReport } from "./adapter.js";
import type { ModelReport, SafetensorsReport } from "./model.js";

/** The safetensors header, parsed here independently of src/io. */
function header(file: string): Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }> {
  const buf = readFileSync(file);
  const n = Number(buf.readBigUInt64LE(0));
  const h = JSON.parse(buf.subarray(8, 8 + n).toString("utf8")) as Record<string, unknown>;
  delete h["__metadata__"];
  return h as Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>;
}
const prod = (s: number[]) => s.reduce((a, b) => a * b, 1);
function expected(file: string, filter: (name: string) => boolean = () => true) {
  const h = header(file);
  const names = Object.keys(h).filter(filter);
  return {
    tensors: names.length,
    params: names.reduce((s, k) => s + prod(h[k]!.shape), 0),
    bytes: names.reduce((s, k) => s + h[k]!.data_offsets[1] - h[k]!.data_offsets[0], 0),
  };
}

async function inspectJson<T>(path: string, ...flags: string[]): Promise<T> {
  const r = await runCli(["inspect", path, "--json", ...flags]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stderr, "");
  return JSON.parse(r.stdout) as T;
}

const F = (...p: string[]) => fixturePath("peft-parity", ...p);

describe("peft inspect: model folders", () => {
  for (const arch of ["bert", "gpt2", "llama"] as const) {
    test(`${arch}/base: totals and dtypes match the safetensors header`, async () => {
      const r = await inspectJson<ModelReport>(F(arch, "base"));
      const cfg = JSON.parse(readFileSync(F(arch, "base", "config.json"), "utf8")) as { model_type: string; architectures: string[] };
      const e = expected(F(arch, "base", "model.safetensors"));
      assert.equal(r.kind, "model");
      assert.equal(r.modelType, cfg.model_type);
      assert.deepEqual(r.architectures, cfg.architectures);
      assert.equal(r.support.supported, true);
      assert.equal(r.tensors, e.tensors);
      assert.equal(r.parameters, e.params);
      assert.equal(r.bytes, e.bytes);
      assert.deepEqual(r.dtypes, { float32: { tensors: e.tensors, params: e.params, bytes: e.bytes } });
      const roleSum = Object.values(r.byRole).reduce((s, g) => s + g.params, 0);
      const moduleSum = Object.values(r.byModule).reduce((s, g) => s + g.params, 0);
      assert.equal(roleSum, e.params);
      assert.equal(moduleSum, e.params);
      assert.equal(r.byRole.other.params, 0, `unclassified: ${JSON.stringify(r.byRole)}`);
    });
  }

  test("bert/base: parameters per role and per module", async () => {
    const r = await inspectJson<ModelReport>(F("bert", "base"));
    const file = F("bert", "base", "model.safetensors");
    const count = (f: (n: string) => boolean) => expected(file, f).params;
    const norm = (n: string) => n.includes("LayerNorm");
    assert.equal(r.byRole.norm.params, count(norm));
    assert.equal(r.byRole.embeddings.params, count((n) => n.includes(".embeddings.") && !norm(n)));
    assert.equal(r.byRole.attention.params, count((n) => n.includes(".attention.") && !norm(n)));
    assert.equal(r.byRole.mlp.params, count((n) => (n.includes(".intermediate.") || /layer\.\d+\.output\.dense/.test(n)) && !norm(n)));
    assert.equal(r.byRole.head.params, count((n) => n.startsWith("classifier.") || n.includes(".pooler.")));
    assert.equal(r.byModule["query"]!.params, count((n) => n.includes(".query.")));
    assert.equal(r.byModule["query"]!.tensors, expected(file, (n) => n.includes(".query.")).tensors);
    assert.equal(r.byModule["LayerNorm"]!.params, count(norm));
    assert.deepEqual(r.blocks, { "bert.encoder.layer": 2 });
    assert.deepEqual(r.tied, []);
    assert.equal(r.config["hiddenSize"], 32);
    assert.deepEqual(r.config["labels"], ["LABEL_0", "LABEL_1", "LABEL_2"]);
  });

  test("gpt2/base: tied lm_head is reported and not counted; n_inner default filled", async () => {
    const r = await inspectJson<ModelReport>(F("gpt2", "base"));
    assert.deepEqual(r.tied, [{ name: "lm_head.weight", source: "transformer.wte.weight" }]);
    assert.equal(r.byRole.head.params, 0);
    const cfg = JSON.parse(readFileSync(F("gpt2", "base", "config.json"), "utf8")) as { n_embd: number; n_inner: number | null };
    assert.equal(cfg.n_inner, null);
    assert.equal(r.config["intermediateSize"], 4 * cfg.n_embd);
    const file = F("gpt2", "base", "model.safetensors");
    assert.equal(r.byRole.attention.params, expected(file, (n) => n.includes(".attn.")).params);
    assert.equal(r.byRole.mlp.params, expected(file, (n) => n.includes(".mlp.")).params);
  });

  test("llama/base: untied lm_head is a head, GQA heads in the config", async () => {
    const r = await inspectJson<ModelReport>(F("llama", "base"));
    const file = F("llama", "base", "model.safetensors");
    assert.equal(r.byRole.head.params, expected(file, (n) => n.startsWith("lm_head.")).params);
    assert.equal(r.byRole.norm.params, expected(file, (n) => /norm/.test(n)).params);
    assert.equal(r.config["numKeyValueHeads"], 2);
    assert.equal(r.config["numHeads"], 4);
    assert.deepEqual(r.tied, []);
  });

  test("text output names the architecture and the parameter count", async () => {
    const r = await runCli(["inspect", F("bert", "base")]);
    assert.equal(r.code, 0);
    const e = expected(F("bert", "base", "model.safetensors"));
    assert.match(r.stdout, /BertForSequenceClassification/);
    assert.match(r.stdout, new RegExp(`parameters\\s+${e.params.toLocaleString("en-US")} in ${e.tensors} tensors`));
    assert.match(r.stdout, /^by role$/m);
  });
});

describe("peft inspect: adapter folders", () => {
  test("bert/lora: LoRA settings, adapted modules and trainable parameters", async () => {
    const r = await inspectJson<AdapterReport>(F("bert", "lora"), "--tensors");
    const cfg = JSON.parse(readFileSync(F("bert", "lora", "adapter_config.json"), "utf8")) as Record<string, unknown>;
    const file = F("bert", "lora", "adapter_model.safetensors");
    const h = header(file);
    const lora = (n: string) => /\.lora_[AB]\./.test(n);
    const modules = new Set(Object.keys(h).filter(lora).map((n) => n.replace(/^base_model\.model\./, "").replace(/\.lora_[AB]\.weight$/, "")));
    assert.equal(r.peftType, cfg["peft_type"]);
    assert.equal(r.config["r"], cfg["r"]);
    assert.equal(r.config["lora_alpha"], cfg["lora_alpha"]);
    assert.deepEqual(r.config["target_modules"], cfg["target_modules"]);
    assert.equal(r.scaling, (cfg["lora_alpha"] as number) / (cfg["r"] as number));
    assert.deepEqual(r.ranks, [cfg["r"]]);
    assert.equal(r.adaptedModules.length, modules.size);
    assert.deepEqual([...r.adaptedModules].sort(), [...modules].sort());
    assert.deepEqual(r.adaptedByType, { query: 2, value: 2 });
    assert.deepEqual(r.savedModules, ["classifier"]);
    assert.equal(r.parameters.total, expected(file).params);
    assert.equal(r.parameters.adapter, expected(file, lora).params);
    assert.equal(r.parameters.savedModules, expected(file, (n) => n.includes(".classifier.")).params);
    assert.equal(r.tensors, Object.keys(h).length);
    assert.equal(r.tensorList?.length, Object.keys(h).length);
    const a = r.shapes.find((s) => s.param === "lora_A.weight");
    assert.deepEqual(a && { shape: a.shape, count: a.count }, { shape: [cfg["r"], 32], count: modules.size });
  });

  test("rslora scaling uses sqrt(r); IA3 and prompt tuning are classified", async () => {
    const rs = await inspectJson<AdapterReport>(F("bert", "rslora_all_linear"));
    const cfg = JSON.parse(readFileSync(F("bert", "rslora_all_linear", "adapter_config.json"), "utf8")) as { r: number; lora_alpha: number };
    assert.ok(Math.abs(rs.scaling! - cfg.lora_alpha / Math.sqrt(cfg.r)) < 1e-12);
    const ia3 = await inspectJson<AdapterReport>(F("bert", "ia3"));
    const ia3File = F("bert", "ia3", "adapter_model.safetensors");
    assert.equal(ia3.parameters.adapter, expected(ia3File, (n) => n.endsWith(".ia3_l")).params);
    assert.equal(ia3.adaptedModules.length, expected(ia3File, (n) => n.endsWith(".ia3_l")).tensors);
    assert.equal(ia3.scaling, null);
    const pt = await inspectJson<AdapterReport>(F("gpt2", "prompt_tuning"));
    const ptH = header(F("gpt2", "prompt_tuning", "adapter_model.safetensors"));
    assert.equal(pt.virtualTokens, ptH["prompt_embeddings"]!.shape[0]);
    assert.equal(pt.parameters.prompt, prod(ptH["prompt_embeddings"]!.shape));
    assert.equal(pt.adaptedModules.length, 0);
  });

  test("the writer: PEFT for Python's files; peft-ts (and the PEFT format it follows) for files peft-ts wrote", async () => {
    const py = F("bert", "lora");
    const cfg = JSON.parse(readFileSync(join(py, "adapter_config.json"), "utf8")) as { peft_version: string };
    const pyText = await runCli(["inspect", py]);
    assert.match(pyText.stdout, new RegExp(`^method      LORA  \\(written by PEFT ${cfg.peft_version.replace(/\./g, "\\.")}\\)$`, "m"));
    const pyJson = await inspectJson<AdapterReport>(py);
    assert.equal(pyJson.peftTsVersion, null);
    // the same adapter written again by peft-ts: PEFT's keys unchanged, the writer recorded
    const dir = mkdtempSync(join(tmpdir(), "peft-inspect-writer-"));
    try {
      const copy = join(dir, "rewritten");
      const a = readAdapterDir(py);
      writeAdapterDir(copy, a.configRaw, a.weights, a.weightsMetadata);
      const text = await runCli(["inspect", copy]);
      assert.match(text.stdout, new RegExp(`^method      LORA  \\(written by peft-ts ${PEFT_TS_VERSION.replace(/\./g, "\\.")}, PEFT ${cfg.peft_version.replace(/\./g, "\\.")} format\\)$`, "m"));
      const json = await inspectJson<AdapterReport>(copy);
      assert.equal(json.peftTsVersion, PEFT_TS_VERSION);
      assert.equal(json.peftVersion, cfg.peft_version);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("a bare .safetensors file is summarised", async () => {
    const file = F("bert", "lora.merged.safetensors");
    const r = await inspectJson<SafetensorsReport>(file);
    const e = expected(file);
    assert.equal(r.kind, "safetensors");
    assert.equal(r.parameters, e.params);
    assert.equal(r.tensors, e.tensors);
  });
});

describe("peft inspect: sharded models and bad input", () => {
  const tmp = mkdtempSync(join(tmpdir(), "peft-cli-inspect-"));
  after(() => rmSync(tmp, { recursive: true, force: true }));

  test("a sharded model (index + shards) is read through its index", async () => {
    // Split bert/base's tensors into two shards written here, with a matching index.
    const src = readFileSync(F("bert", "base", "model.safetensors"));
    const h = header(F("bert", "base", "model.safetensors"));
    const n = Number(src.readBigUInt64LE(0));
    const body = src.subarray(8 + n);
    const names = Object.keys(h).sort();
    const parts = [names.slice(0, 20), names.slice(20)];
    const dir = join(tmp, "sharded");
    mkdirSync(dir);
    copyFileSync(F("bert", "base", "config.json"), join(dir, "config.json"));
    const weightMap: Record<string, string> = {};
    parts.forEach((keys, i) => {
      const fname = `model-0000${i + 1}-of-00002.safetensors`;
      const hdr: Record<string, unknown> = {};
      const chunks: Buffer[] = [];
      let off = 0;
      for (const k of keys) {
        const [b, e] = h[k]!.data_offsets;
        hdr[k] = { dtype: h[k]!.dtype, shape: h[k]!.shape, data_offsets: [off, off + e - b] };
        chunks.push(body.subarray(b, e));
        off += e - b;
        weightMap[k] = fname;
      }
      let json = JSON.stringify(hdr);
      while ((8 + json.length) % 8 !== 0) json += " ";
      const len = Buffer.alloc(8);
      len.writeBigUInt64LE(BigInt(json.length));
      writeFileSync(join(dir, fname), Buffer.concat([len, Buffer.from(json), ...chunks]));
    });
    writeFileSync(join(dir, "model.safetensors.index.json"), JSON.stringify({ metadata: {}, weight_map: weightMap }));
    const r = await inspectJson<ModelReport>(dir);
    const e = expected(F("bert", "base", "model.safetensors"));
    assert.equal(r.parameters, e.params);
    assert.deepEqual(r.files.map((f) => f.tensors), parts.map((p) => p.length));

    // An index entry pointing at the wrong shard is reported with the key.
    writeFileSync(join(dir, "model.safetensors.index.json"), JSON.stringify({ weight_map: { ...weightMap, [names[0]!]: "model-00002-of-00002.safetensors" } }));
    const bad = await runCli(["inspect", dir]);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, new RegExp(`^error \\[PEFT_ERR_CONFIG\\]: .*weight_map\\.${names[0]!.replace(/\./g, "\\.")}`));
  });

  test("missing path, folder without config, unreadable file type and missing weights fail with typed errors", async () => {
    const missing = await runCli(["inspect", join(tmp, "nope")]);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /^error \[PEFT_ERR_MISSING_FILE\]: .*nope/);
    assert.equal(missing.stdout, "");

    const empty = join(tmp, "empty");
    mkdirSync(empty);
    assert.match((await runCli(["inspect", empty])).stderr, /^error \[PEFT_ERR_MISSING_FILE\]: .*config\.json/);

    const txt = join(tmp, "notes.txt");
    writeFileSync(txt, "hello");
    assert.match((await runCli(["inspect", txt])).stderr, /^error \[PEFT_ERR_UNSUPPORTED_FILE_TYPE\]: .*notes\.txt/);

    const noWeights = join(tmp, "adapter-no-weights");
    mkdirSync(noWeights);
    copyFileSync(F("bert", "lora", "adapter_config.json"), join(noWeights, "adapter_config.json"));
    writeFileSync(join(noWeights, "adapter_model.bin"), "pickle");
    const r = await runCli(["inspect", noWeights]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^error \[PEFT_ERR_MISSING_FILE\]: .*adapter_model\.safetensors.*adapter_model\.bin/);

    const noType = join(tmp, "adapter-no-type");
    mkdirSync(noType);
    writeFileSync(join(noType, "adapter_config.json"), JSON.stringify({ r: 4 }));
    assert.match((await runCli(["inspect", noType])).stderr, /^error \[PEFT_ERR_CONFIG\]: .*peft_type/);

    const corrupt = join(tmp, "corrupt.safetensors");
    writeFileSync(corrupt, Buffer.from([1, 2, 3]));
    assert.match((await runCli(["inspect", corrupt])).stderr, /^error \[PEFT_ERR_SAFETENSORS_FORMAT\]: /);
  });
});
