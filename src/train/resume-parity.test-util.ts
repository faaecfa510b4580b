/**
 * Resume parity for tuners with a training allocator: a run of `steps` optimizer steps against
 * the same run stopped after `k` steps (checkpoint written) and resumed to `steps`. The adapters
 * must agree to 1e-6 and the allocated `rank_pattern`s exactly.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PeftModel } from "../peft/peft-model.js";
import { toFloat32 } from "../tensor.js";
import { loadCheckpoint } from "./checkpoint.js";
import { fixtureModel, maxDiff } from "./method-suite.test-util.js";
import { patternCorpus } from "./tiny-llama.test-util.js";
import { Trainer } from "./trainer.js";

export async function assertResumeParity(raw: Readonly<Record<string, unknown>>, steps: number, stops: readonly number[], lr = 0.05): Promise<void> {
  const model = fixtureModel("llama");
  const cfg = { task: "causal-lm", epochs: 100, maxSteps: steps, batchSize: 8, lr, seed: 0, schedule: "constant", dropout: false } as const;
  const data = patternCorpus(8, 2, () => 6);
  const straight = PeftModel.create(model, raw, "default", { seed: 1 });
  await new Trainer(straight, cfg, data).fit();
  const a = straight.adapter("default");
  const rp = (a.config as { rankPattern?: Record<string, number> }).rankPattern;
  assert.ok(rp, "the straight run wrote rank_pattern");
  for (const k of stops) {
    const dir = mkdtempSync(join(tmpdir(), "peft-resume-parity-"));
    try {
      const first = PeftModel.create(model, raw, "default", { seed: 1 });
      await new Trainer(first, { ...cfg, maxSteps: k, checkpointDir: dir, checkpointEvery: k }, data).fit();
      await first.dispose();
      const ck = loadCheckpoint(dir);
      assert.equal(ck.step, k);
      assert.ok("default" in ((ck.extras.allocators ?? {}) as Record<string, unknown>), `stop at ${k}: the checkpoint holds the allocator's state`);
      const resumed = PeftModel.create(model, raw, "default", { seed: 1 });
      await new Trainer(resumed, { ...cfg, checkpointDir: dir }, data).fit();
      const b = resumed.adapter("default");
      assert.deepEqual((b.config as { rankPattern?: Record<string, number> }).rankPattern, rp, `stop at ${k}: rank_pattern`);
      assert.deepEqual([...b.tensors.keys()].sort(), [...a.tensors.keys()].sort());
      for (const [key, v] of a.tensors) {
        const w = b.tensors.get(key)!;
        assert.deepEqual(w.shape, v.shape, key);
        const d = maxDiff(toFloat32(w), toFloat32(v));
        assert.ok(d <= 1e-6, `stop at ${k}: ${key} differs by ${d}`);
      }
      await resumed.dispose();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }
  await straight.dispose();
}
