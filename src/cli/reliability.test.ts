/**
 * Faults as a user meets them (issue 19): each test runs the command, then checks the exit code,
 * the error code and the disk (inputs byte-identical, no stray files).
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { writeFileAtomic } from "../io/atomic.js";
import { loadSafetensors, saveSafetensors } from "../io/safetensors.js";
import { fixturePath } from "../util/paths.js";
import { main, runCli } from "./main.js";

const root = mkdtempSync(join(tmpdir(), "peft-reliability-"));
after(() => rmSync(root, { recursive: true, force: true }));
let n = 0;
const fresh = (name: string) => join(root, `${n++}-${name}`);
const fx = (...p: string[]) => fixturePath("peft-parity", ...p);

/** A copy of a fixture adapter with one tensor's first element set to `value`. */
function poisonedAdapter(value: number): string {
  const dir = fresh("poisoned");
  cpSync(fx("bert", "multi_a"), dir, { recursive: true });
  const file = join(dir, "adapter_model.safetensors");
  const tensors = new Map(loadSafetensors(file).tensors);
  const [key, t] = [...tensors].find(([, t]) => t.dtype === "float32")!;
  const data = Float32Array.from(t.data as Float32Array);
  data[0] = value;
  tensors.set(key, { ...t, data });
  saveSafetensors(file, Object.fromEntries(tensors), { format: "pt" });
  return dir;
}

function inputsFile(): string {
  const io = loadSafetensors(fx("bert", "base.outputs.safetensors")).tensors;
  const f = fresh("inputs.safetensors");
  saveSafetensors(f, { input_ids: io.get("input_ids")!, attention_mask: io.get("attention_mask")! });
  return f;
}

describe("file-system faults are coded errors naming the file", () => {
  test("an output below a file (ENOTDIR) and a missing output folder", async () => {
    const file = fresh("plain-file");
    writeFileSync(file, "x");
    const out = join(file, "combined");
    const r = await runCli(["combine", "--adapters", `${fx("bert", "multi_a")},${fx("bert", "multi_b")}`, "--weights", "1,1", "--type", "linear", "--base", fx("bert", "base"), "--out", out]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^error \[PEFT_ERR_FILESYSTEM\]: .*plain-file.*a part of the path is a file, not a folder \(ENOTDIR\)/);
    assert.equal(readFileSync(file, "utf8"), "x");
    const f = await runCli(["forward", "--model", fx("bert", "base"), "--inputs", inputsFile(), "--out", join(fresh("missing"), "logits.safetensors")]);
    assert.match(f.stderr, /^error \[PEFT_ERR_MISSING_FILE\]: .*missing: file not found; the folder of --out must exist/);
  });

  test("a raw Node error reaching the CLI boundary still prints a code and the path", async () => {
    const out = fresh("eval-report-folder");
    mkdirSync(join(out, "x.json"), { recursive: true });
    // an input read as a folder: EISDIR from the dataset reader
    const r = await runCli(["eval", "--adapter", fx("bert", "lora"), "--model", fx("bert", "base"), "--data", join(out, "x.json")]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^error \[PEFT_ERR_[A-Z_]+\]: .*x\.json/);
  });
});

describe("leftovers: temporary files of a killed writer are removed by the next write there", () => {
  test("a stale *.tmp-<dead pid>-<hex> goes; a live process's temp file and other files stay", async () => {
    const dir = fresh("atomic");
    mkdirSync(dir);
    // a real process that has exited: its pid no longer runs
    const child = spawn(process.execPath, ["-e", ""]);
    const dead = await new Promise<number>((res) => child.on("exit", () => res(child.pid!)));
    const stale = join(dir, `model.safetensors.tmp-${dead}-0123456789ab`);
    const live = join(dir, `other.json.tmp-${process.pid}-0123456789ab`);
    writeFileSync(stale, Buffer.alloc(1024));
    writeFileSync(live, "in flight");
    writeFileSync(join(dir, "notes.tmp-12-x"), "not a temp name");
    writeFileFileAtomicAndList(dir);
    assert.deepEqual(readdirSync(dir).sort(), ["model.safetensors", "notes.tmp-12-x", `other.json.tmp-${process.pid}-0123456789ab`].sort());
  });
});

function writeFileFileAtomicAndList(dir: string): void {
  writeFileAtomic(join(dir, "model.safetensors"), "new");
}

describe("non-finite numbers are errors, with an opt-out", () => {
  test("peft forward refuses a NaN adapter; --allow-non-finite runs it", async () => {
    const bad = poisonedAdapter(Number.NaN);
    const before = readFileSync(join(bad, "adapter_model.safetensors"));
    const out = fresh("logits.safetensors");
    const r = await runCli(["forward", "--model", fx("bert", "base"), "--adapter", bad, "--inputs", inputsFile(), "--out", out]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^error \[PEFT_ERR_NON_FINITE\]: tensor '.*lora_[AB].*': element 0 is NaN; the adapter .*poisoned.*--allow-non-finite/);
    assert.ok(!existsSync(out));
    assert.deepEqual(readFileSync(join(bad, "adapter_model.safetensors")), before);
    const ok = await runCli(["forward", "--model", fx("bert", "base"), "--adapter", bad, "--inputs", inputsFile(), "--out", out, "--allow-non-finite"]);
    assert.equal(ok.code, 0, ok.stderr);
  });

  test("combine --weights 1e308,1e308 --type svd overflows: refused before anything is written", async () => {
    const out = fresh("combined");
    const r = await runCli(["combine", "--adapters", `${fx("bert", "multi_a")},${fx("bert", "multi_b")}`, "--weights", "1e308,1e308", "--type", "svd", "--base", fx("bert", "base"), "--out", out, "--no-progress"]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^error \[PEFT_ERR_NON_FINITE\]: tensor '.*': element \d+ is (NaN|-?Infinity); the combined adapter/);
    assert.ok(!existsSync(out));
  });
});

