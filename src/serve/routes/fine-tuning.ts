/**
 * OpenAI's fine-tuning jobs API: `POST /v1/fine_tuning/jobs`, `GET /v1/fine_tuning/jobs`,
 * `GET …/{id}`, `GET …/{id}/events`, `GET …/{id}/checkpoints`, `POST …/{id}/cancel`. The
 * service (`runs/finetune/service.ts`) checks, keeps and runs the jobs.
 */
import type { FastifyInstance } from "fastify";
import { z } from "zod";
import type { FineTuneService } from "../../runs/finetune/index.js";
import { parseBody } from "../context.js";

const PageQuery = z.object({
  after: z.string().optional(),
  limit: z.coerce.number().int().min(1).max(100).optional(),
});

type IdParams = { Params: { id: string } };

export function fineTuningRoutes(app: FastifyInstance, service: FineTuneService): void {
  app.post("/v1/fine_tuning/jobs", async (request) => service.create(request.body));
  app.get("/v1/fine_tuning/jobs", async (request) => {
    const q = parseBody(PageQuery, request.query);
    return service.list(q.after, q.limit);
  });
  app.get<IdParams>("/v1/fine_tuning/jobs/:id", async (request) => service.get(request.params.id));
  app.get<IdParams>("/v1/fine_tuning/jobs/:id/events", async (request) => {
    const q = parseBody(PageQuery, request.query);
    return service.events(request.params.id, q.after, q.limit);
  });
  app.get<IdParams>("/v1/fine_tuning/jobs/:id/checkpoints", async (request) => {
    const q = parseBody(PageQuery, request.query);
    return service.checkpoints(request.params.id, q.after, q.limit);
  });
  app.post<IdParams>("/v1/fine_tuning/jobs/:id/cancel", async (request) => service.cancel(request.params.id));
}
