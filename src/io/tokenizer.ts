/**
 * Hugging Face tokenizers: `tokenizer.json` (+ optional `tokenizer_config.json`) through
 * `@huggingface/tokenizers`, with what transformers adds on top: padding (left/right, to the
 * longest row or to a fixed length), truncation that keeps the special tokens (strategy
 * `longest_first` for pairs, as the Rust tokenizers), int64 batch tensors, and the pad token /
 * sides / `model_max_length` read from the config files. The special tokens, `add_bos_token` /
 * `add_eos_token`, `added_tokens_decoder` and the chat template come from `tokenizer_config.json`
 * (see tokenizer-config.ts; `chat_template.jinja` and `additional_chat_templates/*.jinja` next to it
 * take precedence, as in transformers), and `applyChatTemplate` / `encodeChat` render chats.
 */
import { existsSync, join } from "../platform/fs.js";
import { Tokenizer } from "@huggingface/tokenizers";
import { ConfigError, TokenizerError } from "../errors.js";
import { tensor, type Tensor } from "../tensor.js";
import { type ChatMessage, type ChatTemplateOptions, applyChatTemplate } from "./chat-template.js";
import { isJsonObject, readJsonObject } from "./json-file.js";
import { TOKENIZER_CONFIG_NAME, type ChatTemplateSource, type TokenizerConfig, parseTokenizerConfig, sideOf, tokenizerConfigJson } from "./tokenizer-config.js";

export type Side = "left" | "right";

/** How a batch is padded: to its longest row, or every row to `maxLength`. */
export type Padding = "longest" | "max_length";

export interface TokenizerSettings {
  /** Padding token and its id; null when the tokenizer has none (GPT-2, Llama). */
  readonly padToken: string | null;
  readonly padTokenId: number | null;
  readonly paddingSide: Side;
  readonly truncationSide: Side;
  /** `model_max_length` (null when unset or transformers' "very large" placeholder). */
  readonly modelMaxLength: number | null;
}

/** Overrides for {@link TokenizerSettings}; `padToken` must be in the vocabulary. */
export interface TokenizerOverrides {
  readonly padToken?: string;
  readonly paddingSide?: Side;
  readonly truncationSide?: Side;
  readonly modelMaxLength?: number | null;
}

export interface EncodeOptions {
  /** Add the post-processor's special tokens ([CLS]/[SEP], BOS…). Default true. */
  readonly addSpecialTokens?: boolean;
  /** Second sequence of a pair (sentence-pair classification). */
  readonly textPair?: string;
  /** Truncate to `maxLength` (or `modelMaxLength`), keeping the special tokens. Default false. */
  readonly truncation?: boolean;
  readonly maxLength?: number;
}

export interface BatchEncodeOptions extends Omit<EncodeOptions, "textPair"> {
  /** Second sequences, one per text. */
  readonly pairs?: readonly string[];
  /** Default "longest". "max_length" pads every row to `maxLength` (or `modelMaxLength`). */
  readonly padding?: Padding;
}

export interface Encoded {
  readonly ids: number[];
  readonly tokens: string[];
  readonly attentionMask: number[];
  readonly tokenTypeIds: number[];
}

export interface BatchEncoding {
  /** int64 [batch, length]. */
  readonly inputIds: Tensor<"int64">;
  /** int64 [batch, length], 1 for real tokens, 0 for padding. */
  readonly attentionMask: Tensor<"int64">;
  /** int64 [batch, length] segment ids (0 for the first sequence and padding). */
  readonly tokenTypeIds: Tensor<"int64">;
  /** Unpadded length of each row. */
  readonly lengths: number[];
}

const PLACEHOLDER = "\u0000\uffffpeft-ts:";

/** Chat options of a tokenizer: the special tokens and templates come from its config. */
export type TokenizerChatOptions = Omit<ChatTemplateOptions, "chatTemplate" | "bosToken" | "eosToken" | "unkToken" | "padToken" | "source">;

interface Content {
  readonly ids: number[];
  readonly tokens: string[];
}

