import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import { runCli } from "../main.js";
import type { MatmulTerm } from "../../graph/flops.js";
import { ceilingShapes } from "../../runs/demo.js";

describe("peft demo", () => {
  test("a tiny run (60 sentences, 1 epoch) writes metrics.json with the required keys", async () => {
    const dir = mkdtempSync(join(tmpdir(), "peft-demo-"));
    try {
      const out = join(dir, "demo");
      const r = await runCli(["demo", "--out", out, "--seed", "4", "--max-examples", "60", "--epochs", "1", "--threads", "1", "--no-mfu", "--no-plot", "--no-progress", "--json"]);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stderr, /frozen baseline: lr [\d.e-]+, weight decay [\d.]+, \d+ epochs → validation accuracy/);
      const m = JSON.parse(readFileSync(join(out, "metrics.json"), "utf8")) as Record<string, unknown>;
      assert.deepEqual(JSON.parse(r.stdout), m);
      for (const k of ["frozen_accuracy", "lora_accuracy", "trainable_fraction", "seconds", "split", "seed"]) assert.ok(k in m, `metrics.json lacks ${k}`);
      for (const k of ["frozen_accuracy", "lora_accuracy", "frozen_validation_accuracy", "lora_validation_accuracy"]) {
        const v = m[k] as number;
        assert.ok(v >= 0 && v <= 1, `${k} = ${v}`);
        assert.equal(Math.round(v * 6) / 6, v, `${k} is a fraction of the 6 test/validation sentences`);
      }
      assert.equal(m.seed, 4);
      const split = m.split as { seed: number; numExamples: number; counts: Record<string, number> };
      assert.equal(split.seed, 4);
      assert.deepEqual(split.counts, { train: 48, validation: 6, test: 6 });
      const lora = JSON.parse(readFileSync(join(out, "lora", "metrics.json"), "utf8")) as { trainableParams: number; allParams: number; steps: number };
      assert.equal(m.trainable_fraction, lora.trainableParams / lora.allParams);
      assert.ok((m.trainable_fraction as number) > 0.005 && (m.trainable_fraction as number) < 0.05);
      assert.equal(m.lora_steps, lora.steps);
      assert.equal(lora.steps, 3, "48 sentences at batch 16, 1 epoch");
      assert.equal(m.frozen_trainable_params, 2 * 513);
      assert.equal(m.matmul_ceiling_gflops, null);
      assert.ok(existsSync(join(out, "lora", "adapter_model.safetensors")));
      assert.ok(existsSync(join(out, "lora", "adapter_config.json")));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("the matmul ceiling is timed on the frozen layers' distinct shapes", () => {
    const t = (out: MatmulTerm["out"], k: MatmulTerm["k"], trainable = false): MatmulTerm => ({ name: "x", out, k, trainable });
    const shapes = ceilingShapes([t(["batch*seq", 256], 256), t(["batch*seq", 256], 256), t(["batch*seq", 8], 256, true), t(["batch", 4, "seq", "seq"], 64), t(["batch", 512], 512)]);
    assert.deepEqual(shapes, [
      { name: "256x256", m: 1024, k: 256, n: 256 },
      { name: "512x512", m: 1024, k: 512, n: 512 },
    ]);
  });
});
