import { after, describe, test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CheckpointError, ConfigError } from "../errors.js";
import type { Tensor } from "../tensor.js";
import { CHECKPOINT_FILE, hasCheckpoint, loadCheckpoint, saveCheckpoint, type TrainingCheckpoint } from "./checkpoint.js";
import { AdamW } from "./optim/adamw.js";
import { Rng } from "../util/rng.js";

const root = fs.mkdtempSync(join(tmpdir(), "peft-ckpt-"));
after(() => fs.rmSync(root, { recursive: true, force: true }));

function bytes(t: Tensor): number[] {
  return Array.from(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength));
}

/** A training state after `steps` AdamW steps, from a fixed seed. */
function makeState(steps: number): { ckpt: TrainingCheckpoint; opt: AdamW; rng: Rng } {
  const rng = new Rng(2024);
  const w = Float32Array.from({ length: 6 }, () => rng.normal());
  w[5] = -0; // signed zero must survive
  const b = new Float32Array(3);
  const opt = new AdamW(
    [
      { name: "lora_A.weight", data: w },
      { name: "classifier.bias", data: b, weightDecay: 0 },
    ],
    { lr: 0.01, amsgrad: true },
  );
  for (let t = 0; t < steps; t++) {
    opt.step([Float32Array.from(w, () => rng.normal()), Float32Array.from(b, () => rng.uniform())]);
  }
  const dataOrder = rng.permutation(50);
  rng.normal(); // leave a cached Box–Muller value in the state
  const half = { dtype: "bfloat16", shape: [2], data: Uint16Array.from([0x3f80, 0xc0a0 + steps]) } as const;
  const ckpt: TrainingCheckpoint = {
    step: steps,
    epoch: steps / 4,
    params: new Map<string, Tensor>([
      ["lora_A.weight", { dtype: "float32", shape: [2, 3], data: w }],
      ["classifier.bias", { dtype: "float32", shape: [3], data: b }],
      ["scale", half],
    ]),
    optimizer: opt.stateDict(),
    rng: { data: rng.state(), dropout: rng.fork("dropout").state() },
    dataOrder,
    extras: { split: { seed: 42, hash: "abc" }, losses: [0.5, 0.25], note: null, best: steps === 3 },
  };
  return { ckpt, opt, rng };
}

function assertSame(dir: string, ckpt: TrainingCheckpoint): void {
  const got = loadCheckpoint(dir);
  assert.equal(got.step, ckpt.step);
  assert.equal(got.epoch, ckpt.epoch);
  const params = ckpt.params as Map<string, Tensor>;
  assert.deepEqual([...got.params.keys()].sort(), [...params.keys()].sort());
  for (const [k, t] of params) {
    const g = got.params.get(k)!;
    assert.equal(g.dtype, t.dtype, k);
    assert.deepEqual(g.shape, t.shape, k);
    assert.deepEqual(bytes(g), bytes(t), k);
  }
  assert.deepEqual(got.optimizer.params, ckpt.optimizer.params);
  assert.deepEqual(got.optimizer.hyperparams, ckpt.optimizer.hyperparams);
  assert.equal(got.optimizer.step, ckpt.optimizer.step);
  assert.deepEqual([...got.optimizer.tensors.keys()].sort(), [...ckpt.optimizer.tensors.keys()].sort());
  for (const [k, v] of ckpt.optimizer.tensors) {
    const g = got.optimizer.tensors.get(k)!;
    assert.deepEqual(Array.from(new Uint8Array(g.buffer, g.byteOffset, g.byteLength)), Array.from(new Uint8Array(v.buffer, v.byteOffset, v.byteLength)), k);
  }
  assert.deepEqual(got.rng, ckpt.rng);
  assert.deepEqual(Array.from(got.dataOrder), Array.from(ckpt.dataOrder));
  assert.deepEqual(got.extras, ckpt.extras);
}

class SimulatedCrash extends Error {}

type RenameSync = (a: fs.PathLike, b: fs.PathLike) => void;
type Mutable = { renameSync: RenameSync; unlinkSync: (p: fs.PathLike) => void; rmSync: (p: fs.PathLike, o?: fs.RmOptions) => void };

