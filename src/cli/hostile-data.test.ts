/**
 * Hostile datasets and resumes as a user meets them (issue 19, defects 2, 5 and 6): `peft train`
 * runs as a child process on each file; the test checks the exit code, the error code and line,
 * the child's peak RSS (reported by the child itself at exit, `process.resourceUsage().maxRSS`)
 * against a fixed bound, that the dataset is byte-identical and that no run folder was left.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { loadTokenizer } from "../io/tokenizer.js";
import { encodeTruncated } from "../runs/model-source.js";
import { makeTinyModelDir, writeTinyDataset } from "../runs/testing.js";
import { packageRoot } from "../util/paths.js";
import { runCli } from "./main.js";

const root = mkdtempSync(join(tmpdir(), "peft-hostile-"));
after(() => rmSync(root, { recursive: true, force: true }));
const bert = makeTinyModelDir("bert", join(root, "bert"));

/** Peak resident memory a run may reach (a run on the tiny model stays near 200 MB; the old failures went to gigabytes). */
const RSS_LIMIT_MB = 450;

/** Prints the process's peak RSS (kB) on stderr when it exits. */
const REPORT_RSS = `data:text/javascript,${encodeURIComponent('import { writeSync } from "node:fs"; process.on("exit", () => writeSync(2, `\\npeak-rss-kb=${process.resourceUsage().maxRSS}\\n`));')}`;

interface ChildRun {
  readonly code: number | null;
  readonly stderr: string;
  readonly peakRssMb: number;
}

/** `peft <args>` in a child process (heap capped at 1 GB so a regression fails fast), killed after 90 s. */
function peft(args: readonly string[]): Promise<ChildRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ["--max-old-space-size=1024", "--import", REPORT_RSS, join(packageRoot(), "bin", "peft.js"), ...args], { stdio: ["ignore", "ignore", "pipe"] });
    let stderr = "";
    child.stderr.on("data", (d: Buffer) => void (stderr += d.toString()));
    const timer = setTimeout(() => child.kill("SIGKILL"), 90_000);
    child.on("error", reject);
    child.on("close", (code) => {
      clearTimeout(timer);
      const kb = /peak-rss-kb=(\d+)/.exec(stderr);
      assert.ok(kb, `the child reported no peak RSS (killed?): ${stderr.slice(-500)}`);
      resolve({ code, stderr, peakRssMb: Number(kb[1]) / 1024 });
    });
  });
}

const TRAIN = (data: string, out: string, extra: string[] = []) => ["train", "--model", bert, "--data", data, "--out", out, "--epochs", "1", "--threads", "1", "--no-progress", "--no-plot", ...extra];

function jsonl(name: string, rows: readonly unknown[]): string {
  const file = join(root, name);
  writeFileSync(file, `${rows.map((r) => JSON.stringify(r)).join("\n")}\n`);
  return file;
}

const rows = (n: number, row: (i: number) => unknown) => Array.from({ length: n }, (_, i) => row(i));

/** Runs a hostile file and checks: failed or finished within the RSS bound, the file unchanged. */
async function hostile(file: string, out: string, extra: string[] = []): Promise<ChildRun> {
  const before = readFileSync(file);
  const r = await peft(TRAIN(file, out, extra));
  assert.ok(r.peakRssMb < RSS_LIMIT_MB, `peak RSS ${r.peakRssMb.toFixed(0)} MB ≥ ${RSS_LIMIT_MB} MB`);
  assert.deepEqual(readFileSync(file), before, "the dataset changed");
  return r;
}

describe("hostile datasets: a coded error naming the line, within a fixed RSS, nothing written", () => {
  test('"label": 1000000 on one line is refused before a head is allocated or a run folder written', async () => {
    const file = jsonl("huge-label.jsonl", rows(20, (i) => ({ text: "good food", label: i === 3 ? 1_000_000 : i % 2 })));
    const out = join(root, "run-huge-label");
    const r = await hostile(file, out);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /error \[PEFT_ERR_DATASET\]: .*huge-label\.jsonl:4: label 1000000 would make 1000001 classes, more than the 10000/);
    assert.ok(!existsSync(out), "a run folder was written");
  });

  test("a 10 MB line is refused as soon as the line limit is passed", async () => {
    const file = jsonl("huge-line.jsonl", rows(20, (i) => ({ text: i === 5 ? "good ".repeat(2_000_000) : "bad food", label: i % 2 })));
    const out = join(root, "run-huge-line");
    const r = await hostile(file, out, ["--max-length", "16"]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /error \[PEFT_ERR_DATASET\]: .*huge-line\.jsonl:6: the line is longer than 1048576 bytes/);
    assert.ok(!existsSync(out));
  });

  test("a long line under the limit (750 kB) and a CSV of 20,000 columns train, truncated as tokenised", async () => {
    const file = jsonl("long-line.jsonl", rows(20, (i) => ({ text: i === 5 ? "good ".repeat(150_000) : i % 2 ? "bad food" : "good food", label: i % 2 })));
    const out = join(root, "run-long-line");
    const r = await hostile(file, out, ["--max-steps", "1"]);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(existsSync(join(out, "adapter_model.safetensors")));
    const extra = Array.from({ length: 20_000 }, (_, i) => `c${i}`);
    const csv = join(root, "many-columns.csv");
    writeFileSync(csv, [["text", ...extra, "label"].join(","), ...rows(20, (i) => [i % 2 ? "bad food" : "good food", ...extra.map(() => "x"), i % 2].join(","))].join("\n"));
    const c = await hostile(csv, join(root, "run-many-columns"), ["--max-steps", "1"]);
    assert.equal(c.code, 0, c.stderr);
  });
});

