/**
 * Chat templates: real-world templates (copied as published in the models' tokenizer_config.json)
 * rendered against hand-written expected prompts, template selection, ids without a doubled BOS,
 * and template faults as ChatTemplateErrors.
 */
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { ChatTemplateError, ConfigError } from "../errors.js";
import { type ChatMessage, applyChatTemplate, selectChatTemplate } from "./chat-template.js";
import { HfTokenizer, loadTokenizer } from "./tokenizer.js";

/** Qwen2-Instruct (ChatML with a default system prompt). */
const QWEN2 =
  "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/** Meta-Llama-3-8B-Instruct. */
const LLAMA3 =
  "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}";

/** Mistral-7B-Instruct-v0.1 ([INST], alternating roles enforced with raise_exception). */
const MISTRAL =
  "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token + ' ' }}{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}";

/** zephyr-7b-beta (multi-line: relies on trim_blocks / lstrip_blocks). */
const ZEPHYR = `{% for message in messages %}
{% if message['role'] == 'user' %}
{{ '<|user|>
' + message['content'] + eos_token }}
{% elif message['role'] == 'system' %}
{{ '<|system|>
' + message['content'] + eos_token }}
{% elif message['role'] == 'assistant' %}
{{ '<|assistant|>
'  + message['content'] + eos_token }}
{% endif %}
{% if loop.last and add_generation_prompt %}
{{ '<|assistant|>' }}
{% endif %}
{% endfor %}`;

const tmp = mkdtempSync(join(tmpdir(), "peft-chat-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

function fault(fn: () => unknown, kind: ChatTemplateError["fault"], detail?: RegExp): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof ChatTemplateError, `expected ChatTemplateError, got ${String(e)}`);
    assert.equal(e.code, "PEFT_ERR_CHAT_TEMPLATE");
    assert.equal(e.fault, kind);
    if (detail) assert.match(e.detail, detail);
    return true;
  });
}

describe("chat templates published with real models", () => {
  test("Qwen2 (ChatML): default system prompt, generation prompt", () => {
    const text = applyChatTemplate([{ role: "user", content: "Hi" }], { template: QWEN2, addGenerationPrompt: true });
    assert.equal(text, "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
    const withSystem = applyChatTemplate(
      [
        { role: "system", content: "Be terse." },
        { role: "user", content: "2+2?" },
        { role: "assistant", content: "4" },
      ],
      { template: QWEN2 },
    );
    assert.equal(withSystem, "<|im_start|>system\nBe terse.<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>\n");
  });

  test("Llama 3: bos_token first, contents trimmed", () => {
    const text = applyChatTemplate(
      [
        { role: "system", content: "Be brief." },
        { role: "user", content: "  Hello there \n" },
      ],
      { template: LLAMA3, bosToken: "<|begin_of_text|>", eosToken: "<|eot_id|>", addGenerationPrompt: true },
    );
    assert.equal(
      text,
      "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHello there<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
    );
  });

  test("Mistral [INST]: turns, eos after answers, raise_exception on roles that do not alternate", () => {
    const chat: ChatMessage[] = [
      { role: "user", content: "What is 2+2?" },
      { role: "assistant", content: "4" },
      { role: "user", content: "And 3+3?" },
    ];
    assert.equal(applyChatTemplate(chat, { template: MISTRAL, bosToken: "<s>", eosToken: "</s>" }), "<s>[INST] What is 2+2? [/INST]4</s> [INST] And 3+3? [/INST]");
    fault(
      () => applyChatTemplate([{ role: "user", content: "a" }, { role: "user", content: "b" }], { template: MISTRAL, bosToken: "<s>", eosToken: "</s>" }),
      "raised",
      /^Conversation roles must alternate user\/assistant/u,
    );
    fault(() => applyChatTemplate([{ role: "user", content: "a" }, { role: "system", content: "x" }], { template: MISTRAL, bosToken: "<s>", eosToken: "</s>" }), "raised", /Only user and assistant roles/u);
  });

  test("Zephyr: a multi-line template, block whitespace trimmed as transformers does", () => {
    const text = applyChatTemplate(
      [
        { role: "system", content: "You are a friendly chatbot" },
        { role: "user", content: "Hi" },
      ],
      { template: ZEPHYR, eosToken: "</s>", addGenerationPrompt: true },
    );
    assert.equal(text, "<|system|>\nYou are a friendly chatbot</s>\n<|user|>\nHi</s>\n<|assistant|>\n");
  });

  test("continueFinalMessage leaves the last assistant message open", () => {
    const chat: ChatMessage[] = [
      { role: "user", content: "Hi" },
      { role: "assistant", content: "The answer is" },
    ];
    assert.equal(
      applyChatTemplate(chat, { template: QWEN2, continueFinalMessage: true }),
      "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nThe answer is",
    );
    fault(() => applyChatTemplate(chat, { template: QWEN2, continueFinalMessage: true, addGenerationPrompt: true }), "options");
  });

  test("tools as JSON the way transformers' tojson writes them (Qwen2.5's tool header)", () => {
    // the system/tools part of Qwen2.5-Instruct's template, its instructions text shortened
    const t =
      "{%- if tools %}{{- '<|im_start|>system\\n' }}{%- if messages[0].role == 'system' %}{{- messages[0].content + '\\n\\n' }}{%- endif %}{{- \"# Tools\\n\\n<tools>\" }}{%- for tool in tools %}{{- \"\\n\" }}{{- tool | tojson }}{%- endfor %}{{- \"\\n</tools><|im_end|>\\n\" }}{%- endif %}";
    const tools = [{ type: "function", function: { name: "get_weather", description: "Météo", parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] } } }];
    assert.equal(
      applyChatTemplate([{ role: "system", content: "S" }], { template: t, tools }),
      '<|im_start|>system\nS\n\n# Tools\n\n<tools>\n{"type": "function", "function": {"name": "get_weather", "description": "Météo", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}\n</tools><|im_end|>\n',
    );
  });

  test("tools, documents and extra variables reach the template", () => {
    const t = "{% for t in tools %}{{ t.function.name }};{% endfor %}{% for d in documents %}[{{ d.title }}]{% endfor %}{{ enable_thinking }}|{{ messages | length }}";
    const text = applyChatTemplate([{ role: "user", content: "x" }], {
      template: t,
      tools: [{ type: "function", function: { name: "get_weather", parameters: {} } }],
      documents: [{ title: "doc1", text: "…" }],
      variables: { enable_thinking: false },
    });
    assert.equal(text, "get_weather;[doc1]false|1");
  });
});

