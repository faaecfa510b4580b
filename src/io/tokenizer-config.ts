/**
 * `tokenizer_config.json` as transformers writes it: the special tokens (`bos_token`, `eos_token`,
 * `unk_token`, `pad_token`, … as strings or serialised `AddedToken` objects), `added_tokens_decoder`,
 * `add_bos_token` / `add_eos_token`, `model_max_length` and the chat template (a string, or the
 * list of `{name, template}` objects transformers writes when a tokenizer has several). Strictly
 * validated: a key of the wrong type is a `ConfigError` naming it. Unknown keys are kept in `raw`.
 */
import { existsSync, join, readFileSync, readdirSync } from "../platform/fs.js";
import { ConfigError } from "../errors.js";
import { isJsonObject, readJsonObject } from "./json-file.js";

export const TOKENIZER_CONFIG_NAME = "tokenizer_config.json";

/** One entry of `added_tokens_decoder` (transformers' `AddedToken`). */
export interface AddedTokenSpec {
  readonly content: string;
  readonly special: boolean;
  readonly lstrip: boolean;
  readonly rstrip: boolean;
  readonly normalized: boolean;
  readonly singleWord: boolean;
}

/** A chat template: its Jinja source, or named templates (`default`, `tool_use`, `rag`, …). */
export type ChatTemplateSource = string | Readonly<Record<string, string>>;

/** The special tokens transformers passes to chat templates (`special_tokens_map`). */
export const SPECIAL_TOKEN_KEYS = ["bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"] as const;
export type SpecialTokenKey = (typeof SPECIAL_TOKEN_KEYS)[number];

export interface TokenizerConfig {
  /** The file it was read from (for error messages). */
  readonly file: string;
  /** Special tokens by key (`bos_token` …); null when unset. */
  readonly specialTokens: Readonly<Record<SpecialTokenKey, string | null>>;
  readonly bosToken: string | null;
  readonly eosToken: string | null;
  readonly unkToken: string | null;
  readonly padToken: string | null;
  /** `additional_special_tokens` (or transformers 5's `extra_special_tokens`). */
  readonly additionalSpecialTokens: readonly string[];
  /** `add_bos_token` / `add_eos_token`; null when the file does not say. */
  readonly addBosToken: boolean | null;
  readonly addEosToken: boolean | null;
  /** `added_tokens_decoder`, by id. */
  readonly addedTokensDecoder: ReadonlyMap<number, AddedTokenSpec>;
  /** `model_max_length`; null when unset or transformers' "very large" placeholder (1e30). */
  readonly modelMaxLength: number | null;
  /** `chat_template`; null when the tokenizer has none. */
  readonly chatTemplate: ChatTemplateSource | null;
  readonly paddingSide: "left" | "right" | null;
  readonly truncationSide: "left" | "right" | null;
  readonly tokenizerClass: string | null;
  readonly cleanUpTokenizationSpaces: boolean | null;
  /** The parsed JSON as read. */
  readonly raw: Readonly<Record<string, unknown>>;
}

/** transformers writes `int(1e30)` when a tokenizer has no maximum length. */
const VERY_LARGE = 1e15;

/** A special token: a string, null, or a serialised AddedToken (`{"__type": "AddedToken", "content": …}`). */
function tokenOf(v: unknown, file: string, key: string): string | null {
  if (v === undefined || v === null) return null;
  if (typeof v === "string") return v;
  if (isJsonObject(v) && typeof v["content"] === "string") return v["content"];
  throw new ConfigError(file, key, `must be a token string, null or an AddedToken object with a string "content", got ${JSON.stringify(v)}`);
}

function boolOf(v: unknown, file: string, key: string): boolean | null {
  if (v === undefined || v === null) return null;
  if (typeof v !== "boolean") throw new ConfigError(file, key, `must be true or false, got ${JSON.stringify(v)}`);
  return v;
}

function stringOf(v: unknown, file: string, key: string): string | null {
  if (v === undefined || v === null) return null;
  if (typeof v !== "string") throw new ConfigError(file, key, `must be a string, got ${JSON.stringify(v)}`);
  return v;
}

/** `padding_side` / `truncation_side` (any case); null when unset. */
export function sideOf(v: unknown, file: string, key: string): "left" | "right" | null {
  if (v === undefined || v === null) return null;
  const s = typeof v === "string" ? v.toLowerCase() : v;
  if (s === "left" || s === "right") return s;
  throw new ConfigError(file, key, `must be "left" or "right", got ${JSON.stringify(v)}`);
}

function addedTokensOf(v: unknown, file: string): Map<number, AddedTokenSpec> {
  const out = new Map<number, AddedTokenSpec>();
  if (v === undefined || v === null) return out;
  if (!isJsonObject(v)) throw new ConfigError(file, "added_tokens_decoder", "must be an object mapping token ids to AddedToken objects");
  for (const [id, t] of Object.entries(v)) {
    const key = `added_tokens_decoder.${id}`;
    if (!/^(0|[1-9]\d*)$/u.test(id)) throw new ConfigError(file, key, "token ids must be non-negative integers");
    if (!isJsonObject(t) || typeof t["content"] !== "string") throw new ConfigError(file, key, `must be an AddedToken object with a string "content", got ${JSON.stringify(t)}`);
    const flag = (name: string, dflt: boolean): boolean => boolOf(t[name], file, `${key}.${name}`) ?? dflt;
    out.set(Number(id), {
      content: t["content"],
      special: flag("special", false),
      lstrip: flag("lstrip", false),
      rstrip: flag("rstrip", false),
      normalized: flag("normalized", true),
      singleWord: flag("single_word", false),
    });
  }
  return out;
}

