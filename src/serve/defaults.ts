/** Defaults of `peft serve` in a module with no imports, so `peft serve --help` shows them without loading the server. */

/** Default `ServeOptions.itlSloMs` (`peft serve --itl-slo-ms`). */
export const DEFAULT_ITL_SLO_MS = 100;
