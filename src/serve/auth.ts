/** `--api-key`: `Authorization: Bearer <key>`, compared in constant time. */
import { createHash, timingSafeEqual } from "node:crypto";
import { AuthenticationError } from "../errors.js";

const digest = (s: string): Buffer => createHash("sha256").update(s, "utf8").digest();

/**
 * A checker for one key. Both sides are hashed first, so the comparison takes the same time
 * whatever the length or content of the presented key (no early exit that leaks a prefix).
 */
export function bearerChecker(apiKey: string): (authorization: string | undefined) => void {
  const want = digest(apiKey);
  return (authorization) => {
    if (authorization === undefined) throw new AuthenticationError("missing Authorization header");
    const m = /^Bearer\s+(.+)$/iu.exec(authorization.trim());
    if (!m) throw new AuthenticationError("the Authorization header is not 'Bearer <key>'");
    if (!timingSafeEqual(digest(m[1]!), want)) throw new AuthenticationError("wrong API key");
  };
}
