/**
 * The platform seam for hashing and random names: Node's `node:crypto` here; bundlers building
 * for a browser swap in `crypto.browser.ts` (the package.json `browser` field).
 */
import { createHash, randomBytes } from "node:crypto";

/** SHA-256 (hex) of the parts, concatenated (strings as UTF-8). */
export function sha256Hex(...parts: readonly (string | Uint8Array)[]): string {
  const h = createHash("sha256");
  for (const p of parts) h.update(p);
  return h.digest("hex");
}

/** `n` random bytes as hex (for temporary file names). */
export function randomHex(n: number): string {
  return randomBytes(n).toString("hex");
}
