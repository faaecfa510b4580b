/**
 * Training rows → token ids with per-token labels. Chats are rendered with the model's chat
 * template, one turn at a time: the text up to each trained assistant turn (with the generation
 * prompt, as the server renders a chat request) is not trained on, the assistant's reply is —
 * the loss falls on assistant turns only. Prompt/completion: the loss on the completion (and the
 * end-of-sequence token). Classification: the text's ids and the label's class id.
 */
import { ChatTemplateError, FineTuneModelError } from "../../errors.js";
import type { HfTokenizer } from "../../io/tokenizer.js";
import type { TokenizedExample } from "../../train/batch.js";
import type { ChatTurn, TrainingRow } from "./formats.js";

const IGNORE = -100;

export interface CausalEncoder {
  readonly tok: HfTokenizer;
  /** Longest sequence (the model's positions); longer examples are cut. */
  readonly maxLength: number;
}

function ids(tok: HfTokenizer, text: string): number[] {
  return text.length === 0 ? [] : tok.encode(text, { addSpecialTokens: false }).ids;
}

/** A chat's ids and labels (assistant turns with weight ≠ 0 trained, the rest −100). */
export function tokenizeChat(enc: CausalEncoder, messages: readonly ChatTurn[], model: string): TokenizedExample {
  const tok = enc.tok;
  if (tok.chatTemplate === null) throw new FineTuneModelError(model, "its tokenizer has no chat template (tokenizer_config.json chat_template), so chat examples cannot be rendered; use {prompt, completion} examples");
  const msgs = messages.map((m) => ({ role: m.role, content: m.content }));
  const out: number[] = [];
  const labels: number[] = [];
  let done = "";
  const push = (text: string, trained: boolean) => {
    const t = ids(tok, text);
    out.push(...t);
    labels.push(...(trained ? t : t.map(() => IGNORE)));
  };
  messages.forEach((m, i) => {
    if (m.role !== "assistant" || m.weight === 0) return;
    const prompt = tok.applyChatTemplate(msgs.slice(0, i), { addGenerationPrompt: true });
    const through = tok.applyChatTemplate(msgs.slice(0, i + 1));
    if (!prompt.startsWith(done) || !through.startsWith(prompt)) {
      throw new ChatTemplateError("chat template", "render", "rendering a chat turn by turn does not extend the earlier text (the template rewrites earlier turns), so the assistant tokens cannot be located; use {prompt, completion} examples");
    }
    push(prompt.slice(done.length), false);
    push(through.slice(prompt.length), true);
    done = through;
  });
  return cut({ ids: out, labels }, enc.maxLength);
}

/** Prompt then completion (+ EOS when the tokenizer has one); the loss on the completion. */
export function tokenizePromptCompletion(enc: CausalEncoder, prompt: string, completion: string): TokenizedExample {
  const p = enc.tok.encode(prompt).ids;
  const c = ids(enc.tok, completion);
  if (enc.tok.eosTokenId !== null) c.push(enc.tok.eosTokenId);
  return cut({ ids: [...p, ...c], labels: [...p.map(() => IGNORE), ...c] }, enc.maxLength);
}

function cut(e: { ids: number[]; labels: number[] }, max: number): TokenizedExample {
  return e.ids.length <= max ? e : { ids: e.ids.slice(0, max), labels: e.labels.slice(0, max) };
}

/** One row as a training example; `encodeText` encodes a classification text, `labels` are the class names. */
export function tokenizeRow(
  row: TrainingRow,
  opts: { readonly model: string; readonly causal?: CausalEncoder; readonly encodeText?: (t: string) => number[]; readonly labels?: readonly string[] },
): TokenizedExample {
  if (row.format === "classification") {
    const index = opts.labels!.indexOf(row.label);
    if (index < 0) throw new FineTuneModelError(opts.model, `label ${JSON.stringify(row.label)} is not one of the training file's labels (${opts.labels!.join(", ")})`);
    return { ids: opts.encodeText!(row.text), label: index };
  }
  if (row.format === "chat") return tokenizeChat(opts.causal!, row.messages, opts.model);
  return tokenizePromptCompletion(opts.causal!, row.prompt, row.completion);
}

/** Tokens of an example the loss reads (its non-ignored labels; every token for classification). */
export function trainedTokens(e: TokenizedExample): number {
  return e.labels ? e.labels.filter((l) => l !== IGNORE).length : e.ids.length;
}
