/** vLLM's run-time adapter management: `POST /v1/load_lora_adapter`, `POST /v1/unload_lora_adapter`. */
import type { FastifyInstance } from "fastify";
import { z } from "zod";
import { type ServeContext, parseBody } from "../context.js";

const LoadBody = z.object({
  lora_name: z.string().min(1),
  lora_path: z.string().min(1),
  load_inplace: z.boolean().optional(),
  pinned: z.boolean().optional(),
});

const UnloadBody = z.object({
  lora_name: z.string().min(1),
  lora_int_id: z.number().int().optional(),
});

export function adapterRoutes(app: FastifyInstance, ctx: ServeContext): void {
  app.post("/v1/load_lora_adapter", async (request, reply) => {
    const b = parseBody(LoadBody, request.body);
    await ctx.adapters.load(b.lora_name, b.lora_path, { ...(b.load_inplace !== undefined ? { inplace: b.load_inplace } : {}), ...(b.pinned !== undefined ? { pinned: b.pinned } : {}) });
    request.log.info({ adapter: b.lora_name, path: b.lora_path }, "adapter loaded");
    return await reply.type("text/plain; charset=utf-8").send(`Success: LoRA adapter '${b.lora_name}' added successfully.`);
  });
  app.post("/v1/unload_lora_adapter", async (request, reply) => {
    const b = parseBody(UnloadBody, request.body);
    ctx.adapters.unload(b.lora_name);
    request.log.info({ adapter: b.lora_name }, "adapter unloaded");
    return await reply.type("text/plain; charset=utf-8").send(`Success: LoRA adapter '${b.lora_name}' removed successfully.`);
  });
}
