/**
 * The public API's boundary as a JavaScript user meets it (issue 19, defect 9): what users
 * naturally pass is accepted (nested arrays, typed arrays, a tokenizer's output), and a mistake
 * is an `ArgumentError` (`PEFT_ERR_ARGUMENT`) naming the function, the argument and what was
 * expected — never a `TypeError` from inside.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { combineAdapterDirs } from "../compose/combine-adapters.js";
import { mergeTaskTensors } from "../compose/methods.js";
import { addWeightedAdapter } from "../compose/weighted-adapter.js";
import { ArgumentError } from "../errors.js";
import { GenerationEngine } from "../generate/engine.js";
import { loadTokenizer } from "../io/tokenizer.js";
import { loadModel } from "../models/load.js";
import { makeTinyModelDir } from "../runs/testing.js";
import { Trainer } from "../train/trainer.js";
import { fixturePath } from "../util/paths.js";
import { PeftModel } from "./peft-model.js";

const root = mkdtempSync(join(tmpdir(), "peft-api-"));
after(() => rmSync(root, { recursive: true, force: true }));

/** Asserts an ArgumentError whose message matches `message` (it names the function and the argument). */
function argumentError(message: RegExp): (e: unknown) => boolean {
  return (e: unknown) => {
    assert.ok(e instanceof ArgumentError, `expected ArgumentError, got ${e instanceof Error ? `${e.constructor.name}: ${e.message}` : String(e)}`);
    assert.equal(e.code, "PEFT_ERR_ARGUMENT");
    assert.match(e.message, message);
    return true;
  };
}

const LORA = { peft_type: "LORA", task_type: "SEQ_CLS", r: 2, lora_alpha: 4, target_modules: ["query", "value"] };

