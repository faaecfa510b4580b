/**
 * The error catalogue stays consistent (as fastify's error-code test): every exported PeftError
 * subclass has its own `PEFT_ERR_*` code, and every code is documented in docs/errors.md with
 * the right class.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, test } from "node:test";
import * as errors from "./errors.js";
import { packageRoot } from "./util/paths.js";

type ErrorClass = abstract new (...args: never[]) => errors.PeftError;

/** Every exported class that extends PeftError (directly or not). */
const CLASSES: [string, ErrorClass][] = Object.entries(errors as Record<string, unknown>).filter(
  (e): e is [string, ErrorClass] => typeof e[1] === "function" && e[1].prototype instanceof errors.PeftError,
);

/**
 * Class name → code, read from src/errors.ts: `code` is an instance field and the constructors
 * take different arguments, so the source is the one place that lists them all.
 */
function codesInSource(): Map<string, string | null> {
  const src = readFileSync(join(packageRoot(), "src", "errors.ts"), "utf8");
  const out = new Map<string, string | null>();
  const starts = [...src.matchAll(/export\s+(?:abstract\s+)?class\s+(\w+)\s+extends\s+\w+/gu)];
  starts.forEach((m, i) => {
    const body = src.slice(m.index, starts[i + 1]?.index ?? src.length);
    out.set(m[1]!, /readonly\s+code\s*=\s*"([^"]*)"/u.exec(body)?.[1] ?? null);
  });
  return out;
}

interface DocRow {
  readonly code: string;
  readonly className: string;
  readonly when: string;
  readonly fix: string;
}

/** The rows of the table in docs/errors.md whose first cell is a code. */
function documented(): DocRow[] {
  const md = readFileSync(join(packageRoot(), "docs", "errors.md"), "utf8");
  const rows: DocRow[] = [];
  for (const line of md.split("\n")) {
    const cells = line.trim().replace(/^\||\|$/gu, "").split("|").map((c) => c.trim());
    const code = /^`(PEFT_ERR_[A-Z0-9_]+)`$/u.exec(cells[0] ?? "")?.[1];
    if (!code) continue;
    rows.push({ code, className: (cells[1] ?? "").replace(/`/gu, ""), when: cells[2] ?? "", fix: cells[3] ?? "" });
  }
  return rows;
}

/** Tries to build an instance with placeholder arguments (arrays print as text and have `join`). */
function tryInstance(cls: ErrorClass): errors.PeftError | null {
  const Ctor = cls as unknown as new (...args: unknown[]) => errors.PeftError;
  try {
    return new Ctor(...Array.from({ length: 6 }, () => ["x"]));
  } catch {
    return null;
  }
}

describe("error catalogue", () => {
  const source = codesInSource();

  test("the exports are found (the scan is not silently empty)", () => {
    assert.ok(CLASSES.length >= 30, `only ${CLASSES.length} PeftError subclasses exported`);
    for (const [name] of CLASSES) assert.ok(source.has(name), `${name} is exported but not declared in src/errors.ts`);
  });

  test("every PeftError subclass has a unique PEFT_ERR_* code", () => {
    const seen = new Map<string, string>();
    for (const [name] of CLASSES) {
      const code = source.get(name);
      assert.ok(code, `${name} has no 'readonly code = "PEFT_ERR_…"' field`);
      assert.match(code, /^PEFT_ERR_[A-Z0-9]+(?:_[A-Z0-9]+)*$/u, `${name}: code ${code}`);
      assert.ok(!seen.has(code), `${code} is used by both ${seen.get(code)} and ${name}`);
      seen.set(code, name);
    }
  });

  test("instances carry the declared code, their class name and a message", () => {
    let built = 0;
    for (const [name, cls] of CLASSES) {
      const e = tryInstance(cls);
      if (!e) continue;
      built++;
      assert.equal(e.code, source.get(name), `${name}.code`);
      assert.equal(e.name, name);
      assert.ok(e instanceof Error && e.message.length > 0);
    }
    assert.ok(built >= CLASSES.length - 3, `only ${built} of ${CLASSES.length} classes could be built with placeholder arguments`);
  });

  test("every code is documented in docs/errors.md, with its class, when it happens and how to fix it", () => {
    const rows = documented();
    const byCode = new Map(rows.map((r) => [r.code, r]));
    const missing = CLASSES.map(([name]) => [name, source.get(name)!] as const).filter(([, code]) => !byCode.has(code));
    assert.deepEqual(missing, [], `codes missing from docs/errors.md: ${missing.map(([n, c]) => `${c} (${n})`).join(", ")}`);
    for (const [name] of CLASSES) {
      const row = byCode.get(source.get(name)!)!;
      assert.equal(row.className, name, `docs/errors.md lists ${row.code} under ${row.className}`);
      assert.ok(row.when.length > 10 && row.fix.length > 10, `${row.code}: describe when it happens and how to fix it`);
    }
  });

  test("docs/errors.md lists no code twice and none that does not exist", () => {
    const rows = documented();
    const codes = rows.map((r) => r.code);
    assert.equal(new Set(codes).size, codes.length, "a code is listed twice");
    const known = new Set(CLASSES.map(([name]) => source.get(name)));
    assert.deepEqual(codes.filter((c) => !known.has(c)), [], "documented codes without a class");
  });
});
