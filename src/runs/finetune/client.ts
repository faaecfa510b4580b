/**
 * A client of a server's fine-tuning jobs API (`peft jobs` talks to `peft serve` through it):
 * plain `fetch` against OpenAI's routes; an error answer becomes a `RemoteServerError` carrying
 * the server's error code.
 */
import { RemoteServerError } from "../../errors.js";
import type { FineTuningJob, JobEventObject, ListPage } from "./service.js";

export interface JobsClientOptions {
  /** The server's base URL (`http://host:port`, with or without `/v1`). */
  readonly url: string;
  readonly apiKey?: string;
}

export class JobsClient {
  private readonly base: string;

  constructor(private readonly opts: JobsClientOptions) {
    this.base = opts.url.replace(/\/+$/u, "").replace(/\/v1$/u, "");
  }

  private async call<T>(method: "GET" | "POST", path: string): Promise<T> {
    const url = `${this.base}/v1${path}`;
    let res: Response;
    try {
      res = await fetch(url, { method, headers: this.opts.apiKey ? { authorization: `Bearer ${this.opts.apiKey}` } : {} });
    } catch (e) {
      const cause = (e as { cause?: { code?: string; message?: string } }).cause;
      throw new RemoteServerError(url, null, null, cause?.code ?? cause?.message ?? (e as Error).message);
    }
    const text = await res.text();
    let body: unknown = null;
    try {
      body = JSON.parse(text);
    } catch {
      // not JSON: reported below when the status is an error
    }
    if (!res.ok) {
      const err = (body as { error?: { message?: string; code?: string } } | null)?.error;
      throw new RemoteServerError(url, res.status, err?.code ?? null, err?.message ?? text.slice(0, 200));
    }
    if (body === null) throw new RemoteServerError(url, res.status, null, "the answer is not JSON; is this a peft serve (or OpenAI-compatible) URL?");
    return body as T;
  }

  async list(opts: { after?: string; limit?: number } = {}): Promise<ListPage<FineTuningJob>> {
    const q = new URLSearchParams();
    if (opts.after !== undefined) q.set("after", opts.after);
    if (opts.limit !== undefined) q.set("limit", String(opts.limit));
    return await this.call("GET", `/fine_tuning/jobs${q.size ? `?${q}` : ""}`);
  }

  async get(id: string): Promise<FineTuningJob> {
    return await this.call("GET", `/fine_tuning/jobs/${encodeURIComponent(id)}`);
  }

  async events(id: string, limit: number): Promise<ListPage<JobEventObject>> {
    return await this.call("GET", `/fine_tuning/jobs/${encodeURIComponent(id)}/events?limit=${limit}`);
  }

  async cancel(id: string): Promise<FineTuningJob> {
    return await this.call("POST", `/fine_tuning/jobs/${encodeURIComponent(id)}/cancel`);
  }
}
