import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, test } from "node:test";
import { loadSafetensors } from "../io/safetensors.js";
import { loadModel } from "../models/load.js";
import type { Tensor } from "../tensor.js";
import { toFloat32 } from "../tensor.js";
import { fixturePath } from "../util/paths.js";
import { PeftModel } from "./peft-model.js";

interface Case {
  case: string;
  model: string;
  adapters: string[];
  outputs: string;
  merged_weights?: string;
  weighted?: Record<string, { dir: string }>;
}

const manifest = JSON.parse(readFileSync(fixturePath("peft-parity", "manifest.json"), "utf8")) as { cases: Case[] };
const TOL = 1e-4;

function maxDiff(a: Tensor, b: Tensor): number {
  assert.deepEqual([...a.shape], [...b.shape], "shape");
  const x = toFloat32(a);
  const y = toFloat32(b);
  let m = 0;
  for (let i = 0; i < x.length; i++) m = Math.max(m, Math.abs(x[i]! - y[i]!));
  return m;
}

function check(label: string, got: Tensor, want: Tensor | undefined): number {
  assert.ok(want, `${label}: reference missing`);
  const d = maxDiff(got, want);
  console.log(`# ${label}: max |Δ| = ${d.toExponential(2)}`);
  assert.ok(d <= TOL, `${label}: ${d} > ${TOL}`);
  return d;
}

describe("adapters match Python PEFT (peft-parity manifest)", () => {
  for (const c of manifest.cases) {
    test(`${c.model}/${c.case}`, async () => {
      const ref = loadSafetensors(fixturePath("peft-parity", c.outputs)).tensors;
      const base = loadSafetensors(fixturePath("peft-parity", c.model, "base.outputs.safetensors")).tensors;
      const ids = (ref.get("input_ids") ?? base.get("input_ids")) as Tensor<"int64">;
      const mask = ref.has("input_ids")
        ? ({ dtype: "int64", shape: ids.shape, data: new BigInt64Array(ids.data.length).fill(1n) } as Tensor<"int64">)
        : (base.get("attention_mask") as Tensor<"int64">);
      const model = loadModel(fixturePath("peft-parity", c.model, "base"));
      const label = `${c.model}/${c.case}`;
      if (c.case === "multi_and_merge") {
        const pm = PeftModel.fromPretrained(model, fixturePath("peft-parity", c.adapters[0]!), { adapterName: "a" });
        pm.loadAdapter(fixturePath("peft-parity", c.adapters[1]!), "b");
        pm.setAdapter("a");
        check(`${label} a`, await pm.forward({ inputIds: ids, attentionMask: mask }), ref.get("logits_a"));
        pm.setAdapter("b");
        check(`${label} b`, await pm.forward({ inputIds: ids, attentionMask: mask }), ref.get("logits_b"));
        check(`${label} mixed a,base`, await pm.forward({ inputIds: ids, attentionMask: mask, adapterNames: ["a", "__base__"] }), ref.get("logits_mixed_a_base"));
        check(`${label} mixed b,a`, await pm.forward({ inputIds: ids, attentionMask: mask, adapterNames: ["b", "a"] }), ref.get("logits_mixed_b_a"));
        for (const [type, w] of Object.entries(c.weighted ?? {})) {
          pm.loadAdapter(fixturePath("peft-parity", w.dir), `w_${type}`);
          pm.setAdapter(`w_${type}`);
          check(`${label} weighted ${type}`, await pm.forward({ inputIds: ids, attentionMask: mask }), ref.get(`logits_w_${type}`));
        }
        await pm.dispose();
        return;
      }
      const pm = PeftModel.fromPretrained(model, fixturePath("peft-parity", c.adapters[0]!));
      check(label, await pm.forward({ inputIds: ids, attentionMask: mask }), ref.get("logits"));
      if (ref.has("logits_disabled")) {
        const off = await pm.disableAdapter(() => pm.forward({ inputIds: ids, attentionMask: mask }));
        check(`${label} disabled`, off, ref.get("logits_disabled"));
        // and the adapter is active again afterwards
        check(`${label} re-enabled`, await pm.forward({ inputIds: ids, attentionMask: mask }), ref.get("logits"));
      }
      if (c.merged_weights) {
        const want = loadSafetensors(fixturePath("peft-parity", c.merged_weights)).tensors;
        const merged = pm.mergeAndUnload();
        let worst = 0;
        for (const [k, t] of want) {
          assert.ok(merged.weights.has(k), `merged state dict lacks ${k}`);
          worst = Math.max(worst, maxDiff(merged.weights.get(k), t));
        }
        console.log(`# ${label} merged state dict (${want.size} tensors): max |Δ| = ${worst.toExponential(2)}`);
        assert.ok(worst <= TOL, `merged weights differ by ${worst}`);
      }
      await pm.dispose();
    });
  }
});
