import { after, describe, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DatasetError } from "../errors.js";
import { parseCsv } from "./csv.js";
import { loadCsvDataset, loadJsonlDataset, parseCsvDataset, parseJsonlDataset } from "./files.js";

const dir = mkdtempSync(join(tmpdir(), "peft-data-"));
after(() => rmSync(dir, { recursive: true, force: true }));

function write(name: string, content: string): string {
  const p = join(dir, name);
  writeFileSync(p, content);
  return p;
}

function expectDatasetError(fn: () => unknown, line: number | null, issue: RegExp): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof DatasetError, `expected DatasetError, got ${String(e)}`);
    assert.equal(e.line, line);
    assert.match(e.issue, issue);
    assert.equal(e.code, "PEFT_ERR_DATASET");
    return true;
  });
}

describe("JSONL datasets", () => {
  test("integer labels are ids; blank lines and CRLF are fine", () => {
    const p = write("ints.jsonl", '{"text": "good", "label": 1}\r\n\n{"text":"bad","label":0,"extra":true}\n{"text":"meh","label":2}\n');
    const ds = loadJsonlDataset(p);
    assert.equal(ds.name, p);
    assert.equal(ds.numLabels, 3);
    assert.deepEqual(ds.labelNames, ["0", "1", "2"]);
    assert.deepEqual(ds.examples, [
      { text: "good", label: 1 },
      { text: "bad", label: 0 },
      { text: "meh", label: 2 },
    ]);
  });

  test("string labels get ids in sorted order, independent of row order", () => {
    const a = parseJsonlDataset("a.jsonl", '{"text":"x","label":"pos"}\n{"text":"y","label":"neg"}\n{"text":"z","label":"neutral"}');
    const b = parseJsonlDataset("b.jsonl", '{"text":"z","label":"neutral"}\n{"text":"x","label":"pos"}\n{"text":"y","label":"neg"}');
    assert.deepEqual(a.labelNames, ["neg", "neutral", "pos"]);
    assert.deepEqual(b.labelNames, a.labelNames);
    assert.deepEqual(a.examples.map((e) => e.label), [2, 0, 1]);
  });

  test("labelNames fixes the vocabulary", () => {
    const ds = parseJsonlDataset("f.jsonl", '{"text":"x","label":"pos"}\n{"text":"y","label":0}', { labelNames: ["neg", "pos"] });
    assert.deepEqual(ds.examples.map((e) => e.label), [1, 0]);
    assert.equal(ds.numLabels, 2);
    expectDatasetError(() => parseJsonlDataset("f.jsonl", '{"text":"x","label":"meh"}', { labelNames: ["neg", "pos"] }), 1, /not one of/);
    expectDatasetError(() => parseJsonlDataset("f.jsonl", '{"text":"x","label":2}', { labelNames: ["neg", "pos"] }), 1, /out of range/);
  });

  test("bad rows raise DatasetError with the 1-based line", () => {
    const ok = '{"text":"fine","label":0}\n';
    const cases: [string, number, RegExp][] = [
      [ok + "\n" + '{"text": "x", "label": 1', 3, /invalid JSON/],
      [ok + '{"label": 1}', 2, /missing 'text'/],
      [ok + '{"text": 5, "label": 1}', 2, /'text' must be a string, got a number/],
      [ok + '{"text": "", "label": 1}', 2, /'text' is empty/],
      [ok + '{"text": "x"}', 2, /missing 'label'/],
      [ok + '{"text": "x", "label": null}', 2, /missing 'label'/],
      [ok + '{"text": "x", "label": true}', 2, /integer or a string/],
      [ok + '{"text": "x", "label": 1.5}', 2, /non-negative integer/],
      [ok + '{"text": "x", "label": -1}', 2, /non-negative integer/],
      [ok + '["x", 1]', 2, /JSON object/],
      [ok + ok + '{"text": "x", "label": "pos"}', 3, /is a string but line 1 has a number/],
    ];
    for (const [content, line, issue] of cases) {
      const p = write("bad.jsonl", content);
      expectDatasetError(() => loadJsonlDataset(p), line, issue);
    }
  });

  test("a missing or empty file is a file-level DatasetError", () => {
    expectDatasetError(() => loadJsonlDataset(join(dir, "nope.jsonl")), null, /file not found/);
    expectDatasetError(() => loadJsonlDataset(write("empty.jsonl", "\n\n")), null, /no examples/);
  });
});

