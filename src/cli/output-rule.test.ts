/**
 * The output rule, as a property over every `peft` command that writes: with its output pointed
 * at each of its inputs (and inside/around them) the command exits 1 with PEFT_ERR_OUTPUT_IS_INPUT
 * naming both paths, with and without --overwrite, and leaves the disk byte-identical; pointed at an
 * existing output it refuses without --overwrite (disk unchanged) and replaces it with --overwrite
 * (inputs unchanged, no temporary files left).
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { cpSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, relative } from "node:path";
import { after, before, describe, test } from "node:test";
import { loadSafetensors, saveSafetensors } from "../io/safetensors.js";
import { fixturePath } from "../util/paths.js";
import { runCli } from "./main.js";
import { makeTinyModelDir, writeTinyDataset } from "../runs/testing.js";

const root = mkdtempSync(join(tmpdir(), "peft-output-rule-"));
after(() => rmSync(root, { recursive: true, force: true }));

/** Every file under `dir` → sha256 of its bytes (folders as entries too, so new empty folders count). */
function snapshot(dir: string, out = new Map<string, string>()): Map<string, string> {
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    const rel = relative(root, p);
    if (statSync(p).isDirectory()) {
      out.set(`${rel}/`, "dir");
      snapshot(p, out);
    } else out.set(rel, createHash("sha256").update(readFileSync(p)).digest("hex"));
  }
  return out;
}

interface WritingCommand {
  readonly name: string;
  readonly kind: "file" | "dir";
  /** The command line with its output at `out`. */
  args(out: string): string[];
  /** Paths the command reads. */
  readonly inputs: readonly string[];
  /** Error code for an existing output without --overwrite (run folders: an existing run). */
  readonly existsCode: string;
  /** Whether the --overwrite success case runs (demo trains USE-lite for minutes: refusals only). */
  readonly runs: boolean;
}

const p = (...s: string[]) => join(root, ...s);
let commands: WritingCommand[] = [];

before(() => {
  const bert = makeTinyModelDir("bert", p("bert"));
  const a = p("adapter-a");
  const b = p("adapter-b");
  cpSync(fixturePath("peft-parity", "bert", "multi_a"), a, { recursive: true });
  cpSync(fixturePath("peft-parity", "bert", "multi_b"), b, { recursive: true });
  const head = p("head");
  cpSync(fixturePath("peft-parity", "bert", "lora"), head, { recursive: true });
  const io = loadSafetensors(fixturePath("peft-parity", "bert", "base.outputs.safetensors")).tensors;
  const inputs = p("inputs.safetensors");
  saveSafetensors(inputs, { input_ids: io.get("input_ids")!, attention_mask: io.get("attention_mask")! });
  const yml = p("merge.yml");
  writeFileSync(yml, `merge_method: task_arithmetic\nbase_model: ${bert}\nmodels:\n  - model: ${a}\n    parameters: {weight: 0.5}\n  - model: ${b}\n    parameters: {weight: 0.5}\n`);
  const data = writeTinyDataset(p("data.jsonl"), 30, 1);
  const compeft = p("a.cpeft");
  mkdirSync(p("outputs"));
  const train = ["--target", "query,value", "--r", "2", "--max-steps", "1", "--batch-size", "8", "--threads", "1", "--no-progress", "--no-plot"];
  commands = [
    { name: "forward", kind: "file", inputs: [bert, a, inputs], existsCode: "PEFT_ERR_OUTPUT_EXISTS", runs: true, args: (o) => ["forward", "--model", bert, "--adapter", a, "--inputs", inputs, "--threads", "1", "--out", o] },
    { name: "combine", kind: "dir", inputs: [a, b, bert], existsCode: "PEFT_ERR_OUTPUT_EXISTS", runs: true, args: (o) => ["combine", "--adapters", `${a},${b}`, "--weights", "1,1", "--type", "linear", "--base", bert, "-o", o] },
    { name: "merge", kind: "dir", inputs: [yml, bert, a, b], existsCode: "PEFT_ERR_OUTPUT_EXISTS", runs: true, args: (o) => ["merge", yml, "--output", o] },
    { name: "compress compeft", kind: "file", inputs: [a], existsCode: "PEFT_ERR_OUTPUT_EXISTS", runs: true, args: (o) => ["compress", "compeft", a, "--out", o] },
    { name: "decompress", kind: "dir", inputs: [compeft], existsCode: "PEFT_ERR_OUTPUT_EXISTS", runs: true, args: (o) => ["decompress", compeft, "-o", o] },
    { name: "eval", kind: "file", inputs: [a, data, bert], existsCode: "PEFT_ERR_OUTPUT_EXISTS", runs: true, args: (o) => ["eval", "--adapter", a, "--data", data, "--model", bert, "--threads", "1", "--out", o] },
    { name: "train", kind: "dir", inputs: [bert, data], existsCode: "PEFT_ERR_CONFIG", runs: true, args: (o) => ["train", "--model", bert, "--data", data, ...train, "--out", o] },
    { name: "atlas", kind: "dir", inputs: [bert, a, b, head, data], existsCode: "PEFT_ERR_CONFIG", runs: true, args: (o) => ["atlas", "--model", bert, "--task-vectors", `${a},${b}`, "--head", head, "--data", data, "--epochs", "1", "--threads", "1", "--no-progress", "--out", o] },
    { name: "demo", kind: "dir", inputs: [], existsCode: "PEFT_ERR_OUTPUT_EXISTS", runs: false, args: (o) => ["demo", "--max-examples", "20", "--no-mfu", "--no-plot", "--no-progress", "--out", o] },
  ];
});

