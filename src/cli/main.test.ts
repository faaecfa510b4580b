import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, test } from "node:test";
import { Command } from "commander";
import { ConfigError } from "../errors.js";
import { packageRoot } from "../util/paths.js";
import { createContext } from "./context.js";
import { COMMANDS, main, reportError, runCli } from "./main.js";

function capture() {
  const out = { stdout: "", stderr: "", code: 0 };
  const io = {
    stdout: (t: string) => void (out.stdout += t),
    stderr: (t: string) => void (out.stderr += t),
    setExitCode: (c: number) => void (out.code = c),
  };
  return { out, io };
}

describe("peft main", () => {
  test("--version prints package.json's version", async () => {
    const pj = JSON.parse(readFileSync(join(packageRoot(), "package.json"), "utf8")) as { version: string };
    const r = await runCli(["--version"]);
    assert.equal(r.code, 0);
    assert.equal(r.stdout.trim(), pj.version);
  });

  test("--help lists every registered command", async () => {
    const r = await runCli(["--help"]);
    assert.equal(r.code, 0);
    const program = new Command();
    const { io } = capture();
    for (const c of COMMANDS) c.register(program, createContext(io));
    assert.ok(program.commands.length >= 1);
    for (const c of program.commands) assert.match(r.stdout, new RegExp(`^\\s+${c.name()}\\b`, "m"));
  });

  test("unknown command and missing argument exit 1 with commander's message", async () => {
    const r = await runCli(["no-such-command"]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /unknown command 'no-such-command'/);
    const m = await runCli(["inspect"]);
    assert.equal(m.code, 1);
    assert.match(m.stderr, /missing required argument 'path'/);
  });

  test("a PeftError prints 'error [CODE]: message' and sets exit status 1", async () => {
    const { out, io } = capture();
    await main(["node", "peft", "inspect", "/definitely/not/here"], io);
    assert.equal(out.code, 1);
    assert.match(out.stderr, /^error \[PEFT_ERR_MISSING_FILE\]: \/definitely\/not\/here: file not found/);
    assert.doesNotMatch(out.stderr, /\n\s+at /, "no stack without PEFT_DEBUG");
  });

  test("reportError: plain errors print the message; the stack and cause only with PEFT_DEBUG=1", () => {
    const plain = capture();
    assert.equal(reportError(new Error("boom"), createContext(plain.io, {})), 1);
    assert.equal(plain.out.stderr, "error: boom\n");
    const dbg = capture();
    const err = new ConfigError("x.json", "a", "bad", { cause: new Error("inner") });
    assert.equal(reportError(err, createContext(dbg.io, { PEFT_DEBUG: "1" })), 1);
    assert.match(dbg.out.stderr, /^error \[PEFT_ERR_CONFIG\]: x\.json: 'a': bad\n/);
    assert.match(dbg.out.stderr, /\n\s+at /);
    assert.match(dbg.out.stderr, /caused by: Error: inner/);
  });
});
