/**
 * Chat templates as transformers' `apply_chat_template`: the tokenizer's Jinja template (from
 * `tokenizer_config.json` or `chat_template.jinja`) rendered with `@huggingface/jinja` (the
 * implementation transformers.js uses; `trim_blocks` and `lstrip_blocks` on, as transformers) over
 * `messages`, `tools`, `documents`, `add_generation_prompt` and the special tokens. Template
 * faults (syntax, `raise_exception(...)`, rendering) are `ChatTemplateError`s.
 */
import { Template, parse, tokenize } from "@huggingface/jinja";
import { ChatTemplateError } from "../errors.js";
import { isJsonObject } from "./json-file.js";
import type { ChatTemplateSource } from "./tokenizer-config.js";

/** One chat message: `role` and `content` (text, a list of content parts, or null), plus any field a template reads (`tool_calls`, `name`…). */
export interface ChatMessage {
  readonly role: string;
  readonly content?: string | readonly Readonly<Record<string, unknown>>[] | null;
  readonly [key: string]: unknown;
}

export interface ChatTemplateOptions {
  /** The templates to choose from (a tokenizer's `chat_template`: one source, or named templates). */
  readonly chatTemplate?: ChatTemplateSource | null;
  /**
   * A template name among `chatTemplate`'s, or a Jinja template source (transformers'
   * `chat_template` argument). Default: `chatTemplate` itself, or its `tool_use` template when
   * `tools` are given and it has one, else its `default`.
   */
  readonly template?: string;
  /** End the prompt with the start of an assistant turn (`add_generation_prompt`). Default false. */
  readonly addGenerationPrompt?: boolean;
  /** Leave the final (assistant) message open so generation continues it (`continue_final_message`). */
  readonly continueFinalMessage?: boolean;
  /** Tool definitions (JSON schemas) for templates that take them. */
  readonly tools?: readonly unknown[];
  /** Documents for retrieval-augmented templates. */
  readonly documents?: readonly unknown[];
  readonly bosToken?: string | null;
  readonly eosToken?: string | null;
  readonly unkToken?: string | null;
  readonly padToken?: string | null;
  /** More template variables (other special tokens, transformers' extra kwargs such as `enable_thinking`). */
  readonly variables?: Readonly<Record<string, unknown>>;
  /** Where the template came from, for error messages (e.g. the tokenizer_config.json path). */
  readonly source?: string;
}

/** transformers' `get_chat_template`: the Jinja source to render. */
export function selectChatTemplate(
  chatTemplate: ChatTemplateSource | null | undefined,
  opts: { readonly template?: string; readonly tools?: readonly unknown[]; readonly source?: string } = {},
): string {
  const src = opts.source ?? "chat template";
  if (chatTemplate !== null && chatTemplate !== undefined && typeof chatTemplate !== "string") {
    const named = chatTemplate;
    if (opts.template !== undefined) return Object.hasOwn(named, opts.template) ? named[opts.template]! : opts.template;
    if (opts.tools !== undefined && Object.hasOwn(named, "tool_use")) return named["tool_use"]!;
    if (Object.hasOwn(named, "default")) return named["default"]!;
    throw new ChatTemplateError(src, "missing", `the tokenizer has several chat templates (${Object.keys(named).join(", ")}) and none named "default"; pass template: "<name>"`);
  }
  if (opts.template !== undefined) return opts.template;
  if (typeof chatTemplate === "string") return chatTemplate;
  throw new ChatTemplateError(src, "missing", "the tokenizer has no chat_template (in tokenizer_config.json or chat_template.jinja); pass one as template: \"{% for message in messages %}…\"");
}

/** Compiled templates by source (templates are reused for every request). */
const compiled = new Map<string, Template>();
const MAX_COMPILED = 32;

/**
 * The name `raise_exception` is bound to in compiled templates. @huggingface/jinja's own global
 * throws a plain `Error`, like its rendering faults, and a global cannot be redeclared, so the
 * template's calls are pointed at our function (renamed at the token level) to tell them apart.
 */
const RAISE = "__peft_raise_exception__";

