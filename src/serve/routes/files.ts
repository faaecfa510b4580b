/**
 * OpenAI's files API for fine-tuning: `POST /v1/files` (multipart: `file`, `purpose`), `GET
 * /v1/files`, `GET /v1/files/{id}`, `GET /v1/files/{id}/content`, `DELETE /v1/files/{id}`. The
 * upload streams to the state folder with a size limit and is checked line by line there
 * (`runs/finetune/files.ts`).
 */
import { createReadStream } from "node:fs";
import multipart from "@fastify/multipart";
import type { FastifyInstance } from "fastify";
import { z } from "zod";
import { InvalidRequestError } from "../../errors.js";
import type { FineTuneService } from "../../runs/finetune/index.js";
import { parseBody } from "../context.js";

const ListQuery = z.object({
  purpose: z.string().optional(),
  limit: z.coerce.number().int().min(1).max(10000).optional(),
  after: z.string().optional(),
  order: z.enum(["asc", "desc"]).optional(),
});

export async function fileRoutes(app: FastifyInstance, service: FineTuneService, maxFileBytes: number): Promise<void> {
  await app.register(multipart, { limits: { fileSize: maxFileBytes, files: 1, fields: 8, parts: 10 } });
  const store = service.files;

  app.post("/v1/files", async (request) => {
    if (!request.isMultipart()) throw new InvalidRequestError(null, "POST /v1/files takes multipart/form-data with a 'file' and a 'purpose'");
    let tmp: string | null = null;
    let filename = "";
    let purpose: string | null = null;
    try {
      for await (const part of request.parts()) {
        if (part.type === "file") {
          if (part.fieldname !== "file" || tmp !== null) throw new InvalidRequestError(part.fieldname, "one file, in the field 'file'");
          filename = part.filename;
          tmp = await store.receive(part.file);
        } else if (part.fieldname === "purpose") {
          purpose = String(part.value);
        }
      }
      if (tmp === null) throw new InvalidRequestError("file", "missing; send the JSONL file in the multipart field 'file'");
      if (purpose === null) throw new InvalidRequestError("purpose", "missing; use \"fine-tune\"");
      if (purpose !== "fine-tune") throw new InvalidRequestError("purpose", `only "fine-tune" files are uploaded here, got ${JSON.stringify(purpose)}`);
      return await store.keep(tmp, filename, purpose);
    } finally {
      if (tmp !== null) store.discard(tmp);
    }
  });

  app.get("/v1/files", async (request) => {
    const q = parseBody(ListQuery, request.query);
    let files = store.list(q.purpose);
    if (q.order === "asc") files = files.reverse();
    if (q.after !== undefined) {
      const i = files.findIndex((f) => f.id === q.after);
      files = i < 0 ? [] : files.slice(i + 1);
    }
    const limit = q.limit ?? 10000;
    return { object: "list", data: files.slice(0, limit), has_more: files.length > limit };
  });

  app.get<{ Params: { id: string } }>("/v1/files/:id", async (request) => store.get(request.params.id));

  app.get<{ Params: { id: string } }>("/v1/files/:id/content", async (request, reply) => {
    const path = store.contentPath(request.params.id);
    return await reply.type("application/octet-stream").send(createReadStream(path));
  });

  app.delete<{ Params: { id: string } }>("/v1/files/:id", async (request) => store.delete(request.params.id));
}