test("tokenising a long text with truncation reads only a prefix and gives the ids of the whole text truncated", () => {
  const tok = loadTokenizer(bert);
  const text = Array.from({ length: 40_000 }, (_, i) => ["good", "bad", "the", "food", "xyzzy"][i % 5]).join(" ");
  let longest = 0;
  const enc = (t: string, max: number | null) => {
    longest = Math.max(longest, t.length);
    return max === null ? tok.encode(t).ids : tok.encode(t, { truncation: true, maxLength: max }).ids;
  };
  for (const max of [8, 64]) {
    longest = 0;
    assert.deepEqual(encodeTruncated(text, max, enc), tok.encode(text, { truncation: true, maxLength: max }).ids);
    assert.ok(longest < text.length / 10, `tokenised ${longest} of ${text.length} characters`);
  }
  const short = "good food";
  assert.deepEqual(encodeTruncated(short, 8, enc), tok.encode(short, { truncation: true, maxLength: 8 }).ids);
});

describe("silent acceptance of datasets is gone (in-process)", () => {
  test("sparse integer labels, a single class, non-UTF-8 bytes: coded errors, no run folder", async () => {
    const sparse = jsonl("sparse.jsonl", rows(12, (i) => ({ text: "good food", label: i === 7 ? 40 : i % 2 })));
    const a = await runCli(TRAIN(sparse, join(root, "run-sparse")));
    assert.equal(a.code, 1);
    assert.match(a.stderr, /error \[PEFT_ERR_DATASET\]: .*sparse\.jsonl:8: label 40: integer labels are class ids 0…40 and must be dense, but 38 of them \(e\.g\. 2\) have no example/);
    const single = jsonl("single.jsonl", rows(12, () => ({ text: "good food", label: "pos" })));
    const b = await runCli(TRAIN(single, join(root, "run-single")));
    assert.equal(b.code, 1);
    assert.match(b.stderr, /error \[PEFT_ERR_DATASET\]: .*single\.jsonl: every example has the label 'pos': a classifier needs at least two classes/);
    const latin1 = join(root, "latin1.jsonl");
    writeFileSync(latin1, Buffer.concat([Buffer.from('{"text":"good","label":0}\n{"text":"caf'), Buffer.from([0xe9]), Buffer.from('","label":1}\n')]));
    const c = await runCli(TRAIN(latin1, join(root, "run-latin1")));
    assert.equal(c.code, 1);
    assert.match(c.stderr, /error \[PEFT_ERR_DATASET\]: .*latin1\.jsonl:2: the line is not valid UTF-8 text/);
    for (const d of ["run-sparse", "run-single", "run-latin1"]) assert.ok(!existsSync(join(root, d)), d);
  });
});

describe("--resume never restarts silently", () => {
  test("a finished run without its checkpoint: PEFT_ERR_CHECKPOINT, the adapter untouched", async () => {
    const data = writeTinyDataset(join(root, "tiny.jsonl"), 24, 1, 2);
    const out = join(root, "run-resume");
    assert.equal((await runCli(TRAIN(data, out))).code, 0);
    rmSync(join(out, "checkpoint"), { recursive: true });
    const files = readdirSync(out).sort();
    const adapter = readFileSync(join(out, "adapter_model.safetensors"));
    const r = await runCli(TRAIN(data, out, ["--resume"]));
    assert.equal(r.code, 1);
    assert.match(r.stderr, /error \[PEFT_ERR_CHECKPOINT\]: .*checkpoint: invalid training checkpoint: the run in .* has finished \(metrics\.json, adapter_model\.safetensors\) and there is no checkpoint to resume from/);
    assert.deepEqual(readdirSync(out).sort(), files);
    assert.deepEqual(readFileSync(join(out, "adapter_model.safetensors")), adapter);
  });
});