describe("silent acceptance is gone", () => {
  test("--svd-rank above a layer's possible rank; ties density 2 in merge YAML; a YAML alias bomb", async () => {
    const out = fresh("combined");
    const r = await runCli(["combine", "--adapters", `${fx("bert", "multi_a")},${fx("bert", "multi_b")}`, "--weights", "1,1", "--type", "svd", "--svd-rank", "40", "--base", fx("bert", "base"), "--out", out]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^error \[PEFT_ERR_CONFIG\]: .*'svd_rank': 40 is above the rank of module '.*' \(a \[32, 32\] layer has rank at most 32\)/);
    assert.ok(!existsSync(out));
    const yml = fresh("ties.yml");
    writeFileSync(yml, `merge_method: ties\nbase_model: ${fx("bert", "base")}\nmodels:\n  - model: ${fx("bert", "multi_a")}\n    parameters: {weight: 1, density: 2}\n`);
    const m = await runCli(["merge", yml, "--out", fresh("merged")]);
    assert.equal(m.code, 1);
    assert.match(m.stderr, /^error \[PEFT_ERR_CONFIG\]: .*'models\[0\]\.parameters\.density': must be in \[0, 1\]/);
    const bomb = fresh("bomb.yml");
    const lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"];
    for (let i = 1; i < 9; i++) lines.push(`${"abcdefghi"[i]}: &${"abcdefghi"[i]} [${Array(10).fill(`*${"abcdefghi"[i - 1]}`).join(", ")}]`);
    writeFileSync(bomb, `${lines.join("\n")}\nmerge_method: linear\nmodels: [{model: x}]\n`);
    const b = await runCli(["merge", bomb, "--out", fresh("merged")]);
    assert.equal(b.code, 1);
    assert.match(b.stderr, /^error \[PEFT_ERR_CONFIG\]: .*bomb\.yml: YAML aliases expand too much/);
  });
});

describe("CLI conventions", () => {
  test("--help marks required options; a usage error points to the command's help", async () => {
    const h = await runCli(["combine", "--help"]);
    assert.match(h.stdout, /--adapters <dirs>\s+comma-separated PEFT LoRA adapter folders \(required\)/);
    assert.match(h.stdout, /-o, --out <dir>\s+output adapter folder .*\(required\)/s);
    assert.doesNotMatch(h.stdout, /--output/);
    const u = await runCli(["combine", "--adapters", "a"]);
    assert.equal(u.code, 1);
    assert.match(u.stderr, /required option .* not specified\n\(run 'peft combine --help' for usage\)/);
    const nested = await runCli(["compress", "compeft", "x", "--density", "7", "-o", "y"]);
    assert.match(nested.stderr, /\(run 'peft compress compeft --help' for usage\)/);
  });

  test("combine draws a progress bar when stderr is a terminal, prints nothing extra otherwise or with --no-progress", async () => {
    const args = ["combine", "--adapters", `${fx("bert", "multi_a")},${fx("bert", "multi_b")}`, "--weights", "1,1", "--type", "svd", "--base", fx("bert", "base")];
    const [out1, out2] = [fresh("c1"), fresh("c2")];
    const piped = await runCli([...args, "--out", out1]);
    assert.equal(piped.code, 0, piped.stderr);
    assert.equal(piped.stderr, "", "not a terminal: nothing on stderr");
    const onTerminal = async (extra: readonly string[]) => {
      const r = { stdout: "", stderr: "", code: 0 };
      await main(["node", "peft", ...args, ...extra], { stdout: (t) => void (r.stdout += t), stderr: (t) => void (r.stderr += t), setExitCode: (c) => void (r.code = c), stderrIsTTY: true });
      return r;
    };
    const tty = await onTerminal(["--out", out2]);
    assert.equal(tty.code, 0, tty.stderr);
    assert.match(tty.stderr, /combine \[[^\]]*\] 4\/4 modules \| ETA/, "the bar reaches all 4 modules (2 layers × query, value)");
    assert.equal(tty.stdout.replace(out2, "OUT"), piped.stdout.replace(out1, "OUT"), "the result line is the same");
    const quiet = await onTerminal(["--out", fresh("c3"), "--no-progress"]);
    assert.equal(quiet.code, 0, quiet.stderr);
    assert.equal(quiet.stderr, "");
  });
});

describe("ComPEFT files carry a checksum", () => {
  test("peft decompress of a file with one flipped bit: PEFT_ERR_COMPEFT_CHECKSUM, nothing written", async () => {
    const file = fresh("a.cpeft");
    assert.equal((await runCli(["compress", "compeft", fx("bert", "lora"), "--out", file])).code, 0);
    const bytes = readFileSync(file);
    bytes[bytes.length - 40]! ^= 0x10;
    writeFileSync(file, bytes);
    const out = fresh("restored");
    const r = await runCli(["decompress", file, "--out", out]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^error \[PEFT_ERR_COMPEFT_CHECKSUM\]: .*a\.cpeft: ComPEFT checksum mismatch/);
    assert.ok(!existsSync(out));
  });
});
