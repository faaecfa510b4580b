/**
 * Duplicate-key detection for JSON text. `JSON.parse` silently keeps the last of two equal keys;
 * file formats whose keys are identities (tensor names in a safetensors header) must reject them.
 */

/**
 * Returns the dotted path of the first object key that appears twice in the same object of
 * `text` (which must already be valid JSON), or null if every object's keys are unique.
 * Keys are compared after unescaping, so `"a"` and `"\u0061"` are the same key.
 */
export function findDuplicateKey(text: string): string | null {
  interface Frame {
    readonly keys: Set<string> | null; // null for arrays
    expectKey: boolean;
    lastKey: string;
  }
  const stack: Frame[] = [];
  let i = 0;
  const n = text.length;
  while (i < n) {
    const c = text.charCodeAt(i);
    if (c === 0x22 /* " */) {
      let j = i + 1;
      let escaped = false;
      while (j < n) {
        const d = text.charCodeAt(j);
        if (d === 0x5c /* \ */) {
          escaped = true;
          j += 2;
          continue;
        }
        if (d === 0x22) break;
        j++;
      }
      const top = stack[stack.length - 1];
      if (top && top.keys && top.expectKey) {
        const raw = text.slice(i + 1, j);
        const key = escaped ? (JSON.parse(text.slice(i, j + 1)) as string) : raw;
        if (top.keys.has(key)) {
          return [...stack.slice(0, -1).filter((f) => f.keys).map((f) => f.lastKey), key].join(".");
        }
        top.keys.add(key);
        top.lastKey = key;
        top.expectKey = false;
      }
      i = j + 1;
      continue;
    }
    if (c === 0x7b /* { */) stack.push({ keys: new Set(), expectKey: true, lastKey: "" });
    else if (c === 0x5b /* [ */) stack.push({ keys: null, expectKey: false, lastKey: "" });
    else if (c === 0x7d /* } */ || c === 0x5d /* ] */) stack.pop();
    else if (c === 0x2c /* , */) {
      const top = stack[stack.length - 1];
      if (top && top.keys) top.expectKey = true;
    }
    i++;
  }
  return null;
}
