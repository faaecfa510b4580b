/** `peft serve` as a user starts it: a child process on a free port, answering, then SIGTERM → a clean exit. */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { join } from "node:path";
import { test } from "node:test";
import { fixturePath, packageRoot } from "../../util/paths.js";
import { runCli } from "../main.js";

test("peft serve --model DIR --port 0 answers, and SIGTERM stops it cleanly", async () => {
  const child = spawn(process.execPath, [join(packageRoot(), "bin", "peft.js"), "serve", "--model", fixturePath("peft-parity", "gpt2", "base"), "--adapter", `lora=${fixturePath("peft-parity", "gpt2", "lora")}`, "--port", "0", "--quiet"], { stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  let err = "";
  child.stderr.on("data", (d: Buffer) => (err += d.toString()));
  const exited = new Promise<number | null>((r) => child.on("exit", (code) => r(code)));
  try {
    const url = await new Promise<string>((resolve, reject) => {
      child.stdout.on("data", (d: Buffer) => {
        out += d.toString();
        const m = /on (http:\/\/127\.0\.0\.1:\d+)/.exec(out);
        if (m) resolve(m[1]!);
      });
      child.on("exit", () => reject(new Error(`peft serve exited early:\n${out}\n${err}`)));
    });
    assert.match(out, /base \(causal-lm, token-id prompts only\) with 1 adapter/);
    assert.equal(((await (await fetch(`${url}/health`)).json()) as { status: string }).status, "ok");
    const models = (await (await fetch(`${url}/v1/models`)).json()) as { data: { id: string }[] };
    assert.deepEqual(models.data.map((m) => m.id), ["base", "lora"]);
  } finally {
    child.kill("SIGTERM");
  }
  assert.equal(await exited, 0, err);
  assert.match(out, /SIGTERM: finishing running requests/);
  assert.match(out, /stopped/);
});

test("peft serve refuses a bad --adapter and a --pin without its adapter", async () => {
  const bad = await runCli(["serve", "--adapter", "noequals"]);
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /expected name=DIR/);
  const pin = await runCli(["serve", "--model", fixturePath("peft-parity", "gpt2", "base"), "--pin", "ghost"]);
  assert.equal(pin.code, 1);
  assert.match(pin.stderr, /--pin ghost: no --adapter/);
});
