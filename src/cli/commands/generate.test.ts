import assert from "node:assert/strict";
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { byteLevelTokenizer, byteLevelTokenizerJson } from "../../generate/test-tokenizers.test-util.js";
import { fixturePath } from "../../util/paths.js";
import { runCli } from "../main.js";

const fx = (...p: string[]) => fixturePath("peft-parity", ...p);

describe("peft generate", () => {
  const tmp = mkdtempSync(join(tmpdir(), "peft-generate-"));
  after(() => rmSync(tmp, { recursive: true, force: true }));

  test("--prompt-ids --json on a model without a tokenizer: prompt and generated ids, no text", async () => {
    const r = await runCli(["generate", "--model", fx("gpt2", "base"), "--adapter", fx("gpt2", "lora"), "--prompt-ids", "5,17,42", "--max-new-tokens", "4", "--json"]);
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout) as Record<string, unknown>;
    assert.deepEqual(out.prompt_token_ids, [5, 17, 42]);
    assert.equal((out.token_ids as number[]).length, 4);
    assert.equal(out.text, undefined);
    assert.equal(out.finish_reason, "length");
    // the same seed samples the same ids
    const args = ["generate", "--model", fx("llama", "base"), "--prompt-ids", "3,4", "--temperature", "0.9", "--seed", "5", "--json"];
    const [a, b] = [await runCli(args), await runCli(args)];
    assert.deepEqual(JSON.parse(a.stdout), JSON.parse(b.stdout));
  });

  test("several adapters: one output per adapter, from one batch", async () => {
    const r = await runCli(["generate", "--model", fx("gpt2", "base"), "--adapter", fx("gpt2", "lora"), "--adapter", fx("gpt2", "ia3"), "--prompt-ids", "5,17,42", "--max-new-tokens", "3", "--json"]);
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stdout.trim().split("\n").map((l) => JSON.parse(l) as { adapter: string; token_ids: number[] });
    assert.deepEqual(lines.map((l) => l.adapter), ["lora", "ia3"]);
    const alone = await runCli(["generate", "--model", fx("gpt2", "base"), "--adapter", fx("gpt2", "ia3"), "--prompt-ids", "5,17,42", "--max-new-tokens", "3", "--json"]);
    assert.deepEqual((JSON.parse(alone.stdout) as { token_ids: number[] }).token_ids, lines[1]!.token_ids);
  });

  test("--prompt with the folder's tokenizer: text in and out, streamed text equals the final text", async () => {
    const dir = join(tmp, "gpt2-tok");
    mkdirSync(dir);
    copyFileSync(fx("gpt2", "base", "config.json"), join(dir, "config.json"));
    copyFileSync(fx("gpt2", "base", "model.safetensors"), join(dir, "model.safetensors"));
    writeFileSync(join(dir, "tokenizer.json"), JSON.stringify(byteLevelTokenizerJson()));
    const r = await runCli(["generate", "--model", dir, "--prompt", "hi!", "--max-new-tokens", "6", "--json"]);
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout) as { prompt_token_ids: number[]; token_ids: number[]; text: string };
    const tok = byteLevelTokenizer();
    assert.deepEqual(out.prompt_token_ids, tok.encode("hi!").ids);
    assert.equal(out.text, tok.decode(out.token_ids, { skipSpecialTokens: true }));
    const s = await runCli(["generate", "--model", dir, "--prompt", "hi!", "--max-new-tokens", "6", "--stream", "--json"]);
    const events = s.stdout.trim().split("\n").map((l) => JSON.parse(l) as { text?: string; token_id?: number });
    const final = events.pop() as { text: string; token_ids: number[] };
    assert.deepEqual(final.token_ids, out.token_ids);
    assert.equal(events.map((e) => e.text).join(""), final.text);
    // text without a tokenizer, and an empty prompt, are typed errors
    const noTok = await runCli(["generate", "--model", fx("gpt2", "base"), "--prompt", "hi"]);
    assert.equal(noTok.code, 1);
    assert.match(noTok.stderr, /PEFT_ERR_TOKENIZER/);
    const empty = await runCli(["generate", "--model", dir, "--prompt", ""]);
    assert.equal(empty.code, 1);
    assert.match(empty.stderr, /PEFT_ERR_EMPTY_PROMPT/);
    const long = await runCli(["generate", "--model", fx("gpt2", "base"), "--prompt-ids", Array.from({ length: 70 }, () => "1").join(",")]);
    assert.match(long.stderr, /PEFT_ERR_CONTEXT_LENGTH/);
  });

  test("--chat renders the tokenizer's chat template; generation_config.json gives the defaults; --n samples with seeds S, S+1, …", async () => {
    const dir = join(tmp, "gpt2-chat");
    mkdirSync(dir);
    copyFileSync(fx("gpt2", "base", "config.json"), join(dir, "config.json"));
    copyFileSync(fx("gpt2", "base", "model.safetensors"), join(dir, "model.safetensors"));
    writeFileSync(join(dir, "tokenizer.json"), JSON.stringify(byteLevelTokenizerJson()));
    const template = "{% for m in messages %}{{ m.role }}:{{ m.content }};{% endfor %}{% if add_generation_prompt %}bot:{% endif %}";
    writeFileSync(join(dir, "tokenizer_config.json"), JSON.stringify({ chat_template: template, eos_token: "<|endoftext|>" }));
    writeFileSync(join(dir, "generation_config.json"), JSON.stringify({ do_sample: true, temperature: 0.7, top_k: 20, max_new_tokens: 3 }));
    const r = await runCli(["generate", "--model", dir, "--prompt", "hi", "--chat", "--system", "be", "--seed", "4", "--json"]);
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout) as { prompt_token_ids: number[]; token_ids: number[] };
    assert.deepEqual(out.prompt_token_ids, byteLevelTokenizer().encode("system:be;user:hi;bot:", { addSpecialTokens: false }).ids);
    assert.equal(out.token_ids.length, 3); // max_new_tokens of generation_config.json
    // do_sample from generation_config.json: the seed decides the tokens; --n 2 gives seeds 4 and 5
    const two = await runCli(["generate", "--model", dir, "--prompt", "hi", "--chat", "--system", "be", "--seed", "4", "--n", "2", "--json"]);
    const lines = two.stdout.trim().split("\n").map((l) => JSON.parse(l) as { token_ids: number[] });
    assert.equal(lines.length, 2);
    assert.deepEqual(lines[0]!.token_ids, out.token_ids);
    const five = await runCli(["generate", "--model", dir, "--prompt", "hi", "--chat", "--system", "be", "--seed", "5", "--json"]);
    assert.deepEqual(lines[1]!.token_ids, (JSON.parse(five.stdout) as { token_ids: number[] }).token_ids);
    // --system without --chat is refused
    const bad = await runCli(["generate", "--model", dir, "--prompt", "hi", "--system", "x"]);
    assert.equal(bad.code, 1);
  });
});