function tokenListOf(v: unknown, file: string, key: string): string[] {
  if (v === undefined || v === null) return [];
  // transformers 5 may write named extra special tokens as an object
  const items = Array.isArray(v) ? v.map((t, i) => [String(i), t] as const) : isJsonObject(v) ? Object.entries(v) : null;
  if (items === null) throw new ConfigError(file, key, `must be a list of tokens, got ${JSON.stringify(v)}`);
  return items.map(([i, t]) => {
    const s = tokenOf(t, file, `${key}.${i}`);
    if (s === null) throw new ConfigError(file, `${key}.${i}`, "must be a token, not null");
    return s;
  });
}

/** `chat_template`: a string, or a list of `{name, template}` (unique names), as transformers saves several. */
export function parseChatTemplateField(v: unknown, file: string, key = "chat_template"): ChatTemplateSource | null {
  if (v === undefined || v === null) return null;
  if (typeof v === "string") return v;
  if (!Array.isArray(v)) throw new ConfigError(file, key, `must be a template string or a list of {"name", "template"} objects, got ${typeof v}`);
  const named: Record<string, string> = {};
  v.forEach((t, i) => {
    if (!isJsonObject(t) || typeof t["name"] !== "string" || typeof t["template"] !== "string") {
      throw new ConfigError(file, `${key}.${i}`, `must be an object with string "name" and "template", got ${JSON.stringify(t)?.slice(0, 80)}`);
    }
    if (Object.hasOwn(named, t["name"])) throw new ConfigError(file, `${key}.${i}.name`, `duplicate template name ${JSON.stringify(t["name"])}`);
    named[t["name"]] = t["template"];
  });
  return named;
}

/** Validates a parsed `tokenizer_config.json`. */
export function parseTokenizerConfig(raw: unknown, file = "tokenizer_config.json"): TokenizerConfig {
  if (!isJsonObject(raw)) throw new ConfigError(file, "", "tokenizer_config.json must hold a JSON object");
  const special = Object.fromEntries(SPECIAL_TOKEN_KEYS.map((k) => [k, tokenOf(raw[k], file, k)])) as Record<SpecialTokenKey, string | null>;
  const rawMax = raw["model_max_length"];
  if (rawMax !== undefined && rawMax !== null && !(typeof rawMax === "number" && Number.isInteger(rawMax) && rawMax > 0)) {
    throw new ConfigError(file, "model_max_length", `must be a positive integer, got ${JSON.stringify(rawMax)}`);
  }
  const extraKey = raw["additional_special_tokens"] !== undefined ? "additional_special_tokens" : "extra_special_tokens";
  return {
    file,
    specialTokens: special,
    bosToken: special.bos_token,
    eosToken: special.eos_token,
    unkToken: special.unk_token,
    padToken: special.pad_token,
    additionalSpecialTokens: tokenListOf(raw[extraKey], file, extraKey),
    addBosToken: boolOf(raw["add_bos_token"], file, "add_bos_token"),
    addEosToken: boolOf(raw["add_eos_token"], file, "add_eos_token"),
    addedTokensDecoder: addedTokensOf(raw["added_tokens_decoder"], file),
    modelMaxLength: typeof rawMax === "number" && rawMax < VERY_LARGE ? rawMax : null,
    chatTemplate: parseChatTemplateField(raw["chat_template"], file),
    paddingSide: sideOf(raw["padding_side"], file, "padding_side"),
    truncationSide: sideOf(raw["truncation_side"], file, "truncation_side"),
    tokenizerClass: stringOf(raw["tokenizer_class"], file, "tokenizer_class"),
    cleanUpTokenizationSpaces: boolOf(raw["clean_up_tokenization_spaces"], file, "clean_up_tokenization_spaces"),
    raw,
  };
}

/**
 * The chat templates stored as files next to tokenizer_config.json (transformers ≥ 4.47 writes
 * `chat_template.jinja`, and `additional_chat_templates/<name>.jinja` for named ones) in the
 * config's `chat_template` form; null when there are none.
 */
function chatTemplateFiles(dir: string): string | { name: string; template: string }[] | null {
  const main = join(dir, "chat_template.jinja");
  const extraDir = join(dir, "additional_chat_templates");
  const base = existsSync(main) ? readFileSync(main, "utf8") : null;
  const extras = existsSync(extraDir) ? readdirSync(extraDir).filter((f) => f.endsWith(".jinja")).sort() : [];
  if (extras.length === 0) return base;
  return [
    ...(base !== null ? [{ name: "default", template: base }] : []),
    ...extras.map((f) => ({ name: f.slice(0, -".jinja".length), template: readFileSync(join(extraDir, f), "utf8") })),
  ];
}

/**
 * `<dir>/tokenizer_config.json` as parsed JSON (`{}` when absent), with the chat templates of
 * `chat_template.jinja` / `additional_chat_templates/` in place of its `chat_template` (they take
 * precedence, as in transformers).
 */
export function tokenizerConfigJson(dir: string): Record<string, unknown> {
  const file = join(dir, TOKENIZER_CONFIG_NAME);
  const config = existsSync(file) ? readJsonObject(file) : {};
  const templates = chatTemplateFiles(dir);
  return templates === null ? config : { ...config, chat_template: templates };
}

/** Reads and validates `<dir>/tokenizer_config.json` (and its template files); undefined when the folder has neither. */
export function loadTokenizerConfig(dir: string): TokenizerConfig | undefined {
  const file = join(dir, TOKENIZER_CONFIG_NAME);
  const raw = tokenizerConfigJson(dir);
  if (!existsSync(file) && raw["chat_template"] === undefined) return undefined;
  return parseTokenizerConfig(raw, file);
}
