/**
 * The writer record of the safetensors files peft-ts writes. PEFT's own keys stay as PEFT writes
 * them — `__metadata__.format = "pt"`, and `peft_version` in adapter_config.json names the PEFT
 * release whose format the file follows — and peft-ts adds `__metadata__.peft_ts_version`, which
 * Python (safetensors, PEFT, transformers) ignores. `peft inspect` reads it to say who wrote a file.
 */
import { PEFT_TS_VERSION } from "../util/version.js";

/** The `__metadata__` key holding the version of peft-ts that wrote the file. */
export const WRITER_METADATA_KEY = "peft_ts_version";

/**
 * `metadata` (default PEFT's `{ format: "pt" }`) with peft-ts's writer record; a record already in
 * `metadata` (a file read and written again) is replaced by this writer's.
 */
export function writerMetadata(metadata: Readonly<Record<string, string>> = { format: "pt" }): Record<string, string> {
  return { ...metadata, [WRITER_METADATA_KEY]: PEFT_TS_VERSION };
}

/** The peft-ts version a file's `__metadata__` records, or null (written by Python or another tool). */
export function peftTsWriter(metadata: Readonly<Record<string, string>>): string | null {
  const v = metadata[WRITER_METADATA_KEY];
  return typeof v === "string" && v !== "" ? v : null;
}