describe("PeftModel.forward takes token ids as users write them", () => {
  const dir = makeTinyModelDir("bert", join(root, "bert"));
  const pm = PeftModel.create(loadModel(dir), LORA);
  after(() => pm.dispose());

  test("nested arrays, typed arrays, one row, int32 tensors and a tokenizer's output give the same logits", async () => {
    const ref = await pm.forward({ inputIds: { dtype: "int64", shape: [1, 3], data: BigInt64Array.from([2n, 5n, 9n]) } });
    const same = async (inputs: Parameters<PeftModel["forward"]>[0]) => assert.deepEqual((await pm.forward(inputs)).data, ref.data);
    await same({ inputIds: [[2, 5, 9]] });
    await same({ inputIds: [2, 5, 9] });
    await same({ inputIds: Int32Array.from([2, 5, 9]) });
    await same({ inputIds: [Int32Array.from([2, 5, 9])] });
    await same({ inputIds: { dtype: "int32", shape: [1, 3], data: Int32Array.from([2, 5, 9]) } });
    await same([[2, 5, 9]]);
    await same({ inputIds: [[2, 5, 9]], attentionMask: [[1, 1, 1]] });
    const tok = loadTokenizer(dir);
    const enc = tok.encode("good food");
    const fromEncode = await pm.forward(enc);
    assert.deepEqual(fromEncode.data, (await pm.forward({ inputIds: [enc.ids] })).data);
    const batch = tok.encodeBatch(["good food", "bad"]);
    assert.deepEqual((await pm.forward(batch)).shape, [2, 3]);
  });

  test("text where a tokenizer is known: the model folder's tokenizer.json, or one set on the model", async () => {
    const tok = loadTokenizer(dir);
    assert.ok(pm.tokenizer, "the tiny model folder has tokenizer.json");
    const batch = tok.encodeBatch(["good food", "bad"]);
    const ref = await pm.forward(batch);
    assert.deepEqual((await pm.forward(["good food", "bad"])).data, ref.data);
    assert.deepEqual((await pm.forward({ text: ["good food", "bad"] })).data, ref.data);
    assert.deepEqual((await pm.forward("good food")).data, (await pm.forward(tok.encodeBatch(["good food"]))).data);
    // adapterNames go with the text (checked against the batch the texts make)
    await assert.rejects(pm.forward({ text: ["good food", "bad"], adapterNames: ["default"] }), /adapterNames has 1 entries for a batch of 2/);
    await assert.rejects(pm.forward({ text: 5 } as never), argumentError(/'inputs\.text' must be a string or a non-empty array of strings; got number 5/));
    await assert.rejects(pm.forward({ text: "a", inputIds: [[1]] } as never), argumentError(/'inputs' must be \{ text, adapterNames\? \} .*not both\); got also the key\(s\) inputIds/));
    await assert.rejects(pm.forward(["good", 5] as never), argumentError(/'inputs\.text' must be a string or a non-empty array of strings/));
    // a model folder without a tokenizer: text is an ArgumentError until one is set
    const bare = new PeftModel(loadModel(fixturePath("peft-parity", "bert", "base")));
    try {
      assert.equal(bare.tokenizer, null);
      await assert.rejects(bare.forward("good food"), argumentError(/PeftModel\.forward: argument 'inputs' must be token ids: no tokenizer is known for .*bert\/base to encode text with \(set model\.tokenizer = loadTokenizer\(dir\).*; got the string "good food"/));
      assert.throws(() => (bare.tokenizer = {} as never), argumentError(/'tokenizer' must be a tokenizer with encodeBatch/));
      bare.tokenizer = { encodeBatch: (texts) => ({ inputIds: { dtype: "int64", shape: [texts.length, 2], data: new BigInt64Array(texts.length * 2).fill(3n) }, attentionMask: { dtype: "int64", shape: [texts.length, 2], data: new BigInt64Array(texts.length * 2).fill(1n) } }) };
      assert.deepEqual((await bare.forward("anything")).data, (await bare.forward([[3, 3]])).data);
    } finally {
      await bare.dispose();
    }
  });

  test("mistakes are ArgumentErrors naming the argument", async () => {
    await assert.rejects(pm.forward({ input_ids: [[1, 5, 9]] } as never), argumentError(/PeftModel\.forward: argument 'inputs\.inputIds' must be token ids .*; got an object with keys input_ids/));
    await assert.rejects(pm.forward({ inputIds: [[1, 5, 9], [1, 5]] }), argumentError(/'inputs\.inputIds' must be rows of equal length .* row 1 has 2/));
    await assert.rejects(pm.forward({ inputIds: [[1, -5, 9]] }), argumentError(/'inputs\.inputIds' must be .*row 0 is not a list of non-negative integer ids; got an array of 3/));
    await assert.rejects(pm.forward({ inputIds: [[1, 5, 1e6]] }), argumentError(/'inputs\.inputIds' must be ids in \[0, 128\) \(the model's vocabulary\); got id 1000000 at row 0, position 2/));
    await assert.rejects(pm.forward({ inputIds: "good food" as never }), argumentError(/'inputs\.inputIds' must be token ids/));
    await assert.rejects(pm.forward({ inputIds: [[1, 5, 9]], attentionMask: [[1, 1]] }), argumentError(/'inputs\.attentionMask' must be a mask of the token ids' shape \[1, 3\]; got shape \[1, 2\]/));
    await assert.rejects(pm.forward({ inputIds: [[1, 5, 9]] }, { dtype: "float64" } as never), argumentError(/'opts\.dtype' must be one of "float32", "float16"; got the string "float64"/));
    await assert.rejects(pm.forward({ inputIds: [[1, 5, 9]], adapterNames: "default" as never }), argumentError(/'inputs\.adapterNames' must be an array; got the string "default"/));
  });

  test("other PeftModel methods check their arguments", () => {
    assert.throws(() => new PeftModel("models/bert" as never), argumentError(/new PeftModel: argument 'model' must be a LoadedModel .*; got the string "models\/bert"/));
    assert.throws(() => PeftModel.create(pm.base, "LORA" as never), argumentError(/PeftModel\.create: argument 'config' must be a PEFT config object/));
    assert.throws(() => pm.loadAdapter(fixturePath("peft-parity", "bert", "lora"), "x", { trainable: true } as never), argumentError(/PeftModel\.loadAdapter: argument 'opts' must be an object without unknown keys .*; got the unknown key\(s\) 'trainable'/));
    assert.throws(() => pm.setAdapter([1] as never), argumentError(/PeftModel\.setAdapter: argument 'names\[0\]' must be a string; got number 1/));
    assert.throws(() => pm.savePretrained(join(root, "out"), { selected: ["default"] } as never), argumentError(/'opts' must be an object without unknown keys/));
    assert.throws(() => pm.addAdapter("b", LORA, { seed: "1" } as never), argumentError(/PeftModel\.addAdapter: argument 'opts\.seed' must be a number; got the string "1"/));
  });

  test("new Trainer: wrong field names and types in the config and the examples", () => {
    const cfg = { task: "seq-cls" as const, epochs: 1, batchSize: 2, lr: 1e-3, seed: 0 };
    const ex = [{ ids: [2, 5, 3], label: 0 }];
    assert.doesNotThrow(() => new Trainer(pm, cfg, ex));
    assert.doesNotThrow(() => new Trainer(pm, cfg, [{ ...tokIds(dir), label: 1 }]));
    assert.throws(() => new Trainer(pm, cfg, [{ inputIds: [2, 5, 3], label: 0 }] as never), argumentError(/new Trainer: argument 'train\[0\]\.ids' must be the example's token ids .*; got an object with keys inputIds, label without 'ids'/));
    assert.throws(() => new Trainer(pm, cfg, [{ ids: [2, 5, 3] }]), argumentError(/'train\[0\]\.label' must be a class id \(task 'seq-cls'\)/));
    assert.throws(() => new Trainer(pm, { ...cfg, learningRate: 1e-3 } as never, ex), argumentError(/'config' must be an object without unknown keys .*'learningRate'/));
    assert.throws(() => new Trainer(pm, { ...cfg, batchSize: "8" } as never, ex), argumentError(/'config\.batchSize' must be a number; got the string "8"/));
    assert.throws(() => new Trainer(pm, { ...cfg, task: "classification" } as never, ex), argumentError(/'config\.task' must be one of "seq-cls", "causal-lm"/));
    assert.throws(() => new Trainer(pm.base as never, cfg, ex), argumentError(/'model' must be a PeftModel/));
    assert.throws(() => new Trainer(pm, cfg, ex, "val" as never), argumentError(/'validation' must be an array of tokenised examples/));
  });
});

function tokIds(dir: string): { ids: number[] } {
  return { ids: loadTokenizer(dir).encode("good").ids };
}

describe("composition and generation entry points", () => {
  test("combineAdapterDirs, addWeightedAdapter, mergeTaskTensors: misspelt options and wrong types", () => {
    const base = fixturePath("peft-parity", "bert", "base");
    const a = fixturePath("peft-parity", "bert", "multi_a");
    assert.throws(
      () => combineAdapterDirs({ base, adapters: [a], weights: [1], outDir: join(root, "c"), combination_type: "ties" } as never),
      argumentError(/combineAdapterDirs: argument 'opts' must be an object without unknown keys .*'combination_type'/),
    );
    assert.throws(() => combineAdapterDirs({ base, adapters: a, weights: [1], outDir: join(root, "c") } as never), argumentError(/'opts\.adapters' must be an array; got the string/));
    assert.throws(() => combineAdapterDirs({ base, adapters: [a], weights: ["1"], outDir: join(root, "c") } as never), argumentError(/'opts\.weights\[0\]' must be a number; got the string "1"/));
    assert.throws(() => addWeightedAdapter([{ modules: {} }] as never, [1]), argumentError(/addWeightedAdapter: argument 'adapters\[0\]\.modules' must be a Map/));
    assert.throws(() => mergeTaskTensors("ties", [], {}), argumentError(/mergeTaskTensors: argument 'tensors' must be an array of at least 1 items; got an array of 0/));
    assert.throws(() => mergeTaskTensors("linear", [{ dtype: "float32", shape: [1], data: new Float32Array(1) }], { weights: [1] } as never), argumentError(/'opts' must be an object without unknown keys .*'weights'/));
  });

  test("GenerationEngine requests: wrong field names and types", async () => {
    const engine = new GenerationEngine(new PeftModel(loadModel(fixturePath("peft-parity", "gpt2", "base"))), { maxSlots: 1 });
    try {
      await assert.rejects(engine.generate({ prompt: [1, 2] } as never), argumentError(/GenerationEngine\.generate: argument 'request\.prompt' must be a string; got an array of 2/));
      await assert.rejects(engine.generate({ params: { maxNewTokens: 2 } } as never), argumentError(/GenerationEngine\.generate: argument 'request\.promptIds' must be a list of non-negative integer token ids .*; got undefined/));
      await assert.rejects(engine.generate({ prompt: "hello" }), argumentError(/argument 'request\.prompt' must be absent: this engine has no tokenizer .*; got the string "hello"/));
      await assert.rejects(engine.generate({ promptIds: [1, 2], params: { max_tokens: 4 } } as never), argumentError(/'request\.params' must be an object without unknown keys .*'max_tokens'/));
      await assert.rejects(engine.generate({ promptIds: "hello" } as never), argumentError(/'request\.promptIds' must be a list of non-negative integer token ids/));
      assert.throws(() => engine.stream({ promptIds: [1], adapter: 3 } as never), argumentError(/GenerationEngine\.stream: argument 'request\.adapter' must be a string; got number 3/));
      const r = await engine.generate({ promptIds: Int32Array.from([1, 2]) as never, params: { maxNewTokens: 2 } });
      assert.equal(r.tokenIds.length, 2);
    } finally {
      await engine.close();
    }
  });

  test("GenerationEngine with a tokenizer takes the prompt as text", async () => {
    const dir = makeTinyModelDir("gpt2", join(root, "gpt2"));
    const tok = loadTokenizer(dir);
    const engine = new GenerationEngine(new PeftModel(loadModel(dir)), { maxSlots: 1, tokenizer: tok });
    try {
      const ids = tok.encode("good food").ids;
      const fromText = await engine.generate({ prompt: "good food", params: { maxNewTokens: 3 } });
      const fromIds = await engine.generate({ promptIds: ids, params: { maxNewTokens: 3 } });
      assert.deepEqual(fromText.promptTokenIds, ids);
      assert.deepEqual(fromText.tokenIds, fromIds.tokenIds);
      await assert.rejects(engine.generate({ prompt: "good", promptIds: ids } as never), argumentError(/'request' must be either promptIds or prompt, not both/));
    } finally {
      await engine.close();
    }
  });
});