describe("CSV datasets", () => {
  test("RFC 4180 quoting: embedded commas, doubled quotes, newlines, CRLF", () => {
    const recs = parseCsv("t.csv", 'a,b\r\n"x, y","say ""hi"""\r\n"line1\nline2",z\n\nlast,""');
    assert.deepEqual(recs, [
      { line: 1, fields: ["a", "b"] },
      { line: 2, fields: ["x, y", 'say "hi"'] },
      { line: 3, fields: ["line1\nline2", "z"] },
      { line: 6, fields: ["last", ""] },
    ]);
  });

  test("reads text and label columns in any order with extra columns; digit labels are ids", () => {
    const p = write("ok.csv", '\ufeffid,label,text\n1,1,"Great, really ""great"""\n2,0,"Bad.\nVery bad."\n3,1,fine\n');
    const ds = loadCsvDataset(p);
    assert.deepEqual(ds.labelNames, ["0", "1"]);
    assert.deepEqual(ds.examples, [
      { text: 'Great, really "great"', label: 1 },
      { text: "Bad.\nVery bad.", label: 0 },
      { text: "fine", label: 1 },
    ]);
  });

  test("string labels are sorted", () => {
    const ds = parseCsvDataset("s.csv", "text,label\na,spam\nb,ham\nc,spam\n");
    assert.deepEqual(ds.labelNames, ["ham", "spam"]);
    assert.deepEqual(ds.examples.map((e) => e.label), [1, 0, 1]);
  });

  test("bad rows raise DatasetError with the 1-based line", () => {
    const cases: [string, number | null, RegExp][] = [
      ["text,label\na,1\nb,1,extra\n", 3, /expected 2 columns.*got 3/],
      ['text,label\n"multi\nline",1\nb\n', 4, /expected 2 columns.*got 1/],
      ["text,label\n,1\n", 2, /'text' is empty/],
      ["text,label\na,\n", 2, /missing 'label'/],
      ['text,label\na,1\n"open,1\nmore\n', 3, /unterminated quoted field/],
      ['text,label\nsa"y,1\n', 2, /double quote inside an unquoted field/],
      ['text,label\n"a"b,1\n', 2, /after a closing quote/],
      ["txt,label\na,1\n", 1, /must name a 'text' and a 'label'/],
      ["text,label,text\na,1,b\n", 1, /appears twice/],
      ["", null, /empty/],
      ["text,label\n", null, /no examples/],
    ];
    for (const [content, line, issue] of cases) {
      const p = write("bad.csv", content);
      expectDatasetError(() => loadCsvDataset(p), line, issue);
    }
  });
});

describe("bounded reading and label limits", () => {
  test("a line over maxLineBytes, bytes that are not UTF-8: DatasetError naming the line; CRLF and a BOM still read", () => {
    const long = write("long.jsonl", `{"text":"a","label":0}\n{"text":"${"x".repeat(200)}","label":1}\n`);
    expectDatasetError(() => loadJsonlDataset(long, { maxLineBytes: 100 }), 2, /longer than 100 bytes/);
    expectDatasetError(() => loadCsvDataset(write("long.csv", `text,label\n${"y".repeat(200)},1\n`), { maxLineBytes: 100 }), 2, /longer than 100 bytes/);
    const bad = join(dir, "latin1.csv");
    writeFileSync(bad, Buffer.concat([Buffer.from("text,label\na,0\ncaf"), Buffer.from([0xe9]), Buffer.from(",1\n")]));
    expectDatasetError(() => loadCsvDataset(bad), 3, /not valid UTF-8/);
    const ok = write("bom.jsonl", '\ufeff{"text":"a","label":0}\r\n{"text":"b","label":1}');
    assert.deepEqual(loadJsonlDataset(ok).examples, [{ text: "a", label: 0 }, { text: "b", label: 1 }]);
  });

  test("integer labels must be dense and few; string labels at most MAX_LABELS", () => {
    expectDatasetError(() => parseJsonlDataset("d.jsonl", '{"text":"a","label":0}\n{"text":"b","label":2}\n'), 2, /must be dense, but 1 of them \(e\.g\. 1\) have no example/);
    expectDatasetError(() => parseCsvDataset("d.csv", "text,label\na,0\nb,1\nc,99999\n"), 4, /would make 100000 classes, more than the 10000/);
    const many = Array.from({ length: 10_001 }, (_, i) => `t${i},c${i}`).join("\n");
    expectDatasetError(() => parseCsvDataset("m.csv", `text,label\n${many}\n`), 10_002, /"c10000" is the 10001th distinct label/);
  });
});
