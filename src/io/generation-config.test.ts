import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { ConfigError } from "../errors.js";
import { loadGenerationConfig, parseGenerationConfig } from "./generation-config.js";

const tmp = mkdtempSync(join(tmpdir(), "peft-gencfg-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

describe("generation_config.json", () => {
  test("Qwen2-Instruct: sampling settings and a list of eos ids", () => {
    const c = parseGenerationConfig({
      bos_token_id: 151643,
      pad_token_id: 151643,
      do_sample: true,
      eos_token_id: [151645, 151643],
      repetition_penalty: 1.1,
      temperature: 0.7,
      top_p: 0.8,
      top_k: 20,
      transformers_version: "4.37.0",
    });
    assert.equal(c.doSample, true);
    assert.deepEqual(c.eosTokenId, [151645, 151643]);
    assert.equal(c.padTokenId, 151643);
    assert.equal(c.bosTokenId, 151643);
    assert.equal(c.repetitionPenalty, 1.1);
    assert.equal(c.temperature, 0.7);
    assert.equal(c.topP, 0.8);
    assert.equal(c.topK, 20);
    assert.equal(c.maxNewTokens, undefined);
    assert.equal(c.raw["transformers_version"], "4.37.0");
  });

  test("an int eos id is a list of one; unset fields are undefined; top_k null turns top-k off", () => {
    const c = parseGenerationConfig({ bos_token_id: 128000, eos_token_id: 128001, max_length: 4096, max_new_tokens: null, min_p: 0.05, top_k: null, stop_strings: "###", num_return_sequences: 2 });
    assert.deepEqual(c.stopStrings, ["###"]);
    assert.equal(c.numReturnSequences, 2);
    assert.deepEqual(c.eosTokenId, [128001]);
    assert.equal(c.maxLength, 4096);
    assert.equal(c.maxNewTokens, undefined);
    assert.equal(c.minP, 0.05);
    assert.equal(c.topK, 0);
    assert.equal(c.doSample, undefined);
    assert.equal(c.temperature, undefined);
    assert.ok(!("temperature" in c));
  });

  test("missing file → undefined; a folder or the file path are read", () => {
    assert.equal(loadGenerationConfig(tmp), undefined);
    writeFileSync(join(tmp, "generation_config.json"), JSON.stringify({ max_new_tokens: 64, do_sample: false }));
    assert.equal(loadGenerationConfig(tmp)?.maxNewTokens, 64);
    assert.equal(loadGenerationConfig(join(tmp, "generation_config.json"))?.doSample, false);
  });

  test("malformed values are ConfigErrors naming the key", () => {
    const bad = (raw: Record<string, unknown>, key: string) =>
      assert.throws(() => parseGenerationConfig(raw, "g.json"), (e: unknown) => e instanceof ConfigError && e.path.startsWith(key) && e.file === "g.json", key);
    bad({ temperature: -1 }, "temperature");
    bad({ temperature: "hot" }, "temperature");
    bad({ top_p: 1.5 }, "top_p");
    bad({ min_p: -0.1 }, "min_p");
    bad({ top_k: 2.5 }, "top_k");
    bad({ repetition_penalty: 0 }, "repetition_penalty");
    bad({ max_new_tokens: 0 }, "max_new_tokens");
    bad({ max_length: -3 }, "max_length");
    bad({ do_sample: "true" }, "do_sample");
    bad({ eos_token_id: "2" }, "eos_token_id");
    bad({ eos_token_id: [1, -2] }, "eos_token_id");
    bad({ eos_token_id: [] }, "eos_token_id");
    bad({ pad_token_id: -1 }, "pad_token_id");
    bad({ stop_strings: [""] }, "stop_strings");
    bad({ stop_strings: 3 }, "stop_strings");
    bad({ num_return_sequences: 0 }, "num_return_sequences");
    assert.throws(() => parseGenerationConfig([1], "g.json"), ConfigError);
    writeFileSync(join(tmp, "broken.json"), "{ not json");
    assert.throws(() => loadGenerationConfig(join(tmp, "broken.json")), ConfigError);
  });
});
