/** `peft intrinsic-dim` end to end on a tiny BERT: the sweep, results JSON, plot, d90 and the run-folder rules. */
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { runCli } from "../../cli/main.js";
import { makeTinyModelDir, writeTinyDataset } from "../../runs/testing.js";
import { intrinsicDimension } from "./d90.js";
import type { IntrinsicDimResults } from "./run.js";

describe("peft intrinsic-dim", () => {
  let root: string;
  let model: string;
  let data: string;
  before(() => {
    root = mkdtempSync(join(tmpdir(), "peft-intrinsic-"));
    model = makeTinyModelDir("bert", join(root, "model"));
    data = writeTinyDataset(join(root, "data.jsonl"), 60, 2, 2);
  });
  after(() => rmSync(root, { recursive: true, force: true }));

  test("a sweep over d writes intrinsic_dim.json and the plot; d90 follows from the points; an existing folder is refused", async () => {
    const out = join(root, "id");
    const args = ["intrinsic-dim", "--model", model, "--data", data, "--dims", "8,2", "--params", "classifier,attention\\.output", "--epochs", "2", "--batch-size", "8", "--lr", "0.2", "--full-lr", "0.01", "--threads", "1", "--out", out];
    const r = await runCli([...args, "--json"]);
    assert.equal(r.code, 0, r.stderr);
    const res = JSON.parse(readFileSync(join(out, "intrinsic_dim.json"), "utf8")) as IntrinsicDimResults;
    assert.deepEqual(JSON.parse(r.stdout), res);
    assert.ok(res.complete);
    assert.deepEqual(res.points.map((p) => p.dim), [2, 8]);
    assert.ok(res.parameters.blocks.every((b) => /classifier|attention\.output/.test(b)) && res.parameters.blocks.includes("classifier.weight"));
    assert.ok(res.full !== null && !("given" in res.full) && res.full.projection === "identity" && res.full.dim === res.parameters.count);
    assert.ok(res.points.every((p) => p.projection === "dense" && p.validation!.examples > 0 && p.steps > 0 && Number.isFinite(p.finalTrainLoss)));
    assert.equal(res.referenceAccuracy, res.full.validation!.accuracy);
    assert.equal(res.d90, intrinsicDimension(res.points.map((p) => ({ dim: p.dim, metric: p.validation!.accuracy })), res.referenceAccuracy!, 0.9));
    assert.ok(readFileSync(join(out, "intrinsic_dim.svg"), "utf8").includes("<svg"));
    assert.ok(statSync(join(out, "intrinsic_dim.png")).size > 1000);
    // the same folder again: refused without --overwrite, nothing touched
    const before0 = statSync(join(out, "intrinsic_dim.json")).mtimeMs;
    const again = await runCli(args);
    assert.notEqual(again.code, 0);
    assert.match(again.stderr, /already holds a run/);
    assert.equal(statSync(join(out, "intrinsic_dim.json")).mtimeMs, before0);
    // a given reference skips the full training; Fastfood works through the CLI too
    const r2 = await runCli(["intrinsic-dim", "--model", model, "--data", data, "--dims", "4", "--projection", "fastfood", "--full-accuracy", "0.5", "--epochs", "1", "--threads", "1", "--out", out, "--overwrite", "--json"]);
    assert.equal(r2.code, 0, r2.stderr);
    const res2 = JSON.parse(r2.stdout) as IntrinsicDimResults;
    assert.deepEqual(res2.full, { given: true, validationAccuracy: 0.5 });
    assert.equal(res2.points[0]!.projection, "fastfood");
    assert.ok(!res2.parameters.blocks.some((b) => b.includes("embeddings")), "default θ leaves the embedding tables out");
    // bad input is a typed error naming the option
    const bad = await runCli(["intrinsic-dim", "--model", model, "--data", data, "--dims", "2,x", "--out", join(root, "bad")]);
    assert.notEqual(bad.code, 0);
    assert.match(bad.stderr, /--dims/);
    const none = await runCli(["intrinsic-dim", "--model", model, "--data", data, "--dims", "2", "--params", "nothing-matches", "--out", join(root, "bad")]);
    assert.match(none.stderr, /no parameter matches/);
  });
});
