/**
 * The docs cite paths relative to the repository (the shared fixtures and notes are
 * `../shared/…`), never absolute paths of the machine they were written on (issue 19).
 */
import assert from "node:assert/strict";
import { readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { packageRoot } from "./util/paths.js";

test("README.md and docs/*.md hold no absolute paths of a particular machine", () => {
  const root = packageRoot();
  const files = ["README.md", ...readdirSync(join(root, "docs")).filter((f) => f.endsWith(".md")).map((f) => join("docs", f))];
  const found: string[] = [];
  for (const f of files) {
    readFileSync(join(root, f), "utf8")
      .split("\n")
      .forEach((line, i) => {
        if (/(^|[\s`'"(=])\/(work|home|root|Users)\//.test(line)) found.push(`${f}:${i + 1}: ${line.trim()}`);
      });
  }
  assert.ok(files.length > 10);
  assert.deepEqual(found, []);
});