/** Runs `fn` as a process that dies when it renames onto a path matching `at`: nothing after that point runs, nothing is cleaned up. */
function crashWhenRenaming(at: RegExp, fn: () => void): void {
  const m = fs as unknown as Mutable;
  const saved = { renameSync: m.renameSync, unlinkSync: m.unlinkSync, rmSync: m.rmSync };
  m.renameSync = (a, b) => {
    if (at.test(String(b))) throw new SimulatedCrash(`crash before renaming onto ${String(b)}`);
    saved.renameSync(a, b);
  };
  m.unlinkSync = () => {};
  m.rmSync = () => {};
  try {
    assert.throws(fn, SimulatedCrash);
  } finally {
    Object.assign(m, saved);
  }
}

describe("training checkpoints", () => {
  test("save → load round-trips everything bit-exactly, and training resumes identically", () => {
    const dir = join(root, "roundtrip", "nested");
    const { ckpt, opt, rng } = makeState(3);
    assert.equal(hasCheckpoint(dir), false);
    saveCheckpoint(dir, ckpt);
    assert.equal(hasCheckpoint(dir), true);
    assertSame(dir, ckpt);

    // Resume: a fresh optimizer and RNG from the checkpoint continue exactly like the originals.
    const got = loadCheckpoint(dir);
    const p = got.params;
    const w2 = (p.get("lora_A.weight")!.data as Float32Array).slice();
    const b2 = (p.get("classifier.bias")!.data as Float32Array).slice();
    const opt2 = new AdamW([
      { name: "lora_A.weight", data: w2 },
      { name: "classifier.bias", data: b2 },
    ]);
    opt2.loadStateDict(got.optimizer);
    const rng2 = Rng.fromState(got.rng.data!);
    for (let t = 0; t < 3; t++) {
      const g1 = [Float32Array.from(w2, () => rng.normal()), Float32Array.from(b2, () => rng.uniform())];
      const g2 = [Float32Array.from(w2, () => rng2.normal()), Float32Array.from(b2, () => rng2.uniform())];
      opt.step(g1);
      opt2.step(g2);
    }
    assert.deepEqual(Array.from(w2), Array.from(opt.params[0]!.data));
    assert.deepEqual(Array.from(b2), Array.from(opt.params[1]!.data));
  });

  test("a new save replaces the old one and leaves exactly one set of files", () => {
    const dir = join(root, "replace");
    saveCheckpoint(dir, makeState(1).ckpt);
    fs.writeFileSync(join(dir, "adapter_config.json"), "{}"); // someone else's file stays
    const second = makeState(2).ckpt;
    saveCheckpoint(dir, second);
    assertSame(dir, second);
    const names = fs.readdirSync(dir).sort();
    assert.equal(names.length, 4, names.join(", "));
    assert.ok(names.includes("adapter_config.json") && names.includes(CHECKPOINT_FILE));
    assert.equal(names.filter((n) => /^params-2-[0-9a-f]+\.safetensors$/.test(n)).length, 1);
    assert.equal(names.filter((n) => /^state-2-[0-9a-f]+\.safetensors$/.test(n)).length, 1);
  });

  test("a crash mid-save leaves the previous checkpoint loadable; the next save cleans up", () => {
    const dir = join(root, "crash");
    const first = makeState(1).ckpt;
    saveCheckpoint(dir, first);

    // Crash after the parameter file is in place, before the state file is renamed.
    crashWhenRenaming(/state-\d+-[0-9a-f]+\.safetensors$/, () => saveCheckpoint(dir, makeState(2).ckpt));
    assert.ok(fs.readdirSync(dir).some((n) => /^params-2-/.test(n)), "the crashed save got as far as the params file");
    assertSame(dir, first);

    // Crash with both tensor files written, just before checkpoint.json is replaced.
    crashWhenRenaming(/checkpoint\.json$/, () => saveCheckpoint(dir, makeState(3).ckpt));
    assert.ok(fs.readdirSync(dir).some((n) => /^checkpoint\.json\.tmp-/.test(n)), "a temporary checkpoint.json was left behind");
    assertSame(dir, first);

    // Crash after the commit but before the old files are deleted: the new checkpoint is in force.
    const fourth = makeState(4).ckpt;
    const m = fs as unknown as Mutable;
    const rm = m.rmSync;
    m.rmSync = () => {
      throw new SimulatedCrash("crash during cleanup");
    };
    try {
      assert.throws(() => saveCheckpoint(dir, fourth), SimulatedCrash);
    } finally {
      m.rmSync = rm;
    }
    assertSame(dir, fourth);

    const fifth = makeState(5).ckpt;
    saveCheckpoint(dir, fifth);
    assertSame(dir, fifth);
    assert.deepEqual(fs.readdirSync(dir).filter((n) => !/^(params|state)-5-[0-9a-f]+\.safetensors$/.test(n)), [CHECKPOINT_FILE]);
  });

  test("missing or damaged checkpoints raise CheckpointError", () => {
    const empty = join(root, "empty");
    fs.mkdirSync(empty);
    assert.throws(() => loadCheckpoint(empty), CheckpointError);

    const dir = join(root, "damaged");
    saveCheckpoint(dir, makeState(1).ckpt);
    const record = JSON.parse(fs.readFileSync(join(dir, CHECKPOINT_FILE), "utf8")) as { files: { params: { name: string }; state: { name: string } } };
    const paramsFile = join(dir, record.files.params.name);
    const good = fs.readFileSync(paramsFile);
    fs.writeFileSync(paramsFile, good.subarray(0, good.length - 4));
    assert.throws(() => loadCheckpoint(dir), (e: unknown) => e instanceof CheckpointError && /bytes/.test(e.message));
    fs.writeFileSync(paramsFile, good);
    loadCheckpoint(dir);
    fs.rmSync(join(dir, record.files.state.name));
    assert.throws(() => loadCheckpoint(dir), (e: unknown) => e instanceof CheckpointError && /missing/.test(e.message));
    fs.writeFileSync(join(dir, CHECKPOINT_FILE), "{ not json");
    assert.throws(() => loadCheckpoint(dir), CheckpointError);
  });

  test("extra tensors (e.g. early stopping's best parameters) round-trip; a record naming a missing one is an error", () => {
    const dir = join(root, "extra-tensors");
    const best: Tensor = { dtype: "float32", shape: [2, 3], data: Float32Array.from([1, -2, 3.5, 0, 1e-8, 7]) };
    saveCheckpoint(dir, { ...makeState(3).ckpt, tensors: new Map([["best/w", best]]) });
    const got = loadCheckpoint(dir);
    assert.deepEqual([...got.tensors.keys()], ["best/w"]);
    assert.deepEqual(got.tensors.get("best/w")!.shape, [2, 3]);
    assert.deepEqual(bytes(got.tensors.get("best/w")!), bytes(best));
    saveCheckpoint(join(root, "no-extra"), makeState(1).ckpt);
    assert.equal(loadCheckpoint(join(root, "no-extra")).tensors.size, 0);
    const recordPath = join(dir, CHECKPOINT_FILE);
    const record = JSON.parse(fs.readFileSync(recordPath, "utf8")) as { tensors: string[] };
    record.tensors = ["best/w", "best/missing"];
    fs.writeFileSync(recordPath, JSON.stringify(record));
    assert.throws(() => loadCheckpoint(dir), (e: unknown) => e instanceof CheckpointError && /best\/missing/.test(e.message));
    fs.writeFileSync(recordPath, JSON.stringify({ ...record, tensors: "best/w" }));
    assert.throws(() => loadCheckpoint(dir), (e: unknown) => e instanceof CheckpointError && /'tensors' is malformed/.test(e.message));
  });

  test("values JSON cannot hold are rejected before anything is written", () => {
    const dir = join(root, "reject");
    const { ckpt } = makeState(1);
    assert.throws(() => saveCheckpoint(dir, { ...ckpt, extras: { loss: NaN } }), ConfigError);
    assert.throws(() => saveCheckpoint(dir, { ...ckpt, dataOrder: [0, -1] }), ConfigError);
    assert.throws(() => saveCheckpoint(dir, { ...ckpt, step: 1.5 }), ConfigError);
    assert.equal(fs.existsSync(dir), false);
  });
});
