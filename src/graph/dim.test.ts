import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { evalDim, formatDim, parseDim, parseDimOrName } from "./dim.js";
import { dimProduct, dimSum } from "./shape.js";

describe("symbolic dims", () => {
  test("spelling round-trips through the expression, with parentheses where a sum meets a product", () => {
    for (const d of ["batch", "batch*seq", "seq+4", "batch*seq*4", "(seq+4)*batch", "(batch*seq)+2"]) assert.equal(formatDim(parseDim(d)!), d);
    assert.equal(formatDim(parseDim("((seq))")!), "seq");
    assert.equal(formatDim(parseDim(12)!), 12);
  });

  test("a bare sum beside a bare product is ambiguous (older graphs spelled (a+b)*c that way); junk is no expression", () => {
    assert.equal(parseDim("batch*seq+4"), null);
    assert.equal(parseDim("seq+"), null);
    assert.equal(parseDim("(seq"), null);
    assert.equal(parseDim(null), null);
    assert.deepEqual(parseDimOrName("batch*seq+4"), { kind: "sym", name: "batch*seq+4" });
  });

  test("dimProduct and dimSum write unambiguous spellings that evaluate to the product and the sum", () => {
    const sizes = { batch: 3, seq: 5 };
    const p = dimProduct(["seq+4", "batch"]);
    assert.equal(p, "(seq+4)*batch");
    assert.equal(evalDim(p, sizes), 27);
    const s = dimSum(["batch*seq", 2]);
    assert.equal(s, "(batch*seq)+2");
    assert.equal(evalDim(s, sizes), 17);
    assert.equal(dimProduct(["batch", "seq", 4]), "batch*seq*4");
    assert.equal(dimProduct(["batch", 0]), 0);
    assert.equal(evalDim("batch*unknown", sizes), null);
  });
});