describe("choosing the template", () => {
  const named = { default: QWEN2, tool_use: "TOOLS:{{ tools | length }}", rag: "RAG" };
  test("named templates: default, tool_use when tools are given, or by name; a source passes through", () => {
    assert.equal(selectChatTemplate(named), QWEN2);
    assert.equal(selectChatTemplate(named, { tools: [] }), named.tool_use);
    assert.equal(selectChatTemplate(named, { template: "rag" }), "RAG");
    assert.equal(selectChatTemplate(named, { template: "{{ 'inline' }}" }), "{{ 'inline' }}");
    assert.equal(selectChatTemplate(QWEN2), QWEN2);
    assert.equal(applyChatTemplate([], { chatTemplate: named, tools: [{}, {}] }), "TOOLS:2");
  });

  test("no template, or several without a default: a ChatTemplateError saying what to pass", () => {
    fault(() => selectChatTemplate(null), "missing", /no chat_template/u);
    fault(() => selectChatTemplate({ a: "A", b: "B" }), "missing", /a, b/u);
  });

  test("syntax errors, rendering errors and malformed messages are ChatTemplateErrors", () => {
    fault(() => applyChatTemplate([], { template: "{% for m in messages %}{{ m.content }}" }), "syntax");
    fault(() => applyChatTemplate([], { template: "{{ 'a' + }}" }), "syntax");
    fault(() => applyChatTemplate([{ role: "user", content: "x" }], { template: "{{ messages[0].content | no_such_filter }}" }), "render");
    fault(() => applyChatTemplate([{ content: "x" } as unknown as ChatMessage], { template: QWEN2 }), "messages", /role/u);
    fault(() => applyChatTemplate([{ role: "user", content: 5 } as unknown as ChatMessage], { template: QWEN2 }), "messages", /content/u);
  });
});