export class HfTokenizer {
  readonly padToken: string | null;
  readonly padTokenId: number | null;
  readonly paddingSide: Side;
  readonly truncationSide: Side;
  readonly modelMaxLength: number | null;
  /** tokenizer_config.json as parsed (special tokens, added tokens, chat template…). */
  readonly config: TokenizerConfig;
  readonly bosToken: string | null;
  readonly bosTokenId: number | null;
  readonly eosToken: string | null;
  readonly eosTokenId: number | null;
  readonly unkToken: string | null;
  readonly unkTokenId: number | null;
  /** `add_bos_token` / `add_eos_token` of tokenizer_config.json (null when absent; the post-processor in tokenizer.json decides). */
  readonly addBosToken: boolean | null;
  readonly addEosToken: boolean | null;
  /** The chat template(s); null when the tokenizer has none. */
  readonly chatTemplate: ChatTemplateSource | null;

  private constructor(
    /** tokenizer.json path (or a label) for error messages. */
    readonly file: string,
    private readonly tok: Tokenizer,
    settings: TokenizerSettings,
    config: TokenizerConfig,
    ids: { readonly bos: number | null; readonly eos: number | null; readonly unk: number | null },
  ) {
    this.config = config;
    this.bosToken = config.bosToken;
    this.bosTokenId = ids.bos;
    this.eosToken = config.eosToken;
    this.eosTokenId = ids.eos;
    this.unkToken = config.unkToken;
    this.unkTokenId = ids.unk;
    this.addBosToken = config.addBosToken;
    this.addEosToken = config.addEosToken;
    this.chatTemplate = config.chatTemplate;
    this.padToken = settings.padToken;
    this.padTokenId = settings.padTokenId;
    this.paddingSide = settings.paddingSide;
    this.truncationSide = settings.truncationSide;
    this.modelMaxLength = settings.modelMaxLength;
  }

  /**
   * Builds a tokenizer from parsed `tokenizer.json` and `tokenizer_config.json` objects.
   * `configFile` names the config in errors about its keys.
   */
  static fromJson(
    tokenizerJson: unknown,
    tokenizerConfig: unknown = {},
    file = "tokenizer.json",
    overrides: TokenizerOverrides = {},
    configFile = "tokenizer_config.json",
  ): HfTokenizer {
    if (!isJsonObject(tokenizerJson)) throw new ConfigError(file, "", "tokenizer.json must hold a JSON object");
    if (!isJsonObject(tokenizerJson["model"])) throw new ConfigError(file, "model", "missing or not an object");
    if (!isJsonObject(tokenizerConfig)) throw new ConfigError(configFile, "", "tokenizer_config.json must hold a JSON object");
    const model = tokenizerJson["model"];
    // The Rust format may omit null components; the JS library wants every key present.
    const json: Record<string, unknown> = {
      normalizer: null,
      pre_tokenizer: null,
      post_processor: null,
      decoder: null,
      added_tokens: [],
      ...tokenizerJson,
    };
    const config: Record<string, unknown> = { ...tokenizerConfig };
    // WordLevel models keep their unk token in tokenizer.json; the library reads it from the config.
    if (model["type"] === "WordLevel" && config["unk_token"] === undefined && typeof model["unk_token"] === "string") {
      config["unk_token"] = model["unk_token"];
    }
    let tok: Tokenizer;
    try {
      tok = new Tokenizer(json, config);
    } catch (e) {
      throw new ConfigError(file, "", `cannot build the tokenizer: ${(e as Error).message}`, { cause: e });
    }
    const parsed = parseTokenizerConfig(tokenizerConfig, configFile);
    const padding = isJsonObject(json["padding"]) ? json["padding"] : {};
    let padToken: string | null;
    if (overrides.padToken !== undefined) padToken = overrides.padToken;
    else if (config["pad_token"] !== undefined) padToken = parsed.padToken;
    else padToken = typeof padding["pad_token"] === "string" ? padding["pad_token"] : null;
    let padTokenId: number | null = null;
    if (padToken !== null) {
      const id = tok.token_to_id(padToken);
      if (id === undefined) {
        const where = overrides.padToken !== undefined ? "padToken override" : configFile;
        throw new ConfigError(where, "pad_token", `'${padToken}' is not in the vocabulary of ${file}`);
      }
      padTokenId = id;
    }
    // the special tokens a config names must be tokens of tokenizer.json
    const idOf = (token: string | null, key: string): number | null => {
      if (token === null) return null;
      const id = tok.token_to_id(token);
      if (id === undefined) throw new ConfigError(configFile, key, `'${token}' is not in the vocabulary of ${file}`);
      return id;
    };
    const ids = { bos: idOf(parsed.bosToken, "bos_token"), eos: idOf(parsed.eosToken, "eos_token"), unk: idOf(parsed.unkToken, "unk_token") };
    const settings: TokenizerSettings = {
      padToken,
      padTokenId,
      paddingSide: overrides.paddingSide ?? parsed.paddingSide ?? sideOf(padding["direction"], file, "padding.direction") ?? "right",
      truncationSide: overrides.truncationSide ?? parsed.truncationSide ?? "right",
      modelMaxLength: overrides.modelMaxLength !== undefined ? overrides.modelMaxLength : parsed.modelMaxLength,
    };
    return new HfTokenizer(file, tok, settings, parsed, ids);
  }

