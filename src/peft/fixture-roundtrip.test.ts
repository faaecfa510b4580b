/**
 * The adapters Python PEFT wrote (test/fixtures/peft-parity) survive load → save unchanged, and an
 * adapter created here with the same config is saved under exactly PEFT's tensor names.
 */
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { loadSafetensors } from "../io/safetensors.js";
import { assertSameSafetensors } from "../io/writer.test-util.js";
import { PEFT_TS_VERSION } from "../util/version.js";
import { loadModel } from "../models/load.js";
import type { Tensor } from "../tensor.js";
import { tunerFor } from "../tuners/registry.js";
import { fixturePath } from "../util/paths.js";
import { PeftModel } from "./peft-model.js";

const ARCHS = ["bert", "gpt2", "llama"] as const;
const CASES = ["lora", "dora", "ia3", "prompt_tuning", "rslora_all_linear", "lora_patterns", "multi_a"] as const;

const FIXTURES = ARCHS.flatMap((arch) => CASES.filter((c) => existsSync(fixturePath("peft-parity", arch, c))).map((c) => ({ arch, name: c })));

const tmpRoot = mkdtempSync(join(tmpdir(), "peft-roundtrip-"));
let n = 0;
after(() => rmSync(tmpRoot, { recursive: true, force: true }));

function readRaw(dir: string): Record<string, unknown> {
  return JSON.parse(readFileSync(join(dir, "adapter_config.json"), "utf8")) as Record<string, unknown>;
}

/** Key → [dtype, shape, bytes] of a safetensors file. */
function contents(file: string): Map<string, { dtype: string; shape: number[]; bytes: Buffer }> {
  const { tensors } = loadSafetensors(file);
  const bytes = (t: Tensor): Buffer => Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength);
  return new Map([...tensors].map(([k, t]) => [k, { dtype: t.dtype, shape: [...t.shape], bytes: bytes(t) }]));
}

describe("real PEFT adapters round-trip through load → save", () => {
  test("every listed fixture case is found (the glob is not silently empty)", () => {
    assert.ok(FIXTURES.length >= 14, `only ${FIXTURES.length} fixture adapters found`);
    assert.ok(FIXTURES.some((f) => f.arch === "llama") && FIXTURES.some((f) => f.name === "prompt_tuning"));
  });

  for (const { arch, name } of FIXTURES) {
    test(`${arch}/${name}`, () => {
      const src = fixturePath("peft-parity", arch, name);
      const model = loadModel(fixturePath("peft-parity", arch, "base"));
      const pm = PeftModel.fromPretrained(model, src);
      const out = join(tmpRoot, `rt${n++}`);
      pm.savePretrained(out);
      assert.deepEqual(readdirSync(out).sort(), ["adapter_config.json", "adapter_model.safetensors"], "no stray files");

      const want = contents(join(src, "adapter_model.safetensors"));
      const got = contents(join(out, "adapter_model.safetensors"));
      assert.deepEqual([...got.keys()].sort(), [...want.keys()].sort(), "tensor names");
      for (const [k, w] of want) {
        const g = got.get(k)!;
        assert.equal(g.dtype, w.dtype, `${k} dtype`);
        assert.deepEqual(g.shape, w.shape, `${k} shape`);
        assert.ok(g.bytes.equals(w.bytes), `${k} values`);
      }
      assert.deepEqual(loadSafetensors(join(out, "adapter_model.safetensors")).metadata, { format: "pt", peft_ts_version: PEFT_TS_VERSION });
      // the writer orders and pads like Python's safetensors, so the header and the data bytes are
      // Python's; the file differs only by peft-ts's writer record in __metadata__
      assertSameSafetensors(readFileSync(join(out, "adapter_model.safetensors")), readFileSync(join(src, "adapter_model.safetensors")), PEFT_TS_VERSION);

      const origRaw = readRaw(src);
      const savedRaw = readRaw(out);
      const tuner = tunerFor(String(origRaw.peft_type));
      const parsed = (raw: Record<string, unknown>, file: string) => tuner.resolve(tuner.parseConfig(raw, file), pm.info);
      assert.deepEqual(parsed(savedRaw, "saved"), parsed(origRaw, "original"), "parsed config");
      assert.deepEqual(pm.adapter("default").config, parsed(origRaw, "original"), "the loaded adapter's config");
      // every option the original file sets to a non-default value is written back as it was
      for (const [k, v] of Object.entries(origRaw)) {
        if (k === "auto_mapping" || v === null || v === false || (typeof v === "object" && Object.keys(v).length === 0)) continue;
        assert.ok(k in savedRaw, `saved config lacks '${k}'`);
        const norm = (x: unknown): unknown => (Array.isArray(x) ? [...(x as unknown[])].sort() : x);
        assert.deepEqual(norm(savedRaw[k]), norm(v), `saved config '${k}'`);
      }

      // a new adapter with the same config is saved under exactly PEFT's names and shapes
      const fresh = PeftModel.create(model, { ...origRaw, inference_mode: false }, "default", { seed: 3 });
      const freshDir = join(tmpRoot, `new${n++}`);
      fresh.savePretrained(freshDir);
      const made = contents(join(freshDir, "adapter_model.safetensors"));
      assert.deepEqual([...made.keys()].sort(), [...want.keys()].sort(), "names of a newly created adapter");
      for (const [k, w] of want) {
        assert.deepEqual(made.get(k)!.shape, w.shape, `${k} shape of a newly created adapter`);
        assert.equal(made.get(k)!.dtype, w.dtype);
      }
    });
  }

  test("PEFT's naming: prefixes, DoRA magnitude, (IA)³ vectors, prompt embeddings, modules_to_save", () => {
    const keys = (arch: string, c: string): string[] => [...contents(join(fixturePath("peft-parity", arch, c), "adapter_model.safetensors")).keys()];
    const model = loadModel(fixturePath("peft-parity", "bert", "base"));
    const pm = PeftModel.create(model, { peft_type: "LORA", task_type: "SEQ_CLS", r: 2, use_dora: true, target_modules: ["query"] });
    const dir = join(tmpRoot, `naming${n++}`);
    pm.savePretrained(dir);
    const got = [...contents(join(dir, "adapter_model.safetensors")).keys()].sort();
    const layer = (i: number): string[] => ["lora_A.weight", "lora_B.weight", "lora_magnitude_vector"].map((s) => `base_model.model.bert.encoder.layer.${i}.attention.self.query.${s}`);
    assert.deepEqual(got, [...layer(0), ...layer(1), "base_model.model.classifier.bias", "base_model.model.classifier.weight"].sort());
    assert.ok(keys("gpt2", "ia3").every((k) => /^base_model\.model\.transformer\.h\.\d\.(attn\.c_attn|mlp\.c_proj)\.ia3_l$/u.test(k)));
    assert.deepEqual(keys("gpt2", "prompt_tuning"), ["prompt_embeddings"]);
  });
});
