import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { packageRoot } from "./paths.js";
import { PEFT_TS_VERSION } from "./version.js";

test("PEFT_TS_VERSION is package.json's version (bump both together)", () => {
  const pj = JSON.parse(readFileSync(join(packageRoot(), "package.json"), "utf8")) as { version: string };
  assert.equal(PEFT_TS_VERSION, pj.version);
});
