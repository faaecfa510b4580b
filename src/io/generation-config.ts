/**
 * `generation_config.json` (transformers' `GenerationConfig` as saved next to a model): the fields
 * that set up decoding, validated as transformers validates them. A field the file does not set
 * is undefined, so callers apply their own defaults (transformers': `max_length` 20, `do_sample`
 * false, `temperature` 1, `top_k` 50, `top_p` 1, `repetition_penalty` 1). A null value means
 * "off" as in transformers (`top_k: null` is read as 0, i.e. no top-k filtering); other nulls read
 * as unset. Unknown keys are kept in `raw`.
 */
import { existsSync, join, statSync } from "../platform/fs.js";
import { z } from "zod";
import { ConfigError } from "../errors.js";
import { readJsonFile } from "./json-file.js";

export const GENERATION_CONFIG_NAME = "generation_config.json";

export interface GenerationConfig {
  /** The file it was read from (for error messages). */
  readonly file: string;
  readonly maxNewTokens?: number;
  /** Prompt + generated tokens (transformers' `max_length`). */
  readonly maxLength?: number;
  readonly minNewTokens?: number;
  readonly doSample?: boolean;
  readonly temperature?: number;
  /** 0 = no top-k filtering. */
  readonly topK?: number;
  readonly topP?: number;
  readonly minP?: number;
  readonly repetitionPenalty?: number;
  /** End-of-sequence ids (an int in the file is read as a list of one). */
  readonly eosTokenId?: readonly number[];
  readonly padTokenId?: number;
  readonly bosTokenId?: number;
  /** Strings that end generation (`stop_strings`; a string in the file is read as a list of one). */
  readonly stopStrings?: readonly string[];
  /** `num_return_sequences`: samples per prompt. */
  readonly numReturnSequences?: number;
  /** The parsed JSON as read. */
  readonly raw: Readonly<Record<string, unknown>>;
}

const id = z.number().int().nonnegative();
const schema = z.object({
  max_new_tokens: z.number().int().positive().nullish(),
  max_length: z.number().int().positive().nullish(),
  min_new_tokens: z.number().int().nonnegative().nullish(),
  do_sample: z.boolean().nullish(),
  temperature: z.number().nonnegative().nullish(),
  top_k: z.number().int().nonnegative().nullish(),
  top_p: z.number().min(0).max(1).nullish(),
  min_p: z.number().min(0).max(1).nullish(),
  repetition_penalty: z.number().positive().nullish(),
  eos_token_id: z.union([id, z.array(id).min(1)]).nullish(),
  pad_token_id: id.nullish(),
  bos_token_id: id.nullish(),
  stop_strings: z.union([z.string().min(1), z.array(z.string().min(1))]).nullish(),
  num_return_sequences: z.number().int().positive().nullish(),
});

/** Validates a parsed `generation_config.json`; a bad field is a `ConfigError` naming its key. */
export function parseGenerationConfig(raw: unknown, file = GENERATION_CONFIG_NAME): GenerationConfig {
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) throw new ConfigError(file, "", "generation_config.json must hold a JSON object");
  const r = schema.safeParse(raw);
  if (!r.success) {
    const i = r.error.issues[0]!;
    throw new ConfigError(file, i.path.map(String).join("."), i.message);
  }
  const c = r.data;
  const set = <K extends string, V>(key: K, v: V | null | undefined): { [P in K]?: V } => (v === null || v === undefined ? {} : ({ [key]: v } as { [P in K]?: V }));
  return {
    file,
    ...set("maxNewTokens", c.max_new_tokens),
    ...set("maxLength", c.max_length),
    ...set("minNewTokens", c.min_new_tokens),
    ...set("doSample", c.do_sample),
    ...set("temperature", c.temperature),
    ...set("topK", c.top_k === null ? 0 : c.top_k),
    ...set("topP", c.top_p),
    ...set("minP", c.min_p),
    ...set("repetitionPenalty", c.repetition_penalty),
    ...set("eosTokenId", typeof c.eos_token_id === "number" ? [c.eos_token_id] : c.eos_token_id),
    ...set("padTokenId", c.pad_token_id),
    ...set("bosTokenId", c.bos_token_id),
    ...set("stopStrings", typeof c.stop_strings === "string" ? [c.stop_strings] : c.stop_strings),
    ...set("numReturnSequences", c.num_return_sequences),
    raw: raw as Record<string, unknown>,
  };
}

/**
 * Reads `<dir>/generation_config.json` (or the file itself when given a .json path); undefined
 * when the model has none. Invalid JSON or a bad field is a `ConfigError`.
 */
export function loadGenerationConfig(dir: string): GenerationConfig | undefined {
  const file = dir.endsWith(".json") && existsSync(dir) && statSync(dir).isFile() ? dir : join(dir, GENERATION_CONFIG_NAME);
  if (!existsSync(file)) return undefined;
  return parseGenerationConfig(readJsonFile(file), file);
}
