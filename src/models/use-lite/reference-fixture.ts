/** Reader for `test/fixtures/use-lite/reference.json` (written by `make-reference.ts`), for the tests. */
import { readJsonObject } from "../../io/json-file.js";
import { fixturePath } from "../../util/paths.js";

export interface UseLiteReference {
  readonly tokenization: readonly { readonly text: string; readonly ids: readonly number[] }[];
  readonly embeddings: {
    readonly texts: readonly string[];
    readonly dim: number;
    readonly batchVsSingleMaxAbsDiff: number;
    readonly values: readonly (readonly number[])[];
  };
}

export const USE_LITE_REFERENCE_FILE = fixturePath("use-lite", "reference.json");

export function readUseLiteReference(): UseLiteReference {
  return readJsonObject(USE_LITE_REFERENCE_FILE) as unknown as UseLiteReference;
}

/** Largest |a − b| over two equally long vectors. */
export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) return Infinity;
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}