function compile(source: string, label: string): Template {
  let t = compiled.get(source);
  if (t) return t;
  try {
    // as `new Template(source)` does (trim_blocks and lstrip_blocks, as transformers renders)
    const tokens = tokenize(source, { lstrip_blocks: true, trim_blocks: true });
    for (const tok of tokens) if (tok.type === "Identifier" && tok.value === "raise_exception") tok.value = RAISE;
    t = new Template("");
    t.parsed = parse(tokens);
  } catch (e) {
    throw new ChatTemplateError(label, "syntax", (e as Error).message, { cause: e });
  }
  if (compiled.size >= MAX_COMPILED) compiled.delete(compiled.keys().next().value!);
  compiled.set(source, t);
  return t;
}

/** Thrown by the template's `raise_exception(...)`, told apart from the renderer's own errors. */
class RaisedInTemplate extends Error {}

function checkMessages(messages: unknown, label: string): asserts messages is readonly ChatMessage[] {
  if (!Array.isArray(messages)) throw new ChatTemplateError(label, "messages", "messages must be a list of {role, content} objects");
  messages.forEach((m: unknown, i) => {
    if (!isJsonObject(m)) throw new ChatTemplateError(label, "messages", `message ${i} must be an object, got ${JSON.stringify(m)}`);
    if (typeof m["role"] !== "string") throw new ChatTemplateError(label, "messages", `message ${i} needs a string "role"`);
    const c = m["content"];
    if (c !== undefined && c !== null && typeof c !== "string" && !(Array.isArray(c) && c.every(isJsonObject))) {
      throw new ChatTemplateError(label, "messages", `message ${i}: "content" must be a string, a list of content parts or null`);
    }
  });
}

/** The text of the final message that `continueFinalMessage` leaves open (its last text part for multimodal content). */
function finalText(messages: readonly ChatMessage[], label: string): string {
  const last = messages[messages.length - 1];
  const c = last?.content;
  if (typeof c === "string") return c;
  if (Array.isArray(c)) {
    for (let i = c.length - 1; i >= 0; i--) {
      const t = c[i]!["text"];
      if (typeof t === "string") return t;
    }
  }
  throw new ChatTemplateError(label, "options", "continueFinalMessage needs a final message with text to continue");
}

/**
 * Renders a chat as transformers' `apply_chat_template(..., tokenize=False)` does: the prompt
 * text, with the template's own special tokens (BOS included when the template writes it).
 */
export function applyChatTemplate(messages: readonly ChatMessage[], opts: ChatTemplateOptions = {}): string {
  const label = opts.source ?? "chat template";
  checkMessages(messages, label);
  if (opts.addGenerationPrompt && opts.continueFinalMessage) {
    throw new ChatTemplateError(label, "options", "addGenerationPrompt and continueFinalMessage cannot both be set (the first opens a new assistant turn, the second continues the last message)");
  }
  if (opts.continueFinalMessage && messages.length === 0) throw new ChatTemplateError(label, "options", "continueFinalMessage needs at least one message");
  const source = selectChatTemplate(opts.chatTemplate, { ...(opts.template !== undefined ? { template: opts.template } : {}), ...(opts.tools !== undefined ? { tools: opts.tools } : {}), source: label });
  const template = compile(source, label);
  const special: Record<string, string> = {};
  for (const [k, v] of [["bos_token", opts.bosToken], ["eos_token", opts.eosToken], ["unk_token", opts.unkToken], ["pad_token", opts.padToken]] as const) {
    if (typeof v === "string") special[k] = v;
  }
  const context: Record<string, unknown> = {
    ...opts.variables,
    ...special,
    messages,
    add_generation_prompt: opts.addGenerationPrompt ?? false,
    ...(opts.tools !== undefined ? { tools: opts.tools } : {}),
    ...(opts.documents !== undefined ? { documents: opts.documents } : {}),
    [RAISE]: (msg: unknown) => {
      throw new RaisedInTemplate(String(msg));
    },
  };
  let text: string;
  try {
    text = template.render(context);
  } catch (e) {
    if (e instanceof RaisedInTemplate) throw new ChatTemplateError(label, "raised", e.message, { cause: e });
    throw new ChatTemplateError(label, "render", (e as Error).message, { cause: e });
  }
  if (!opts.continueFinalMessage) return text;
  // transformers: cut the text right after the final message's content
  const final = finalText(messages, label);
  const at = text.lastIndexOf(final.trim());
  if (at < 0) throw new ChatTemplateError(label, "options", "continueFinalMessage: the final message does not appear in the rendered chat");
  const keep = text.slice(at, at + final.trimStart().length) === final ? final.trimStart().length : final.trim().length;
  return text.slice(0, at + keep);
}
