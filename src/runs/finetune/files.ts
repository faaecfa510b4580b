/**
 * The fine-tuning file store (OpenAI's `/v1/files`): uploads live in `<state>/files/` as
 * `<id>.jsonl` (the bytes) and `<id>.json` (the OpenAI file object), both written atomically and
 * the object last, so a server killed mid-upload leaves either a complete file or nothing that
 * lists. A `fine-tune` upload is streamed to disk with a size limit and checked line by line
 * before it is kept (bounded memory whatever its size).
 */
import { createWriteStream, existsSync, fsyncSync, mkdirSync, openSync, closeSync, readdirSync, renameSync, rmSync, statSync } from "node:fs";
import { join } from "node:path";
import type { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { InvalidRequestError, UnknownFileError } from "../../errors.js";
import { removeStaleTempFiles, tempPathFor } from "../../io/atomic.js";
import { readJsonObject } from "../../io/json-file.js";
import { randomHex } from "../../platform/crypto.js";
import { writeJsonAtomic } from "../run-dir.js";
import { type TrainingFileSummary, type TrainingFormat, readTrainingFile } from "./formats.js";

/** Purposes the store accepts (`fine-tune` uploads are checked; `fine-tune-results` are the jobs' metrics). */
export const FILE_PURPOSES = ["fine-tune", "fine-tune-results"] as const;
export type FilePurpose = (typeof FILE_PURPOSES)[number];

/** OpenAI's file object, plus what the check found (`format`, `examples`, `labels`). */
export interface StoredFile {
  readonly object: "file";
  readonly id: string;
  readonly bytes: number;
  readonly created_at: number;
  readonly filename: string;
  readonly purpose: FilePurpose;
  readonly status: "processed";
  readonly expires_at: null;
  readonly status_details: null;
  readonly format?: TrainingFormat;
  readonly examples?: number;
  readonly labels?: readonly string[];
}

function checkPurpose(purpose: string): void {
  if (!(FILE_PURPOSES as readonly string[]).includes(purpose)) throw new InvalidRequestError("purpose", `must be one of ${FILE_PURPOSES.join(", ")}, got ${JSON.stringify(purpose)}`);
}

const ID = /^file-[0-9a-f]{24}$/u;

export class FileStore {
  constructor(readonly dir: string) {
    mkdirSync(dir, { recursive: true });
    removeStaleTempFiles(dir);
    // a content file whose object was never written (killed between the two renames) lists nowhere: remove it
    for (const n of readdirSync(dir)) {
      const m = /^(file-[0-9a-f]{24})\.jsonl$/u.exec(n);
      if (m && !existsSync(join(dir, `${m[1]}.json`))) rmSync(join(dir, n), { force: true });
    }
  }

  private metaPath(id: string): string {
    return join(this.dir, `${id}.json`);
  }

  /** The path of a file's bytes. */
  contentPath(id: string): string {
    this.get(id);
    return join(this.dir, `${id}.jsonl`);
  }

  /** Every stored file, newest first (optionally of one purpose). */
  list(purpose?: string): StoredFile[] {
    const out: StoredFile[] = [];
    for (const n of readdirSync(this.dir)) {
      const m = /^(file-[0-9a-f]{24})\.json$/u.exec(n);
      if (!m) continue;
      const f = readJsonObject(join(this.dir, n)) as unknown as StoredFile;
      if (purpose === undefined || f.purpose === purpose) out.push(f);
    }
    return out.sort((a, b) => b.created_at - a.created_at || (a.id < b.id ? 1 : -1));
  }

  has(id: string): boolean {
    return ID.test(id) && existsSync(this.metaPath(id));
  }

  get(id: string): StoredFile {
    if (!this.has(id)) throw new UnknownFileError(id);
    return readJsonObject(this.metaPath(id)) as unknown as StoredFile;
  }

  /**
   * Streams an upload to disk and keeps it: `fine-tune` files are checked line by line first (a
   * `TrainingFileError` naming the line, and nothing kept). `source` must end with the upload
   * (the caller's stream enforces the size limit).
   */
  async add(source: Readable, filename: string, purpose: string): Promise<StoredFile> {
    const tmp = await this.receive(source);
    try {
      return await this.keep(tmp, filename, purpose);
    } finally {
      this.discard(tmp);
    }
  }

  /** Streams `source` into a temporary file of the store and returns its path (`keep` it or `discard` it). */
  async receive(source: Readable): Promise<string> {
    const tmp = tempPathFor(join(this.dir, "upload"));
    try {
      await pipeline(source, createWriteStream(tmp));
    } catch (e) {
      this.discard(tmp);
      throw e;
    }
    return tmp;
  }

  /** Removes a temporary file `receive` made (no-op once `keep` moved it). */
  discard(tmp: string): void {
    rmSync(tmp, { force: true });
  }

  /** Keeps an already written temporary file `tmp` (moved into the store, or removed on failure). */
  async keep(tmp: string, filename: string, purpose: string): Promise<StoredFile> {
    checkPurpose(purpose);
    const summary = purpose === "fine-tune" ? await readTrainingFile(tmp, filename || "upload") : null;
    return this.store(tmp, filename, purpose, summary);
  }

  /** Keeps a temporary file of a purpose that is not checked (`fine-tune-results`). */
  keepSync(tmp: string, filename: string, purpose: Exclude<FilePurpose, "fine-tune">): StoredFile {
    return this.store(tmp, filename, purpose, null);
  }

  private store(tmp: string, filename: string, purpose: string, summary: TrainingFileSummary | null): StoredFile {
    const fd = openSync(tmp, "r+");
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    const id = `file-${randomHex(12)}`;
    const file: StoredFile = {
      object: "file",
      id,
      bytes: statSync(tmp).size,
      created_at: Math.floor(Date.now() / 1000),
      filename,
      purpose: purpose as FilePurpose,
      status: "processed",
      expires_at: null,
      status_details: null,
      ...(summary ? { format: summary.format, examples: summary.examples, ...(summary.labels ? { labels: summary.labels } : {}) } : {}),
    };
    renameSync(tmp, join(this.dir, `${id}.jsonl`));
    writeJsonAtomic(this.metaPath(id), file);
    return file;
  }

  /** Removes a file (its object first: a crash in between leaves bytes the next start removes). */
  delete(id: string): { id: string; object: "file"; deleted: true } {
    this.get(id);
    rmSync(this.metaPath(id), { force: true });
    rmSync(join(this.dir, `${id}.jsonl`), { force: true });
    return { id, object: "file", deleted: true };
  }
}
