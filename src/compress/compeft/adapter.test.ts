import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { readAdapterDir } from "../../io/peft-files.js";
import { loadModel } from "../../models/load.js";
import { PeftModel } from "../../peft/peft-model.js";
import { type Tensor, toFloat32 } from "../../tensor.js";
import { fixturePath } from "../../util/paths.js";
import { PEFT_TS_VERSION } from "../../util/version.js";
import { adapterFromCompeft, compeftAdapter, compeftRole, compressAdapter, decompressAdapter } from "./adapter.js";
import { keepCount } from "./compeft.js";
import { readCompeftFile } from "./file.js";
import { encodeCompeft } from "./format.js";

const fx = (...p: string[]) => fixturePath("peft-parity", ...p);

function withDir<T>(fn: (dir: string) => T): T {
  const dir = mkdtempSync(join(tmpdir(), "compeft-adapter-"));
  try {
    return fn(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

async function withDirAsync(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), "compeft-adapter-"));
  try {
    await fn(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const codeOf = (f: () => unknown): string | undefined => {
  try {
    f();
  } catch (e) {
    return (e as { code?: string }).code;
  }
  return undefined;
};

/**
 * Checks a decompressed adapter against its original: same config, keys, shapes and dtypes;
 * dense tensors bit for bit; compressed ones equal to baseline ± scale at exactly the top-k
 * entries of |value − baseline| (global over all compressed tensors), with the original's signs.
 */
function checkDecompressed(orig: Map<string, Tensor>, back: Map<string, Tensor>, baselineOf: (k: string) => number | null, density: number, scale: number): void {
  assert.deepEqual([...back.keys()].sort(), [...orig.keys()].sort());
  const kept: number[] = [];
  const dropped: number[] = [];
  let total = 0;
  for (const [k, t] of orig) {
    const b = back.get(k)!;
    assert.deepEqual(b.shape, t.shape, k);
    assert.equal(b.dtype, t.dtype, k);
    const base = baselineOf(k);
    if (base === null) {
      assert.deepEqual(b.data, t.data, `${k} is stored dense, bit for bit`);
      continue;
    }
    const o = toFloat32(t);
    const r = toFloat32(b);
    total += o.length;
    o.forEach((v, i) => {
      const tau = Math.fround(v - base);
      if (r[i] === base) dropped.push(Math.abs(tau));
      else {
        assert.equal(r[i], tau > 0 ? Math.fround(base + scale) : Math.fround(base - scale), `${k}[${i}]: baseline ± scale with the update's sign`);
        kept.push(Math.abs(tau));
      }
    });
  }
  assert.equal(kept.length, keepCount(density, total));
  assert.ok(Math.min(...kept) >= Math.max(...dropped), "the kept entries are the largest updates");
}

describe("compressAdapter / decompressAdapter", () => {
  test("LoRA (SEQ_CLS): factors compressed with baseline 0, the classifier head dense; the result loads", async () => {
    await withDirAsync(async (dir) => {
      const file = join(dir, "lora.cpeft");
      const r = compressAdapter(fx("bert", "lora"), file, { density: 0.1, alpha: 1 });
      const orig = readAdapterDir(fx("bert", "lora"));
      assert.equal(r.peftType, "LORA");
      assert.equal(r.sparseTensors, 8);
      assert.equal(r.denseTensors, 2);
      assert.equal(r.denseParams, 3 * 32 + 3);
      assert.equal(r.kept, keepCount(0.1, r.sparseParams));
      assert.ok(r.bytes < readFileSync(orig.weightsFile).length / 2, `compressed ${r.bytes} bytes`);
      const out = join(dir, "restored");
      const d = decompressAdapter(file, out);
      assert.equal(d.tensors, 10);
      assert.deepEqual(readdirSync(out).sort(), ["adapter_config.json", "adapter_model.safetensors"]);
      const back = readAdapterDir(out);
      assert.deepEqual(back.configRaw, orig.configRaw);
      // the original metadata is kept, and the decompressed (lossy) weights record their writer, peft-ts
      assert.deepEqual(back.weightsMetadata, { ...orig.weightsMetadata, peft_ts_version: PEFT_TS_VERSION });
      const c = readCompeftFile(file);
      checkDecompressed(orig.weights, back.weights, (k) => (k.includes(".lora_") ? 0 : null), 0.1, c.scale);

      const base = loadModel(fx("bert", "base"));
      const pm = PeftModel.fromPretrained(base, out);
      const ids: Tensor<"int64"> = { dtype: "int64", shape: [1, 5], data: BigInt64Array.of(2n, 7n, 9n, 4n, 3n) };
      const logits = await pm.forward({ inputIds: ids });
      assert.deepEqual(logits.shape, [1, 3]);
      assert.ok((logits.data as Float32Array).every(Number.isFinite));
      await pm.dispose();
    });
  });

  test("(IA)³: vectors compressed against baseline 1", () => {
    withDir((dir) => {
      const file = join(dir, "ia3.cpeft");
      const r = compressAdapter(fx("bert", "ia3"), file, { density: 0.2, alpha: 0.5 });
      assert.equal(r.peftType, "IA3");
      assert.equal(r.sparseTensors, 8);
      const c = readCompeftFile(file);
      assert.ok(c.tensors.every((t) => t.baseline === 1));
      const a = adapterFromCompeft(c, file);
      const orig = readAdapterDir(fx("bert", "ia3"));
      checkDecompressed(orig.weights, new Map(a.weights), (k) => (k.endsWith(".ia3_l") ? 1 : null), 0.2, c.scale);
      const out = join(dir, "out");
      decompressAdapter(file, out);
      PeftModel.fromPretrained(loadModel(fx("bert", "base")), out);
    });
  });

  test("DoRA: magnitude vectors stay dense", () => {
    const orig = readAdapterDir(fx("bert", "dora"));
    const c = compeftAdapter({ configRaw: orig.configRaw, weights: orig.weights, weightsMetadata: orig.weightsMetadata }, { density: 0.5, alpha: 1 });
    const dense = (c.dense ?? []).map((d) => d.name);
    assert.ok(dense.some((n) => n.endsWith("lora_magnitude_vector")), dense.join(", "));
    assert.ok(c.tensors.every((t) => /lora_[AB]\.weight$/.test(t.name)));
    const back = adapterFromCompeft(c).weights;
    for (const n of dense) assert.deepEqual(back.get(n)!.data, orig.weights.get(n)!.data);
  });

  test("roles: LoRA factors (0) and (IA)³ vectors (1) are compressed, everything else dense; prompt tuning is refused", () => {
    assert.deepEqual(compeftRole("lora", "base_model.model.x.q.lora_A.weight"), { kind: "sparse", baseline: 0 });
    assert.deepEqual(compeftRole("lora", "base_model.model.x.q.lora_B.weight"), { kind: "sparse", baseline: 0 });
    assert.deepEqual(compeftRole("lora", "base_model.model.x.q.lora_magnitude_vector"), { kind: "dense" });
    assert.deepEqual(compeftRole("lora", "base_model.model.classifier.weight"), { kind: "dense" });
    assert.deepEqual(compeftRole("ia3", "base_model.model.x.k.ia3_l"), { kind: "sparse", baseline: 1 });
    assert.deepEqual(compeftRole("ia3", "base_model.model.classifier.bias"), { kind: "dense" });
    assert.deepEqual(compeftRole("prompt_tuning", "prompt_embeddings"), { kind: "dense" }, "virtual tokens have no baseline");
    withDir((dir) => {
      const file = join(dir, "p.cpeft");
      assert.equal(codeOf(() => compressAdapter(fx("gpt2", "prompt_tuning"), file, { density: 0.1, alpha: 1 })), "PEFT_ERR_UNSUPPORTED_OPTION");
      assert.equal(existsSync(file), false);
    });
  });

  test("bad files raise typed errors and never touch an existing output", () => {
    withDir((dir) => {
      const file = join(dir, "a.cpeft");
      compressAdapter(fx("bert", "lora"), file, { density: 0.1, alpha: 1 });
      const good = readFileSync(file);
      const out = join(dir, "existing");
      decompressAdapter(file, out);
      const before = readdirSync(out).map((f) => [f, readFileSync(join(out, f))] as const);
      const bad = join(dir, "bad.cpeft");
      const attempts: [string, Uint8Array][] = [
        ["PEFT_ERR_COMPEFT_TRUNCATED", good.subarray(0, good.length - 7)],
        ["PEFT_ERR_COMPEFT_TRUNCATED", good.subarray(0, 30)],
        ["PEFT_ERR_COMPEFT_VERSION", (() => {
          const b = Uint8Array.from(good);
          new DataView(b.buffer).setUint32(8, 9, true);
          return b;
        })()],
        ["PEFT_ERR_COMPEFT_MAGIC", Uint8Array.from(good).fill(0x20, 0, 4)],
        ["PEFT_ERR_COMPEFT_CHECKSUM", Buffer.concat([good, Buffer.of(0)])],
        ["PEFT_ERR_COMPEFT_CHECKSUM", (() => {
          const b = Uint8Array.from(good);
          b[good.length - 10]! ^= 0x04; // one flipped bit in the data
          return b;
        })()],
        ["PEFT_ERR_COMPEFT_HEADER", encodeCompeft({ ...readCompeftFile(file), metadata: {} })],
      ];
      for (const [code, bytes] of attempts) {
        writeFileSync(bad, bytes);
        assert.throws(() => decompressAdapter(bad, out), (e: Error & { code?: string }) => {
          assert.equal(e.code, code);
          assert.ok(e.message.includes(bad), `${code}: the message names the file`);
          return true;
        });
        assert.throws(() => decompressAdapter(bad, join(dir, "fresh")), { code });
        assert.equal(existsSync(join(dir, "fresh")), false, "no folder is created");
      }
      for (const [f, bytes] of before) assert.deepEqual(readFileSync(join(out, f)), bytes, `${f} untouched`);
      assert.equal(codeOf(() => decompressAdapter(join(dir, "absent.cpeft"), out)), "PEFT_ERR_MISSING_FILE");
      // a failed compression leaves an existing file as it was
      assert.equal(codeOf(() => compressAdapter(fx("bert", "lora"), file, { density: 0, alpha: 1 })), "PEFT_ERR_CONFIG");
      assert.equal(codeOf(() => compressAdapter(join(dir, "no-adapter"), file, { density: 0.1, alpha: 1 })), "PEFT_ERR_MISSING_FILE");
      assert.deepEqual(readFileSync(file), good);
      assert.deepEqual(readdirSync(dir).sort(), ["a.cpeft", "bad.cpeft", "existing"]);
    });
  });
});
