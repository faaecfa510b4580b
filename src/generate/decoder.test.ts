import assert from "node:assert/strict";
import { after, describe, test } from "node:test";
import { loadModel } from "../models/load.js";
import { AdapterPool, planLayout } from "../peft/adapter-pool.js";
import { PeftModel } from "../peft/peft-model.js";
import { toFloat32 } from "../tensor.js";
import { fixturePath } from "../util/paths.js";
import { Decoder, moduleShapes } from "./decoder.js";

const TOL = 1e-5;

function maxDiff(a: Float32Array, b: Float32Array): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

/** Logits of the last position of each prefix, from full forward passes of `model` with `adapter` active (null: base). */
async function fullForwardLast(pm: PeftModel, ids: number[], vocab: number): Promise<Float32Array> {
  const t = { dtype: "int64" as const, shape: [1, ids.length], data: BigInt64Array.from(ids, BigInt) };
  const l = toFloat32(await pm.forward({ inputIds: t }));
  return l.slice((l.length / vocab - 1) * vocab);
}

const CASES: { model: string; adapter: string | null }[] = [
  { model: "gpt2", adapter: null },
  { model: "gpt2", adapter: "lora" },
  { model: "gpt2", adapter: "rslora_all_linear" },
  { model: "gpt2", adapter: "lora_patterns" },
  { model: "gpt2", adapter: "dora" },
  { model: "gpt2", adapter: "ia3" },
  { model: "gpt2", adapter: "prompt_tuning" },
  { model: "llama", adapter: null },
  { model: "llama", adapter: "lora" },
];

describe("incremental decoding equals the full forward pass at every step", () => {
  const toRelease: (() => Promise<void>)[] = [];
  after(async () => {
    for (const r of toRelease) await r();
  });
  for (const c of CASES) {
    test(`${c.model}/${c.adapter ?? "base"}`, async () => {
      const base = loadModel(fixturePath("peft-parity", c.model, "base"));
      const pm = c.adapter ? PeftModel.fromPretrained(base, fixturePath("peft-parity", c.model, c.adapter), { adapterName: "a" }) : new PeftModel(base);
      toRelease.push(() => pm.dispose());
      const adapters = c.adapter ? [pm.adapter("a")] : [];
      const layout = planLayout(adapters, moduleShapes(pm), base.config.hiddenSize, { minSlots: 1 });
      const pool = new AdapterPool(layout, (n) => pm.weights.get(n), (n) => pm.weights.has(n));
      if (c.adapter) pool.assign(1, pm.adapter("a"));
      const dec = await Decoder.create(pm, pool);
      toRelease.push(() => dec.release());
      const V = dec.geometry.vocabSize;
      const prompt = [5, 17, 42, 9, 3];
      const vt = pool.virtualTokens(1);
      // prompt tuning: the virtual tokens go first, as PEFT prepends them
      const prefix = vt ? Array.from({ length: vt[1] }, (_, i) => vt[0] + i) : [];
      const first = await dec.step([{ slot: 0, ids: [...prefix.map(() => 0), ...prompt], virtual: [...prefix, ...prompt.map(() => -1)], adapterSlot: c.adapter ? 1 : 0 }]);
      let worst = maxDiff(first[0]!, await fullForwardLast(pm, prompt, V));
      const seq = [...prompt];
      let logits = first[0]!;
      for (let step = 0; step < 6; step++) {
        let best = 0;
        for (let i = 1; i < V; i++) if (logits[i]! > logits[best]!) best = i;
        seq.push((best + step * 7) % V); // vary the tokens a little
        logits = (await dec.step([{ slot: 0, ids: [seq.at(-1)!], adapterSlot: c.adapter ? 1 : 0 }]))[0]!;
        worst = Math.max(worst, maxDiff(logits, await fullForwardLast(pm, seq, V)));
      }
      console.log(`# ${c.model}/${c.adapter ?? "base"}: max |Δ| over 7 steps = ${worst.toExponential(2)}`);
      assert.ok(worst <= TOL, `${worst} > ${TOL}`);
    });
  }
});
