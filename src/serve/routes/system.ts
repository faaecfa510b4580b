/** `GET /health` and `GET /metrics`. */
import type { FastifyInstance } from "fastify";
import type { ServeContext } from "../context.js";

export function systemRoutes(app: FastifyInstance, ctx: ServeContext, state: { draining(): boolean }): void {
  // 200 while serving, 503 once SIGTERM drains the server (load balancers stop sending traffic)
  app.get("/health", async (_req, reply) => {
    if (state.draining()) return await reply.code(503).send({ status: "draining" });
    return { status: "ok" };
  });
  app.get("/metrics", async (_req, reply) => {
    const text = await ctx.metrics.text();
    return await reply.type(ctx.metrics.registry.contentType).send(text);
  });
}
