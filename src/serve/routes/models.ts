/** `GET /v1/models` (OpenAI's list, with vLLM's `root`, `parent` and `max_model_len`). */
import type { FastifyInstance } from "fastify";
import type { ServeContext } from "../context.js";

export interface ModelCard {
  readonly id: string;
  readonly object: "model";
  readonly created: number;
  readonly owned_by: string;
  readonly root: string;
  readonly parent: string | null;
  readonly max_model_len: number;
}

export function modelsRoutes(app: FastifyInstance, ctx: ServeContext, started: number): void {
  app.get("/v1/models", async () => {
    const m = ctx.model;
    const data: ModelCard[] = [
      { id: m.id, object: "model", created: started, owned_by: "peft-ts", root: m.root, parent: null, max_model_len: ctx.limits.maxModelLen },
      ...ctx.adapters.list().map((a): ModelCard => ({ id: a.name, object: "model", created: a.created, owned_by: "peft-ts", root: a.path, parent: m.id, max_model_len: ctx.limits.maxModelLen })),
    ];
    return { object: "list", data };
  });
}
