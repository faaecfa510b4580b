/** The playground page at `/`: static HTML + JavaScript from `web/playground/`, no build step. */
import { join } from "node:path";
import fastifyStatic from "@fastify/static";
import type { FastifyInstance } from "fastify";
import { packageRoot } from "../../util/paths.js";

export const PLAYGROUND_DIR = join(packageRoot(), "web", "playground");

export async function playgroundRoutes(app: FastifyInstance): Promise<void> {
  await app.register(fastifyStatic, { root: PLAYGROUND_DIR, prefix: "/", index: ["index.html"], wildcard: false });
}
