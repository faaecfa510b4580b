/**
 * `peft --help` and `peft <command> --help` load no runtime: command files import only what their
 * options need and load onnxruntime, models, tuners, the server and the queue inside their
 * actions. Checked by what a child process actually loaded (ES module resolutions through a
 * `module.register` hook, plus CommonJS's `require.cache`), not by timing.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { after, describe, test } from "node:test";
import { packageRoot } from "../util/paths.js";

const dir = mkdtempSync(join(tmpdir(), "peft-lazy-"));
after(() => rmSync(dir, { recursive: true, force: true }));

// every module URL the ES loader resolves, appended to $PEFT_LOAD_LOG (the hook runs on the loader thread)
writeFileSync(
  join(dir, "hooks.mjs"),
  `import { appendFileSync } from "node:fs";
export async function resolve(specifier, context, next) {
  const r = await next(specifier, context);
  appendFileSync(process.env.PEFT_LOAD_LOG, r.url + "\\n");
  return r;
}
`,
);
// preloaded with --import: installs the hook, and at exit adds the CommonJS modules (onnxruntime-node is one)
writeFileSync(
  join(dir, "probe.mjs"),
  `import { appendFileSync } from "node:fs";
import { createRequire, register } from "node:module";
register(new URL("./hooks.mjs", import.meta.url));
process.on("exit", () => appendFileSync(process.env.PEFT_LOAD_LOG, Object.keys(createRequire(import.meta.url).cache).join("\\n") + "\\n"));
`,
);

let runs = 0;
/** The modules a `node --import probe <args>` child loaded (URLs and paths) and its stdout, after it exited with status 0. */
function loadedBy(args: readonly string[]): { loaded: string[]; stdout: string } {
  const log = join(dir, `loaded-${runs++}.txt`);
  writeFileSync(log, "");
  const r = spawnSync(process.execPath, ["--import", pathToFileURL(join(dir, "probe.mjs")).href, ...args], {
    cwd: packageRoot(),
    env: { ...process.env, PEFT_LOAD_LOG: log },
    encoding: "utf8",
    timeout: 120_000,
  });
  assert.equal(r.status, 0, `node ${args.join(" ")} failed: ${r.stderr}`);
  return { loaded: readFileSync(log, "utf8").split("\n").filter((l) => l !== ""), stdout: r.stdout };
}

/** Packages of the runtime: none of them is needed to print help. */
const RUNTIME_PACKAGES = ["onnxruntime-node", "onnxruntime-common", "fastify", "bullmq", "ioredis", "vega", "vega-lite", "@resvg/resvg-js", "@huggingface/tokenizers", "@huggingface/jinja", "@energetic-ai"];

function packagesIn(loaded: readonly string[], packages: readonly string[]): string[] {
  return packages.filter((p) => loaded.some((l) => l.includes(`/node_modules/${p}/`)));
}

const cli = join(packageRoot(), "bin", "peft.js");

describe("lazy loading of the CLI", () => {
  test("the probe sees onnxruntime-node when something loads it (so the checks below can fail)", () => {
    const ort = pathToFileURL(join(packageRoot(), "dist", "src", "platform", "ort.js")).href;
    const { loaded } = loadedBy(["--input-type=module", "-e", `await import(${JSON.stringify(ort)});`]);
    assert.deepEqual(packagesIn(loaded, ["onnxruntime-node", "onnxruntime-common"]), ["onnxruntime-node", "onnxruntime-common"]);
  });

  test("peft --help loads commander and the command files only: no runtime, no tuners, models or zod", () => {
    const { loaded, stdout } = loadedBy([cli, "--help"]);
    assert.match(stdout, /^Usage: peft /m);
    assert.deepEqual(packagesIn(loaded, ["commander"]), ["commander"]);
    assert.ok(loaded.some((l) => l.endsWith("/dist/src/cli/commands/train.js")), "the command files are loaded");
    assert.deepEqual(packagesIn(loaded, [...RUNTIME_PACKAGES, "zod"]), []);
    const src = loaded.filter((l) => /\/dist\/src\/(graph|runtime|models|tuners|peft|train|compose\/(?!combination-types)|generate|serve\/(?!defaults)|queue\/(?!connection)|search\/(?!intrinsic\/defaults))/.test(l));
    assert.deepEqual(src, []);
  });

  test("peft <command> --help (every command and sub-command) loads no runtime package", () => {
    const main = pathToFileURL(join(packageRoot(), "dist", "src", "cli", "main.js")).href;
    const context = pathToFileURL(join(packageRoot(), "dist", "src", "cli", "context.js")).href;
    // in one child: list the commands, then run `peft <path…> --help` for each through runCli
    const script = `
      const { buildProgram, runCli } = await import(${JSON.stringify(main)});
      const { createContext } = await import(${JSON.stringify(context)});
      const quiet = { stdout() {}, stderr() {}, setExitCode() {} };
      const paths = [];
      const walk = (cmd, path) => { for (const c of cmd.commands) { paths.push([...path, c.name()]); walk(c, [...path, c.name()]); } };
      walk(buildProgram(createContext(quiet)), []);
      for (const p of paths) {
        const r = await runCli([...p, "--help"]);
        if (r.code !== 0 || !r.stdout.includes("Usage: peft " + p.join(" "))) throw new Error("peft " + p.join(" ") + " --help: " + r.code + " " + r.stderr);
      }
      process.stdout.write(JSON.stringify(paths));
    `;
    const { loaded, stdout } = loadedBy(["--input-type=module", "-e", script]);
    const paths = (JSON.parse(stdout) as string[][]).map((p) => p.join(" "));
    for (const p of ["inspect", "train", "combine", "merge", "serve", "generate", "forward", "compress compeft", "jobs list"]) assert.ok(paths.includes(p), `peft ${p} --help was run`);
    assert.ok(loaded.some((l) => l.endsWith("/dist/src/tuners/registry.js")), "peft train --help listed the registry's methods");
    assert.deepEqual(packagesIn(loaded, RUNTIME_PACKAGES), []);
  });
});
