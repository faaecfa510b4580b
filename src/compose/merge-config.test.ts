import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { ConfigError } from "../errors.js";
import { parseMergeConfigYaml } from "./merge-config.js";

const GOOD = `
merge_method: ties
base_model: ./base
models:
  - model: ./base
  - model: ./a
    parameters:
      weight: 0.7
      density: 0.5
  - model: ./b
    parameters: { weight: 0.5 }
parameters:
  normalize: true
  int8_mask: true
  density: 0.8
dtype: float16
seed: 3
`;

/** The ConfigError `text` raises, checked to name `path`. */
function configError(text: string, path: string, issue?: RegExp): ConfigError {
  let caught: unknown;
  try {
    parseMergeConfigYaml(text, "cfg.yml");
  } catch (e) {
    caught = e;
  }
  assert.ok(caught instanceof ConfigError, `expected a ConfigError, got ${String(caught)}`);
  assert.equal(caught.file, "cfg.yml");
  assert.equal(caught.path, path);
  if (issue) assert.match(caught.issue, issue);
  return caught;
}

describe("mergekit YAML configuration", () => {
  test("a mergekit ties config parses; top-level per-model parameters become defaults", () => {
    const c = parseMergeConfigYaml(GOOD, "cfg.yml");
    assert.equal(c.mergeMethod, "ties");
    assert.equal(c.method.name, "ties");
    assert.equal(c.baseModel, "./base");
    assert.deepEqual(c.models.map((m) => m.model), ["./base", "./a", "./b"]);
    assert.deepEqual(c.models[1]!.parameters, { weight: 0.7, density: 0.5 });
    assert.deepEqual(c.parameters, { normalize: true });
    assert.deepEqual(c.modelDefaults, { density: 0.8 });
    assert.equal(c.dtype, "float16");
    assert.equal(c.seed, 3);
    assert.deepEqual(c.warnings, []);
  });

  test("out_dtype wins over dtype; tokenizer_source is accepted with a warning", () => {
    const c = parseMergeConfigYaml(`${GOOD}out_dtype: bfloat16\ntokenizer_source: base\n`, "cfg.yml");
    assert.equal(c.dtype, "bfloat16");
    assert.equal(c.warnings.length, 1);
    assert.match(c.warnings[0]!, /tokenizer_source/);
  });

  test("linear needs no base model; other methods do", () => {
    const c = parseMergeConfigYaml("merge_method: linear\nmodels:\n  - model: a\n  - model: b\n", "cfg.yml");
    assert.equal(c.baseModel, null);
    configError("merge_method: task_arithmetic\nmodels:\n  - model: a\n", "base_model", /required/);
  });

  test("bad configurations are ConfigErrors naming the key", () => {
    configError(GOOD.replace("merge_method: ties", "merge_method: frankenstein"), "merge_method", /unknown merge method 'frankenstein'.*ties/);
    configError(GOOD.replace("merge_method: ties\n", ""), "merge_method", /required/);
    configError(GOOD.replace("  - model: ./b\n", "  - parameters: { weight: 0.5 }\n").replace("    parameters: { weight: 0.5 }\n", ""), "models[2].model", /required/);
    configError(GOOD.replace("weight: 0.7", "weight: abc"), "models[1].parameters.weight", /must be a number/);
    configError(GOOD.replace("weight: 0.7", "weight: [0, 0.5, 1]"), "models[1].parameters.weight", /gradients/);
    configError(GOOD.replace("density: 0.5", "densty: 0.5"), "models[1].parameters.densty", /unknown parameter.*density/);
    configError(GOOD.replace("normalize: true", "normalise: true"), "parameters.normalise", /unknown parameter/);
    configError(`${GOOD}tokenizer_sourc: base\n`, "tokenizer_sourc", /unknown key/);
    configError(`${GOOD}slices: []\n`, "slices", /not supported/);
    configError(GOOD.replace("dtype: float16", "dtype: int8"), "dtype", /float32, float16, bfloat16/);
    configError(GOOD.replace("  - model: ./a\n", "  - model: ./a+./lora\n"), "models[1].model", /model\+lora/);
    configError(GOOD.replace("  - model: ./a\n", "  - model: ./a\n    weight: 1\n"), "models[1].weight", /unknown key/);
    configError("merge_method: ties\nbase_model: b\nmodels: []\n", "models", /non-empty/);
    configError("merge_method: concat\nbase_model: b\nmodels:\n  - model: a\n", "merge_method", /shapes/);
    configError("merge_method: svd\nbase_model: b\nmodels:\n  - model: a\nparameters: { rank: 2.5 }\n", "parameters.rank", /integer/);
  });

  test("YAML syntax errors and duplicate keys are ConfigErrors", () => {
    configError("merge_method: ties\nmodels: [\n", "", /invalid YAML/);
    configError("merge_method: ties\nmerge_method: linear\n", "", /invalid YAML/);
    configError("- just\n- a list\n", "", /mapping/);
  });
});
