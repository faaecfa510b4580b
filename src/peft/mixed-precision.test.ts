/**
 * `PeftModel.forward(…, { dtype: "float16" })` against the float32 forward on every fixture case of
 * the parity manifest (LoRA variants, DoRA, IA³, prompt tuning, merged, disabled, mixed-adapter
 * batches). Errors are reported relative to the largest |logit| of the float32 result. The CPU
 * computes most float16 ops in float32 (see graph/half-emulation.ts), so the plain LoRA cases are
 * also run with every float16 value rounded (`emulateHalf`), as a device with float16 kernels does.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, test } from "node:test";
import { emulateHalf } from "../graph/half-emulation.js";
import { loadSafetensors } from "../io/safetensors.js";
import { loadModel } from "../models/load.js";
import { CompiledGraph } from "../runtime/session.js";
import type { Tensor } from "../tensor.js";
import { toFloat32 } from "../tensor.js";
import { fixturePath } from "../util/paths.js";
import { type ForwardInputs, PeftModel } from "./peft-model.js";

interface Case {
  case: string;
  model: string;
  adapters: string[];
  outputs: string;
}

const manifest = JSON.parse(readFileSync(fixturePath("peft-parity", "manifest.json"), "utf8")) as { cases: Case[] };

/** float16 logits may differ from float32 by this fraction of the largest |logit| (≈ 10 float16 ulps). */
const REL_TOL = 5e-3;

function errors(ref: Tensor, got: Tensor): { abs: number; rel: number } {
  assert.equal(got.dtype, "float32", "float16 graphs return float32 logits");
  assert.deepEqual([...got.shape], [...ref.shape]);
  const a = toFloat32(ref);
  const b = toFloat32(got);
  let abs = 0;
  let scale = 0;
  for (let i = 0; i < a.length; i++) {
    assert.ok(Number.isFinite(b[i]!), `logit ${i} is ${b[i]}`);
    abs = Math.max(abs, Math.abs(a[i]! - b[i]!));
    scale = Math.max(scale, Math.abs(a[i]!));
  }
  return { abs, rel: abs / scale };
}

function check(label: string, ref: Tensor, got: Tensor): void {
  const e = errors(ref, got);
  console.log(`# ${label}: float16 vs float32 logits max |Δ| ${e.abs.toExponential(2)}, ${e.rel.toExponential(2)} of max |logit|`);
  assert.ok(e.rel <= REL_TOL, `${label}: ${e.rel} > ${REL_TOL}`);
}

function inputsOf(c: Case): ForwardInputs {
  const ref = loadSafetensors(fixturePath("peft-parity", c.outputs)).tensors;
  const base = loadSafetensors(fixturePath("peft-parity", c.model, "base.outputs.safetensors")).tensors;
  const ids = (ref.get("input_ids") ?? base.get("input_ids")) as Tensor<"int64">;
  const attentionMask = ref.has("input_ids")
    ? ({ dtype: "int64", shape: ids.shape, data: new BigInt64Array(ids.data.length).fill(1n) } as Tensor<"int64">)
    : (base.get("attention_mask") as Tensor<"int64">);
  return { inputIds: ids, attentionMask };
}

async function both(pm: PeftModel, label: string, inputs: ForwardInputs): Promise<void> {
  check(label, await pm.forward(inputs), await pm.forward(inputs, { dtype: "float16" }));
}

describe("float16 forward vs float32 (peft-parity fixtures)", () => {
  for (const c of manifest.cases) {
    test(`${c.model}/${c.case}`, async () => {
      const inputs = inputsOf(c);
      const model = loadModel(fixturePath("peft-parity", c.model, "base"));
      const label = `${c.model}/${c.case}`;
      if (c.case === "multi_and_merge") {
        const pm = PeftModel.fromPretrained(model, fixturePath("peft-parity", c.adapters[0]!), { adapterName: "a" });
        pm.loadAdapter(fixturePath("peft-parity", c.adapters[1]!), "b");
        await both(pm, `${label} mixed b,a`, { ...inputs, adapterNames: ["b", "a"] });
        await both(pm, `${label} mixed a,base`, { ...inputs, adapterNames: ["a", "__base__"] });
        pm.setAdapter("b");
        pm.mergeAdapter();
        await both(pm, `${label} b merged`, inputs);
        await pm.dispose();
        return;
      }
      const pm = PeftModel.fromPretrained(model, fixturePath("peft-parity", c.adapters[0]!));
      await both(pm, label, inputs);
      await pm.disableAdapter(() => both(pm, `${label} disabled`, inputs));
      await pm.dispose();
    });
  }

  test("float16 sessions are cached apart from float32 ones", async () => {
    const c = manifest.cases.find((x) => x.model === "llama" && x.case === "lora")!;
    const pm = PeftModel.fromPretrained(loadModel(fixturePath("peft-parity", "llama", "base")), fixturePath("peft-parity", c.adapters[0]!));
    const inputs = inputsOf(c);
    const a = await pm.forward(inputs, { dtype: "float16" });
    const b = await pm.forward(inputs);
    const a2 = await pm.forward(inputs, { dtype: "float16" });
    assert.deepEqual(a2.data, a.data);
    assert.notDeepEqual(a.data, b.data);
    await pm.dispose();
  });

  for (const arch of ["bert", "gpt2", "llama"]) {
    test(`${arch}/lora with float16 rounding of every value (device-like)`, async () => {
      const c = manifest.cases.find((x) => x.model === arch && x.case === "lora")!;
      const inputs = inputsOf(c);
      const pm = PeftModel.fromPretrained(loadModel(fixturePath("peft-parity", arch, "base")), fixturePath("peft-parity", c.adapters[0]!));
      const built = pm.buildGraph({ dtype: "float16" });
      built.graph.output(built.outputs.logits, "logits");
      const s = await CompiledGraph.create(emulateHalf(built.graph), {});
      const out = await s.run({ input_ids: inputs.inputIds, attention_mask: inputs.attentionMask! });
      await s.release();
      check(`${arch}/lora emulated float16`, await pm.forward(inputs), out.logits!);
      await pm.dispose();
    });
  }
});
