/** Helpers for tuners' `trainConfig` (the PEFT config `peft train --method <name>` creates). */
import { ConfigError } from "../../errors.js";
import type { TrainMethodOptions } from "./types.js";

/** `--feedforward` is an (IA)³ option; other methods refuse it rather than ignore it. */
export function rejectFeedforward(o: TrainMethodOptions, method: string): void {
  if (o.feedforward !== null) throw new ConfigError("peft train", "--feedforward", `does not apply to --method ${method}`);
}

/** `modules_to_save` when the run trains an output module in full (sequence classification). */
export function savedModules(o: TrainMethodOptions): { modules_to_save?: string[] } {
  return o.modulesToSave.length > 0 ? { modules_to_save: [...o.modulesToSave] } : {};
}
