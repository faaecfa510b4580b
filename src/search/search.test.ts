/**
 * `peft search` end to end in this process on a tiny BERT: a few low-fidelity trials, the Pareto
 * set and plot, the exported configs loadable as PEFT adapters, and a restarted search that runs
 * only what was not finished.
 */
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { ConfigError } from "../errors.js";
import { PeftModel } from "../peft/peft-model.js";
import { openModelSource } from "../runs/model-source.js";
import { makeTinyModelDir, writeTinyDataset } from "../runs/testing.js";
import { runCli } from "../cli/main.js";
import { dominates } from "./pareto.js";
import { InProcessTrialExecutor, runSearch } from "./run.js";
import { decodePoint, parseSearchSpace, readSearchSpace, spaceDims, trialTraining } from "./space.js";
import { packageRoot } from "../util/paths.js";
import { TINY_SPACE } from "./tiny-space.test-util.js";

describe("peft search (in-process)", () => {
  let root: string;
  let model: string;
  let data: string;
  before(() => {
    root = mkdtempSync(join(tmpdir(), "peft-search-"));
    model = makeTinyModelDir("bert", join(root, "model"));
    data = writeTinyDataset(join(root, "data.jsonl"), 80, 2, 2);
  });
  after(() => rmSync(root, { recursive: true, force: true }));

  test("the space: bad files name the field; points decode to LoRA rank patterns, (IA)³ targets, layer masks", () => {
    assert.throws(() => parseSearchSpace({ methods: ["lora"] }), ConfigError);
    assert.throws(() => parseSearchSpace({ ...TINY_SPACE, methods: ["nope"] }), /methods/);
    assert.throws(() => parseSearchSpace({ ...TINY_SPACE, groups: { a: { targets: ["q"], ranks: [0] } } }), /rank above 0/);
    const s = parseSearchSpace(TINY_SPACE);
    assert.deepEqual(spaceDims(s).map((d) => d.kind), ["method", "layer", "layer", "group", "group", "lr"]);
    const c = decodePoint(s, [0.1, 0.9, 0.2, 0.99, 0.8, 0]);
    assert.deepEqual(c, { method: "lora", layers: [0], ranks: { attention: 4, ffn: 2 }, numVirtualTokens: 20, lr: 0.005 });
    assert.deepEqual(trialTraining(s, c).adapterConfig, { layers_to_transform: [0], rank_pattern: { "intermediate.dense": 2 }, alpha_pattern: { "intermediate.dense": 4 } });
    // everything off → the largest coordinate's layer and group stay on
    const off = decodePoint(s, [0.9, 0.1, 0.3, 0.2, 0.1, 1]);
    assert.deepEqual([off.method, off.layers, off.ranks], ["ia3", [1], { attention: 2, ffn: 0 }]);
    assert.ok(Math.abs(off.lr - 0.05) < 1e-12);
    // (IA)³ has no layers_to_transform in PEFT: the layers go into target_modules / feedforward_modules as regexes
    const ia3 = trialTraining(s, { ...off, ranks: { attention: 2, ffn: 2 } });
    assert.equal(ia3.target, String.raw`.*\.layer\.(1)\.(.*\.)?(query|value|intermediate\.dense)`);
    assert.equal(ia3.feedforward, String.raw`.*\.layer\.(1)\.(.*\.)?(intermediate\.dense)`);
    assert.deepEqual(trialTraining(s, { ...off, layers: null, ranks: { attention: 2, ffn: 2 } }).feedforward, ["intermediate.dense"]);
    const example = readSearchSpace(join(packageRoot(), "examples", "search-space.yaml"));
    assert.ok(spaceDims(example).length >= 5);
  });

  test("5 trials → pareto.json, plot, loadable Pareto configs; a restart runs only the unfinished trial", async () => {
    const out = join(root, "search");
    const space = parseSearchSpace(TINY_SPACE);
    const opts = { space, model, data, out, trials: 5, initial: 3, threads: 1 };
    const r = await runSearch(opts, new InProcessTrialExecutor(out));
    assert.equal(r.trials.length, 5);
    assert.equal(r.ran, 5);
    assert.ok(r.trials.every((t) => t.status === "done"), JSON.stringify(r.trials.map((t) => t.error)));
    const summary = JSON.parse(readFileSync(join(out, "pareto.json"), "utf8")) as { pareto: { trial: number; metrics: { accuracy: number; trainable_params: number }; adapterConfig: string }[]; all: unknown[] };
    assert.equal(summary.all.length, 5);
    assert.ok(summary.pareto.length >= 1);
    // the Pareto set is exactly the non-dominated trials
    const ys = r.trials.map((t) => [1 - t.result!.accuracy!, t.result!.trainableParams]);
    for (const p of summary.pareto) assert.ok(!ys.some((y) => dominates(y, ys[p.trial]!)), `trial ${p.trial} is dominated`);
    for (let i = 0; i < ys.length; i++) if (!summary.pareto.some((p) => p.trial === i)) assert.ok(ys.some((y) => dominates(y, ys[i]!) || (y !== ys[i] && y.every((v, k) => v === ys[i]![k]))), `trial ${i} is not dominated yet not on the front`);
    // each exported config trains: PeftModel.create gives the trial's trainable parameter count
    const base = openModelSource(model, { numLabels: 2, seed: 0 }).model;
    for (const p of summary.pareto) {
      const cfg = JSON.parse(readFileSync(join(out, p.adapterConfig), "utf8")) as Record<string, unknown>;
      const pm = PeftModel.create(base, cfg, "default", { seed: 0 });
      assert.equal(pm.getNbTrainableParameters()[0], p.metrics.trainable_params);
      await pm.dispose();
    }
    assert.ok(readFileSync(join(out, "pareto.svg"), "utf8").includes("<svg"));
    assert.ok(statSync(join(out, "pareto.png")).size > 1000);

    // a crash before trial 4 finished: it is pending with a half run; the restart runs only it
    const t4 = JSON.parse(readFileSync(join(out, "trials", "004", "trial.json"), "utf8")) as Record<string, unknown>;
    writeFileSync(join(out, "trials", "004", "trial.json"), JSON.stringify({ ...t4, status: "pending", result: undefined }));
    rmSync(join(out, "trials", "004", "run", "metrics.json"));
    const before0 = statSync(join(out, "trials", "000", "trial.json")).mtimeMs;
    const again = await runSearch({ ...opts, trials: 6 }, new InProcessTrialExecutor(out));
    assert.equal(again.ran, 2, "trial 4 again and the new trial 5");
    assert.equal(again.trials.length, 6);
    assert.ok(again.trials.every((t) => t.status === "done"));
    assert.equal(statSync(join(out, "trials", "000", "trial.json")).mtimeMs, before0, "finished trials are not run again");
    await assert.rejects(runSearch({ ...opts, seed: 9 }, new InProcessTrialExecutor(out)), /another model, data, space or seed/);

    // the CLI continues the same search: nothing left to run for --trials 6
    const spaceFile = join(root, "space.json");
    writeFileSync(spaceFile, JSON.stringify(TINY_SPACE));
    const cli = await runCli(["search", "--space", spaceFile, "--data", data, "--model", model, "--out", out, "--trials", "6", "--initial", "3", "--threads", "1", "--json"]);
    assert.equal(cli.code, 0, cli.stderr);
    const printed = JSON.parse(cli.stdout) as { ran: number; trials: number; pareto: unknown[] };
    assert.deepEqual([printed.ran, printed.trials], [0, 6]);
    assert.ok(existsSync(join(out, "pareto.png")));
  });
});
