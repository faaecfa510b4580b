import assert from "node:assert/strict";
import { posix } from "node:path";
import { test } from "node:test";
import { NoFileSystemError } from "../errors.js";
import * as web from "./fs.browser.js";

test("the browser path functions agree with node:path's posix ones", () => {
  const paths = ["a/b", "/a/b/", "a/../b", "../x/y.json", "/", ".", "a/./b/../../c", "dir/file.tar.gz", ".hidden", "/x/y/"];
  for (const p of paths) {
    assert.equal(web.dirname(p), posix.dirname(p), `dirname ${p}`);
    assert.equal(web.extname(p), posix.extname(p), `extname ${p}`);
    assert.equal(web.basename(p), posix.basename(p), `basename ${p}`);
    assert.equal(web.basename(p, ".json"), posix.basename(p, ".json"), `basename ${p} .json`);
    assert.equal(web.isAbsolute(p), posix.isAbsolute(p));
    assert.equal(web.join("root", p), posix.join("root", p), `join ${p}`);
    assert.equal(web.resolve("/base", p), posix.resolve("/base", p), `resolve ${p}`);
    assert.equal(web.relative("/base/x", web.resolve("/base", p)), posix.relative("/base/x", posix.resolve("/base", p)), `relative ${p}`);
  }
  assert.equal(web.join(), posix.join());
  assert.equal(web.sep, "/");
});

test("browser file operations throw NoFileSystemError naming the operation and the file", () => {
  assert.throws(() => web.readFileSync("model/config.json"), (e) => e instanceof NoFileSystemError && e.operation === "readFileSync" && e.file === "model/config.json" && e.code === "PEFT_ERR_NO_FILE_SYSTEM");
  assert.throws(() => web.existsSync("x"), NoFileSystemError);
  assert.throws(() => web.packageDir("sentiment"), NoFileSystemError);
});
