import { after, describe, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ConfigError, DatasetError, UnknownDatasetError } from "../errors.js";
import { uciSourcePath } from "./builtin.js";
import { listDatasets, loadDataset } from "./registry.js";

const dir = mkdtempSync(join(tmpdir(), "peft-registry-"));
after(() => rmSync(dir, { recursive: true, force: true }));

describe("built-in UCI sentiment datasets", () => {
  test("each source has 1,000 sentences, 500 per class, placeholder row dropped", () => {
    for (const source of ["amazon", "imdb", "yelp"] as const) {
      const ds = loadDataset(`uci-${source}`);
      assert.equal(ds.name, `uci-${source}`);
      assert.equal(ds.numLabels, 2);
      assert.deepEqual(ds.labelNames, ["negative", "positive"]);
      assert.equal(ds.examples.length, 1000);
      assert.equal(ds.examples.filter((e) => e.label === 1).length, 500);
      assert.ok(ds.examples.every((e) => e.text.length > 0 && e.source === source));
      // Same order and content as the raw file, minus the trailing class-null rows.
      const raw = JSON.parse(readFileSync(uciSourcePath(source), "utf8")) as { text: string; class: number | null }[];
      const kept = raw.filter((r) => r.class !== null);
      assert.equal(kept.length, 1000);
      assert.deepEqual(
        ds.examples.map((e) => [e.text, e.label]),
        kept.map((r) => [r.text, r.class]),
      );
    }
  });

  test("uci-sentiment concatenates amazon, imdb, yelp with a source field", () => {
    const ds = loadDataset("uci-sentiment");
    assert.equal(ds.examples.length, 3000);
    assert.equal(ds.examples[0]!.source, "amazon");
    assert.equal(ds.examples[1000]!.source, "imdb");
    assert.equal(ds.examples[2999]!.source, "yelp");
    assert.equal(ds.examples[0]!.text, loadDataset("uci-amazon").examples[0]!.text);
    assert.deepEqual(listDatasets(), ["uci-amazon", "uci-imdb", "uci-yelp", "uci-sentiment"]);
  });

  test("labelNames for a built-in must match its labels", () => {
    assert.equal(loadDataset("uci-yelp", { labelNames: ["negative", "positive"] }).numLabels, 2);
    assert.throws(() => loadDataset("uci-yelp", { labelNames: ["pos", "neg"] }), ConfigError);
  });
});

describe("loadDataset dispatch", () => {
  test("dispatches on .jsonl/.ndjson/.csv extensions", () => {
    const j = join(dir, "d.JSONL");
    writeFileSync(j, '{"text":"a","label":"x"}\n');
    const n = join(dir, "d.ndjson");
    writeFileSync(n, '{"text":"a","label":1}\n{"text":"b","label":0}\n');
    const c = join(dir, "d.csv");
    writeFileSync(c, "text,label\nhello,y\n");
    assert.deepEqual(loadDataset(j).labelNames, ["x"]);
    assert.deepEqual(loadDataset(n).labelNames, ["0", "1"]);
    assert.deepEqual(loadDataset(c).examples, [{ text: "hello", label: 0 }]);
    assert.throws(() => loadDataset(join(dir, "missing.csv")), DatasetError);
  });

  test("an unknown name raises UnknownDatasetError listing the choices", () => {
    assert.throws(
      () => loadDataset("uci-twitter"),
      (e: unknown) => {
        assert.ok(e instanceof UnknownDatasetError);
        assert.equal(e.code, "PEFT_ERR_UNKNOWN_DATASET");
        assert.equal(e.name, "UnknownDatasetError");
        assert.equal(e.dataset, "uci-twitter");
        assert.deepEqual(e.known, ["uci-amazon", "uci-imdb", "uci-yelp", "uci-sentiment"]);
        assert.match(e.message, /uci-sentiment/);
        assert.match(e.message, /\.jsonl/);
        return true;
      },
    );
    assert.throws(() => loadDataset(join(dir, "data.txt")), UnknownDatasetError);
  });
});
