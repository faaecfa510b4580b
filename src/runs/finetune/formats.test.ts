/** Training files are checked line by line (errors name the line); chats train on assistant tokens only. */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { TrainingFileError } from "../../errors.js";
import { loadTokenizer } from "../../io/tokenizer.js";
import { readTrainingFile } from "./formats.js";
import { tokenizeChat, tokenizePromptCompletion } from "./examples.js";
import { tinyFineTuneModel } from "./testing.js";

const dir = mkdtempSync(join(tmpdir(), "peft-ft-formats-"));
after(() => rmSync(dir, { recursive: true, force: true }));

function file(name: string, text: string): string {
  writeFileSync(join(dir, name), text);
  return join(dir, name);
}

describe("training files", () => {
  test("each format is recognised; classification labels are sorted; blank lines are skipped", async () => {
    assert.deepEqual(await readTrainingFile(file("a", '{"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"yo"}]}\n'), "a"), { format: "chat", examples: 1 });
    assert.deepEqual(await readTrainingFile(file("b", '{"prompt":"a","completion":"b"}\n\n{"prompt":"c","completion":"d"}'), "b"), { format: "prompt-completion", examples: 2 });
    assert.deepEqual(await readTrainingFile(file("c", '{"text":"x","label":10}\n{"text":"y","label":9}\n{"text":"z","label":10}\n'), "c"), { format: "classification", examples: 3, labels: ["9", "10"] });
  });

  test("errors name the file and the line", async () => {
    const cases: [string, RegExp][] = [
      ['{"prompt":"a","completion":"b"}\n[1]\n', /^up\.jsonl, line 2: not a JSON object/u],
      ['{"prompt":"a","completion":"b"}\n{"prompt":"a"\n', /^up\.jsonl, line 2: not valid JSON/u],
      ['{"messages":[{"role":"user","content":"hi"}]}\n', /line 1: the chat has no assistant message to train on/u],
      ['{"messages":[{"role":"wizard","content":"hi"}]}\n', /line 1: messages\[0\]\.role must be one of/u],
      ['{"messages":[{"role":"user","content":"hi","weight":1},{"role":"assistant","content":"x"}]}\n', /line 1: messages\[0\]\.weight is only allowed on assistant/u],
      ['{"prompt":"a","completion":""}\n', /line 1: 'completion' must be a non-empty string/u],
      ['{"text":"a","label":1.5}\n', /line 1: 'label' must be a non-empty string or a non-negative integer/u],
      ['{"text":"a","label":"x"}\n{"text":"b","label":"x"}\n', /^up\.jsonl: classification needs at least 2 distinct labels/u],
      ['{"input":"a"}\n', /line 1: unknown example format \(keys: input\)/u],
      ["\n\n", /^up\.jsonl: the file has no examples/u],
    ];
    for (const [text, want] of cases) {
      await assert.rejects(readTrainingFile(file("up.jsonl", text), "up.jsonl"), (e: unknown) => {
        assert.ok(e instanceof TrainingFileError);
        assert.match(e.message, want);
        return true;
      });
    }
  });
});

describe("tokenised examples", () => {
  const tok = loadTokenizer(tinyFineTuneModel(dir));
  const enc = { tok, maxLength: 64 };
  const id = (w: string) => tok.encode(w, { addSpecialTokens: false }).ids[0]!;

  test("a chat: labels only on the assistant replies (weight 0 leaves one out), ids those of the rendered chat", () => {
    const messages = [
      { role: "user", content: "good food" },
      { role: "assistant", content: "great" },
      { role: "user", content: "bad food" },
      { role: "assistant", content: "awful", weight: 0 as const },
      { role: "user", content: "ok" },
      { role: "assistant", content: "fine fine" },
    ];
    const e = tokenizeChat(enc, messages, "gpt2");
    assert.deepEqual(e.ids, tok.encode(tok.applyChatTemplate(messages), { addSpecialTokens: false }).ids);
    const trained = e.ids.filter((_, i) => e.labels![i] !== -100);
    assert.deepEqual(trained, [id("great"), id("fine"), id("fine")]);
    e.labels!.forEach((l, i) => assert.ok(l === -100 || l === e.ids[i]));
  });

  test("prompt/completion: the loss on the completion only; long examples are cut", () => {
    const e = tokenizePromptCompletion(enc, "the food was", "good");
    assert.deepEqual(e.labels, [-100, -100, -100, id("good")]);
    const cut = tokenizePromptCompletion({ tok, maxLength: 2 }, "the food was", "good");
    assert.equal(cut.ids.length, 2);
    assert.equal(cut.labels!.length, 2);
  });
});