  /**
   * The chat as prompt text (transformers' `apply_chat_template(messages, tokenize=False)`), with
   * this tokenizer's template(s) and special tokens. `template` picks a named template or gives a
   * Jinja source.
   */
  applyChatTemplate(messages: readonly ChatMessage[], options: TokenizerChatOptions = {}): string {
    const c = this.config;
    const extra: Record<string, unknown> = {};
    for (const k of ["sep_token", "cls_token", "mask_token"] as const) if (c.specialTokens[k] !== null) extra[k] = c.specialTokens[k];
    if (c.additionalSpecialTokens.length > 0) extra["additional_special_tokens"] = c.additionalSpecialTokens;
    return applyChatTemplate(messages, {
      ...options,
      variables: { ...extra, ...options.variables },
      chatTemplate: c.chatTemplate,
      bosToken: c.bosToken,
      eosToken: c.eosToken,
      unkToken: c.unkToken,
      padToken: this.padToken,
      source: c.file,
    });
  }

  /**
   * The chat's token ids (transformers' `apply_chat_template(messages, tokenize=True)`): the
   * rendered text encoded without the post-processor's special tokens, since the template writes
   * its own (so a BOS is never doubled).
   */
  encodeChat(messages: readonly ChatMessage[], options: TokenizerChatOptions = {}): number[] {
    return this.encode(this.applyChatTemplate(messages, options), { addSpecialTokens: false }).ids;
  }

  /** Reads `tokenizer.json` and, if given and present, `tokenizer_config.json`. */
  static fromFiles(tokenizerJsonPath: string, tokenizerConfigPath?: string, overrides: TokenizerOverrides = {}): HfTokenizer {
    const json = readJsonObject(tokenizerJsonPath, "peft-ts needs the fast-tokenizer file tokenizer.json (save it with transformers' save_pretrained)");
    const config = tokenizerConfigPath && existsSync(tokenizerConfigPath) ? readJsonObject(tokenizerConfigPath) : {};
    return HfTokenizer.fromJson(json, config, tokenizerJsonPath, overrides, tokenizerConfigPath ?? "tokenizer_config.json");
  }

  /** Vocabulary size including added tokens (ids run from 0 to vocabSize-1). */
  get vocabSize(): number {
    let max = -1;
    for (const id of this.tok.get_vocab(true).values()) if (id > max) max = id;
    return max + 1;
  }

  tokenToId(token: string): number | undefined {
    return this.tok.token_to_id(token);
  }

  idToToken(id: number): string | undefined {
    return this.tok.id_to_token(id);
  }

  /** The text's tokens and ids, without special tokens. */
  private content(text: string): Content {
    // (The library's `Encoding` type does not resolve under NodeNext, so state its shape here.)
    const e = this.tok.encode(text, { add_special_tokens: false }) as { ids: (number | undefined)[]; tokens: string[] };
    e.ids.forEach((id, i) => {
      if (id === undefined) {
        throw new TokenizerError(this.file, `token '${e.tokens[i]}' of ${JSON.stringify(text)} is not in the vocabulary and the tokenizer has no unk token`);
      }
    });
    return { ids: e.ids as number[], tokens: e.tokens };
  }

