/**
 * Checks shared by the rank allocators that checkpoint per-module state (IncreLoRA, TriAdaptLoRA):
 * the JSON part of a checkpointed `TrainingAllocator.state()` must have `modules`, `rng` and
 * `events`, and name exactly this adapter's modules. Errors are `AdapterStateError`s of the method.
 */
import { AdapterStateError } from "../../errors.js";

export interface ModuleAllocatorJson {
  readonly modules: Record<string, unknown>;
  readonly rng: unknown;
  readonly events: readonly unknown[];
}

/** The allocator's state JSON, checked against the adapter's module names; `bad` throws the method's error for later checks. */
export function checkedAllocatorJson<S extends ModuleAllocatorJson>(
  method: string,
  label: string,
  json: unknown,
  moduleNames: readonly string[],
): { state: S; bad: (issue: string) => never } {
  const bad = (issue: string): never => {
    throw new AdapterStateError(method, `checkpointed allocator state: ${issue}`);
  };
  const j = json as Partial<S> | null;
  if (!j || typeof j !== "object" || !j.modules || !j.rng || !Array.isArray(j.events)) bad(`not ${label} allocator's state`);
  const names = Object.keys(j!.modules!);
  if (names.length !== moduleNames.length || moduleNames.some((n) => !(n in j!.modules!))) bad(`modules ${JSON.stringify(names)} are not the adapter's`);
  return { state: j as S, bad };
}
