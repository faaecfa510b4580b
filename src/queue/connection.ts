/**
 * The Redis a queue lives on, from a `redis://` URL. BullMQ opens (and owns) its own
 * connections from these options; `maxRetriesPerRequest: null` is what BullMQ requires of the
 * connections its workers block on.
 */
import { QueueUrlError } from "../errors.js";

/** ioredis connection options for BullMQ (host, port, db, credentials). */
export interface RedisConnection {
  readonly host: string;
  readonly port: number;
  readonly db: number;
  readonly username?: string;
  readonly password?: string;
  readonly tls?: Record<string, never>;
  readonly maxRetriesPerRequest: null;
  /** Reconnect after 100 ms, 200 ms … at most 2 s apart (ioredis' default is similar but unbounded in count too). */
  readonly retryStrategy: (times: number) => number;
}

/** Parses `redis://[user:password@]host[:port][/db]` (or `rediss://` for TLS). */
export function parseQueueUrl(url: string): RedisConnection {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new QueueUrlError(url, "not a URL");
  }
  if (u.protocol !== "redis:" && u.protocol !== "rediss:") throw new QueueUrlError(url, `scheme '${u.protocol.replace(/:$/, "")}' is not redis or rediss`);
  if (!u.hostname) throw new QueueUrlError(url, "no host");
  const port = u.port === "" ? 6379 : Number(u.port);
  const path = u.pathname.replace(/^\//, "");
  const db = path === "" ? 0 : Number(path);
  if (!Number.isInteger(db) || db < 0) throw new QueueUrlError(url, `database '${path}' is not a non-negative integer`);
  if (u.search || u.hash) throw new QueueUrlError(url, "query strings and fragments are not understood");
  const host = u.hostname.replace(/^\[(.*)\]$/, "$1");
  return {
    host,
    port,
    db,
    ...(u.username ? { username: decodeURIComponent(u.username) } : {}),
    ...(u.password ? { password: decodeURIComponent(u.password) } : {}),
    ...(u.protocol === "rediss:" ? { tls: {} } : {}),
    maxRetriesPerRequest: null,
    retryStrategy: (times: number) => Math.min(100 * times, 2000),
  };
}

/** The URL with any password replaced by `***` (for logs). */
export function redactQueueUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = "***";
    return u.toString();
  } catch {
    return url;
  }
}