/** Runs `args`; expects exit 1 with `code`, stderr naming every path of `mention`, and the disk exactly as before. */
async function refused(args: string[], code: string, mention: readonly string[]): Promise<void> {
  const before = snapshot(root);
  const r = await runCli(args);
  assert.equal(r.code, 1, `${args.join(" ")}: ${r.stderr}`);
  assert.ok(r.stderr.startsWith(`error [${code}]: `), `${args.join(" ")}: ${r.stderr}`);
  for (const m of mention) assert.ok(r.stderr.includes(m), `${r.stderr} should name ${m}`);
  assert.deepEqual(snapshot(root), before, `${args.join(" ")} changed the disk`);
}

describe("the output rule over every writing command", () => {
  test("the ComPEFT input of decompress exists", async () => {
    const r = await runCli(["compress", "compeft", p("adapter-a"), "--out", p("a.cpeft")]);
    assert.equal(r.code, 0, r.stderr);
  });

  test("an output that is, is inside or contains an input is refused, with and without --overwrite", async () => {
    for (const c of commands) {
      for (const input of c.inputs) {
        const targets = [input, dirname(input)]; // the input itself; the folder that contains it
        if (statSync(input).isDirectory()) targets.push(join(input, "new-output")); // inside an input folder
        for (const out of targets) {
          // the folder around an input contains every input: the message names the first it finds
          const mention = out === dirname(input) ? [out] : [out, input];
          for (const extra of [[], ["--overwrite"]]) await refused([...c.args(out), ...extra], "PEFT_ERR_OUTPUT_IS_INPUT", mention);
        }
      }
    }
  });

  test("an existing output is refused without --overwrite and replaced with it; inputs stay byte-identical", async () => {
    for (const c of commands) {
      const out = p("outputs", c.name.replace(" ", "-") + (c.kind === "file" ? ".bin" : ""));
      if (c.kind === "file") writeFileSync(out, "precious");
      else {
        mkdirSync(out);
        writeFileSync(join(out, "adapter_config.json"), "precious");
      }
      await refused(c.args(out), c.existsCode, [out]);
      if (!c.runs) continue;
      const inputsBefore = [...snapshot(root)].filter(([k]) => !k.startsWith("outputs"));
      const r = await runCli([...c.args(out), "--overwrite"]);
      assert.equal(r.code, 0, `${c.name}: ${r.stderr}`);
      const after = snapshot(root);
      assert.deepEqual([...after].filter(([k]) => !k.startsWith("outputs")), inputsBefore, `${c.name} --overwrite changed an input`);
      const written = c.kind === "file" ? out : join(out, "adapter_config.json");
      // atlas writes its own files (atlas_coefficients.json…) and keeps the folder's other files
      if (c.name === "atlas") assert.ok(after.has(relative(root, join(out, "atlas_coefficients.json"))), "atlas --overwrite wrote its run");
      else assert.notEqual(readFileSync(written, "utf8"), "precious", `${c.name} --overwrite did not replace ${written}`);
      assert.deepEqual([...after.keys()].filter((k) => k.includes(".tmp-")), [], "no temporary file left");
    }
  });

  test("search and intrinsic-dim (whose existing folders are continued or refused by the run) refuse an output that is, holds or lies in an input", async () => {
    const bert = p("bert");
    const data = p("data.jsonl");
    const space = p("space.yaml");
    writeFileSync(space, "methods: [lora]\n");
    const runs: { inputs: string[]; args(out: string): string[] }[] = [
      { inputs: [space, bert, data], args: (o) => ["search", "--space", space, "--model", bert, "--data", data, "--trials", "1", "--threads", "1", "--out", o] },
      { inputs: [bert, data], args: (o) => ["intrinsic-dim", "--model", bert, "--data", data, "--dims", "2", "--threads", "1", "--no-progress", "--out", o] },
    ];
    for (const c of runs) {
      for (const input of c.inputs) {
        const targets = statSync(input).isDirectory() ? [input, join(input, "new-output")] : [input];
        for (const out of targets) await refused(c.args(out), "PEFT_ERR_OUTPUT_IS_INPUT", [out, input]);
      }
      await refused(c.args(root), "PEFT_ERR_OUTPUT_IS_INPUT", [root]);
    }
  });
});
