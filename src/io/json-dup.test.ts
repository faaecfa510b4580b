import { test } from "node:test";
import assert from "node:assert/strict";
import { findDuplicateKey } from "./json-dup.js";

test("findDuplicateKey finds repeated keys per object, after unescaping", () => {
  assert.equal(findDuplicateKey('{"a":1,"b":{"a":2}}'), null);
  assert.equal(findDuplicateKey('{"a":1,"a":2}'), "a");
  assert.equal(findDuplicateKey('{"a":1,"\\u0061":2}'), "a");
  assert.equal(findDuplicateKey('{"x":{"k":1,"k":2}}'), "x.k");
  assert.equal(findDuplicateKey('{"x":[{"k":1},{"k":2}],"y":"k"}'), null);
  assert.equal(findDuplicateKey('{"x":[{"k":1,"k":2}]}'), "x.k");
  // Braces, commas and quotes inside strings are not structure.
  assert.equal(findDuplicateKey('{"s":"{\\"s\\":1,}","t":"]"}'), null);
  assert.equal(findDuplicateKey('{"s":"a,\\"b","s":0}'), "s");
  assert.equal(findDuplicateKey("[1,2,3]"), null);
});