describe("chat templates through a tokenizer folder", () => {
  const special = (id: number, content: string) => ({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });
  /** A word-level tokenizer whose post-processor adds <s> (as Llama/Mistral tokenizers do). */
  function tokenizerJson(): Record<string, unknown> {
    const vocab = ["<unk>", "<s>", "</s>", "[INST]", "[/INST]", "hello", "world", "fine", "thanks"];
    return {
      version: "1.0",
      added_tokens: [special(0, "<unk>"), special(1, "<s>"), special(2, "</s>"), special(3, "[INST]"), special(4, "[/INST]")],
      normalizer: null,
      pre_tokenizer: { type: "Whitespace" },
      post_processor: {
        type: "TemplateProcessing",
        single: [{ SpecialToken: { id: "<s>", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }],
        pair: [{ SpecialToken: { id: "<s>", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }, { Sequence: { id: "B", type_id: 1 } }],
        special_tokens: { "<s>": { id: "<s>", ids: [1], tokens: ["<s>"] } },
      },
      decoder: null,
      model: { type: "WordLevel", vocab: Object.fromEntries(vocab.map((t, i) => [t, i])), unk_token: "<unk>" },
    };
  }
  const config = {
    add_bos_token: true,
    add_eos_token: false,
    added_tokens_decoder: { "1": { content: "<s>", lstrip: false, normalized: false, rstrip: false, single_word: false, special: true } },
    bos_token: "<s>",
    eos_token: "</s>",
    unk_token: "<unk>",
    pad_token: null,
    model_max_length: 32768,
    chat_template: MISTRAL,
    tokenizer_class: "LlamaTokenizer",
  };

  test("ids of a chat carry one BOS (the template's), as apply_chat_template(tokenize=True)", () => {
    const tok = HfTokenizer.fromJson(tokenizerJson(), config);
    const chat: ChatMessage[] = [
      { role: "user", content: "hello world" },
      { role: "assistant", content: "fine thanks" },
      { role: "user", content: "hello" },
    ];
    assert.equal(tok.applyChatTemplate(chat), "<s>[INST] hello world [/INST]fine thanks</s> [INST] hello [/INST]");
    assert.deepEqual(tok.encodeChat(chat), [1, 3, 5, 6, 4, 7, 8, 2, 3, 5, 4]);
    // encoding the text as a plain prompt would add the post-processor's BOS in front of the template's
    assert.deepEqual(tok.encode(tok.applyChatTemplate(chat)).ids.slice(0, 2), [1, 1]);
    assert.equal(tok.bosTokenId, 1);
    assert.equal(tok.eosTokenId, 2);
    assert.equal(tok.unkTokenId, 0);
    assert.equal(tok.addBosToken, true);
    assert.equal(tok.addEosToken, false);
    assert.equal(tok.modelMaxLength, 32768);
    assert.equal(tok.config.addedTokensDecoder.get(1)?.content, "<s>");
  });

  test("chat_template.jinja and additional_chat_templates/ take precedence over tokenizer_config.json", () => {
    const dir = join(tmp, "jinja");
    mkdirSync(join(dir, "additional_chat_templates"), { recursive: true });
    writeFileSync(join(dir, "tokenizer.json"), JSON.stringify(tokenizerJson()));
    writeFileSync(join(dir, "tokenizer_config.json"), JSON.stringify(config));
    writeFileSync(join(dir, "chat_template.jinja"), "{{ bos_token }}{% for m in messages %}{{ m.content }}{% endfor %}");
    let tok = loadTokenizer(dir);
    assert.equal(tok.applyChatTemplate([{ role: "user", content: "hello" }]), "<s>hello");
    writeFileSync(join(dir, "additional_chat_templates", "shout.jinja"), "{% for m in messages %}{{ m.content | upper }}{% endfor %}");
    tok = loadTokenizer(dir);
    assert.deepEqual(Object.keys(tok.chatTemplate as Record<string, string>).sort(), ["default", "shout"]);
    assert.equal(tok.applyChatTemplate([{ role: "user", content: "hello" }], { template: "shout" }), "HELLO");
    assert.equal(tok.applyChatTemplate([{ role: "user", content: "hello" }]), "<s>hello");
  });

  test("a tokenizer without a template, or with special tokens missing from tokenizer.json", () => {
    const tok = HfTokenizer.fromJson(tokenizerJson(), { ...config, chat_template: undefined });
    assert.equal(tok.chatTemplate, null);
    fault(() => tok.applyChatTemplate([{ role: "user", content: "hello" }]), "missing");
    assert.equal(tok.applyChatTemplate([{ role: "user", content: "hello" }], { template: "{{ eos_token }}" }), "</s>");
    assert.throws(() => HfTokenizer.fromJson(tokenizerJson(), { ...config, eos_token: "<|im_end|>" }), (e: unknown) => e instanceof ConfigError && e.path === "eos_token");
  });
});
