/**
 * The peft-ts version, as a constant (the browser bundle cannot read package.json); a test keeps
 * it equal to package.json's `version`. Files peft-ts writes record it (`writerMetadata`).
 */
export const PEFT_TS_VERSION = "0.1.0";

/** The PEFT release whose file formats and option names peft-ts reads and writes (`peft_version` of the adapter configs it writes). */
export const PEFT_FORMAT_VERSION = "0.21.0";