  /** Runs the post-processor on placeholder tokens so the content ids come from the model, not a string lookup. */
  private assemble(a: Content, b: Content | null, addSpecial: boolean): Encoded {
    const pp = this.tok.post_processor;
    if (pp === null) {
      const ids = b ? [...a.ids, ...b.ids] : [...a.ids];
      const tokens = b ? [...a.tokens, ...b.tokens] : [...a.tokens];
      const types = [...a.ids.map(() => 0), ...(b ? b.ids.map(() => 1) : [])];
      return { ids, tokens, attentionMask: ids.map(() => 1), tokenTypeIds: types };
    }
    const ph = (tag: string, n: number): string[] => Array.from({ length: n }, (_, i) => `${PLACEHOLDER}${tag}:${i}`);
    const out = pp(ph("A", a.ids.length), b ? ph("B", b.ids.length) : null, addSpecial) as {
      tokens: string[];
      tokens_pair?: string[] | null;
      token_type_ids?: number[];
    };
    const marked = out.tokens_pair ? [...out.tokens, ...out.tokens_pair] : out.tokens;
    const ids: number[] = [];
    const tokens: string[] = [];
    const derivedTypes: number[] = [];
    for (const t of marked) {
      if (t.startsWith(PLACEHOLDER)) {
        const [tag, idx] = t.slice(PLACEHOLDER.length).split(":") as [string, string];
        const src = tag === "A" ? a : b!;
        ids.push(src.ids[Number(idx)]!);
        tokens.push(src.tokens[Number(idx)]!);
        derivedTypes.push(tag === "A" ? 0 : 1);
      } else {
        const id = this.tok.token_to_id(t);
        if (id === undefined) throw new TokenizerError(this.file, `special token '${t}' of the post-processor is not in the vocabulary`);
        ids.push(id);
        tokens.push(t);
        derivedTypes.push(derivedTypes.length ? derivedTypes[derivedTypes.length - 1]! : 0);
      }
    }
    const types = out.token_type_ids && out.token_type_ids.length === ids.length ? out.token_type_ids : derivedTypes;
    return { ids, tokens, attentionMask: ids.map(() => 1), tokenTypeIds: [...types] };
  }

  /** Number of special tokens the post-processor adds (for a single text or a pair). */
  private numSpecialTokens(pair: boolean): number {
    const empty: Content = { ids: [], tokens: [] };
    return this.assemble(empty, pair ? empty : null, true).ids.length;
  }

  private resolveMaxLength(maxLength: number | undefined, what: string): number {
    const m = maxLength ?? this.modelMaxLength;
    if (m === null) {
      throw new TokenizerError(this.file, `${what} needs a length: pass maxLength (the tokenizer has no model_max_length)`);
    }
    if (!Number.isInteger(m) || m <= 0) throw new TokenizerError(this.file, `maxLength must be a positive integer, got ${m}`);
    return m;
  }

  private cut(c: Content, n: number): Content {
    if (c.ids.length <= n) return c;
    const [s, e] = this.truncationSide === "right" ? [0, n] : [c.ids.length - n, c.ids.length];
    return { ids: c.ids.slice(s, e), tokens: c.tokens.slice(s, e) };
  }

  /** Truncation as the Rust tokenizers' `longest_first` strategy, keeping room for special tokens. */
  private truncate(a: Content, b: Content | null, addSpecial: boolean, maxLength: number): [Content, Content | null] {
    const budget = maxLength - (addSpecial ? this.numSpecialTokens(b !== null) : 0);
    if (budget < 0) throw new TokenizerError(this.file, `maxLength ${maxLength} is shorter than the special tokens alone`);
    if (b === null) return [this.cut(a, budget), null];
    if (a.ids.length + b.ids.length <= budget) return [a, b];
    const swap = a.ids.length > b.ids.length;
    let n1 = swap ? b.ids.length : a.ids.length;
    let n2 = n1 > budget ? n1 : Math.max(n1, budget - n1);
    if (n1 + n2 > budget) {
      n1 = Math.floor(budget / 2);
      n2 = n1 + (budget % 2);
    }
    if (swap) [n1, n2] = [n2, n1];
    return [this.cut(a, n1), this.cut(b, n2)];
  }

