/**
 * Layer importance as a search prior: a training run records importance.json, `peft inspect
 * --importance` prints it, and `peft search --importance RUN --keep-layers K` searches only the K
 * most important layers (the others are never adapted).
 */
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { runCli } from "../cli/main.js";
import { makeTinyModelDir, writeTinyDataset } from "../runs/testing.js";
import type { LayerImportance } from "../train/importance.js";
import { applyLayerPrior, decodePoint, parseSearchSpace, searchSpaceToRaw, spaceDims, trialTraining } from "./space.js";
import { TINY_SPACE } from "./tiny-space.test-util.js";

describe("layer importance prior", () => {
  let root: string;
  let model: string;
  let data: string;
  before(() => {
    root = mkdtempSync(join(tmpdir(), "peft-prior-"));
    model = makeTinyModelDir("bert", join(root, "model"));
    data = writeTinyDataset(join(root, "data.jsonl"), 60, 2, 2);
  });
  after(() => rmSync(root, { recursive: true, force: true }));

  test("a pruned space searches only the kept layers; all of them on stays those layers, through the job encoding too", () => {
    const s = applyLayerPrior(parseSearchSpace(TINY_SPACE), [1, 0], 1);
    assert.deepEqual([s.layers, s.layersOnly], [[1], true]);
    assert.equal(spaceDims(s).filter((d) => d.kind === "layer").length, 1);
    const all = decodePoint(s, spaceDims(s).map(() => 0.9));
    assert.deepEqual(all.layers, [1], "all on = the kept layers, not every layer");
    assert.deepEqual(trialTraining(s, { ...all, method: "lora" }).adapterConfig.layers_to_transform, [1]);
    const again = parseSearchSpace(searchSpaceToRaw(s));
    assert.deepEqual([again.layers, again.layersOnly], [[1], true]);
    // without the prior, all on is every layer (null)
    const plain = parseSearchSpace(TINY_SPACE);
    assert.equal(decodePoint(plain, spaceDims(plain).map(() => 0.9)).layers, null);
    assert.throws(() => applyLayerPrior(plain, [1, 0], 0), /keep-layers/);
    assert.throws(() => applyLayerPrior({ ...plain, layers: [5] }, [1, 0], 1), /none of the space's layers/);
  });

  test("peft train records importance.json; peft inspect --importance prints it; peft search --importance searches the top layer only", async () => {
    const run = join(root, "run");
    const r = await runCli(["train", "--model", model, "--data", data, "--out", run, "--target", "query,value", "--r", "2", "--alpha", "4", "--epochs", "1", "--batch-size", "8", "--lr", "0.05", "--threads", "1", "--no-progress", "--no-plot"]);
    assert.equal(r.code, 0, r.stderr);
    const imp = JSON.parse(readFileSync(join(run, "importance.json"), "utf8")) as LayerImportance;
    assert.equal(imp.layers.length, 2);
    assert.ok(imp.steps > 0 && imp.layers.every((l) => l.tensors === 4 && l.taylor > 0));
    assert.deepEqual(imp.layers.map((l) => l.rank).sort(), [1, 2]);
    const shown = await runCli(["inspect", "--importance", run]);
    assert.equal(shown.code, 0, shown.stderr);
    const top = imp.layers.find((l) => l.rank === 1)!.layer;
    assert.match(shown.stdout, new RegExp(`^\\s+1\\s+${top}\\s`, "m"));
    assert.deepEqual(JSON.parse((await runCli(["inspect", "--importance", run, "--json"])).stdout), imp);
    const missing = await runCli(["inspect", "--importance", model]);
    assert.notEqual(missing.code, 0);
    assert.match(missing.stderr, /importance\.json/);

    const spaceFile = join(root, "space.json");
    writeFileSync(spaceFile, JSON.stringify({ ...TINY_SPACE, methods: ["lora"] }));
    const out = join(root, "search");
    const s = await runCli(["search", "--space", spaceFile, "--data", data, "--model", model, "--out", out, "--trials", "2", "--initial", "2", "--threads", "1", "--importance", run, "--keep-layers", "1", "--json"]);
    assert.equal(s.code, 0, s.stderr);
    assert.match(s.stderr, new RegExp(`searching layers ${top}\\b`));
    for (const i of ["000", "001"]) {
      const t = JSON.parse(readFileSync(join(out, "trials", i, "trial.json"), "utf8")) as { config: { layers: number[] | null } };
      assert.deepEqual(t.config.layers, [top]);
    }
  });
});