  /** Encodes one text (or pair): ids, tokens, attention mask and token type ids, unpadded. */
  encode(text: string, options: EncodeOptions = {}): Encoded {
    const addSpecial = options.addSpecialTokens ?? true;
    let a = this.content(text);
    let b = options.textPair !== undefined ? this.content(options.textPair) : null;
    if (options.truncation) [a, b] = this.truncate(a, b, addSpecial, this.resolveMaxLength(options.maxLength, "truncation"));
    return this.assemble(a, b, addSpecial);
  }

  /** Encodes a batch into int64 tensors, padded on `paddingSide` with `padTokenId`. */
  encodeBatch(texts: readonly string[], options: BatchEncodeOptions = {}): BatchEncoding {
    if (options.pairs && options.pairs.length !== texts.length) {
      throw new TokenizerError(this.file, `got ${texts.length} texts but ${options.pairs.length} pairs`);
    }
    const rows = texts.map((t, i) =>
      this.encode(t, {
        ...(options.pairs ? { textPair: options.pairs[i]! } : {}),
        addSpecialTokens: options.addSpecialTokens ?? true,
        truncation: options.truncation ?? false,
        ...(options.maxLength !== undefined ? { maxLength: options.maxLength } : {}),
      }),
    );
    const lengths = rows.map((r) => r.ids.length);
    const longest = lengths.reduce((m, n) => Math.max(m, n), 0);
    let width = longest;
    if (options.padding === "max_length") {
      width = this.resolveMaxLength(options.maxLength, "padding to max_length");
      const over = lengths.findIndex((n) => n > width);
      if (over >= 0) {
        throw new TokenizerError(this.file, `row ${over} has ${lengths[over]} tokens, more than the padding length ${width}; pass truncation: true`);
      }
    }
    if (lengths.some((n) => n < width) && this.padTokenId === null) {
      throw new TokenizerError(
        this.file,
        "padding is needed but the tokenizer has no pad token; set pad_token in tokenizer_config.json or pass { padToken } (e.g. the EOS token, as is usual for GPT-2/Llama)",
      );
    }
    const n = texts.length * width;
    const ids = new BigInt64Array(n).fill(BigInt(this.padTokenId ?? 0));
    const mask = new BigInt64Array(n);
    const types = new BigInt64Array(n);
    rows.forEach((r, i) => {
      const off = i * width + (this.paddingSide === "left" ? width - r.ids.length : 0);
      for (let j = 0; j < r.ids.length; j++) {
        ids[off + j] = BigInt(r.ids[j]!);
        mask[off + j] = 1n;
        types[off + j] = BigInt(r.tokenTypeIds[j]!);
      }
    });
    const shape = [texts.length, width];
    return { inputIds: tensor("int64", shape, ids), attentionMask: tensor("int64", shape, mask), tokenTypeIds: tensor("int64", shape, types), lengths };
  }

  /** Turns ids back into text (bigints accepted, so a row of `inputIds.data` works). */
  decode(ids: ArrayLike<number | bigint>, options: { skipSpecialTokens?: boolean } = {}): string {
    const list = Array.from(ids, (v) => Number(v));
    if (list.length === 0) return "";
    for (const id of list) {
      if (!Number.isInteger(id) || this.tok.id_to_token(id) === undefined) {
        throw new TokenizerError(this.file, `cannot decode id ${id}: not in the vocabulary`);
      }
    }
    return this.tok.decode(list, { skip_special_tokens: options.skipSpecialTokens ?? false });
  }
}

/**
 * Loads `<dir>/tokenizer.json` and, when present, `<dir>/tokenizer_config.json` (and the chat
 * templates in `chat_template.jinja` / `additional_chat_templates/`).
 */
export function loadTokenizer(dir: string, overrides: TokenizerOverrides = {}): HfTokenizer {
  const jsonPath = join(dir, "tokenizer.json");
  const json = readJsonObject(jsonPath, "peft-ts needs the fast-tokenizer file tokenizer.json (save it with transformers' save_pretrained)");
  return HfTokenizer.fromJson(json, tokenizerConfigJson(dir), jsonPath, overrides, join(dir, TOKENIZER_CONFIG_NAME));
}
