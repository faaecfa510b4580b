/**
 * The browser fine-tuning app at `/train/` (`/train` redirects there): the static files that
 * `npm run build:web` writes to `dist-web/` (docs/browser.md), served cross-origin isolated
 * (COOP/COEP) so onnxruntime-web can run threaded WASM. When the folder has no build, `/train`
 * answers 404 with the command that makes one, and the rest of the server runs as usual.
 */
import { existsSync } from "node:fs";
import { join } from "node:path";
import fastifyStatic from "@fastify/static";
import type { FastifyInstance } from "fastify";
import { packageRoot } from "../../util/paths.js";

/** Where `npm run build:web` writes the app. */
export const WEB_APP_DIR = join(packageRoot(), "dist-web");

export async function trainAppRoutes(app: FastifyInstance, dir: string = WEB_APP_DIR): Promise<void> {
  await app.register(async (sub) => {
    sub.addHook("onSend", async (_request, reply) => {
      reply.header("Cross-Origin-Opener-Policy", "same-origin");
      reply.header("Cross-Origin-Embedder-Policy", "require-corp");
      reply.header("Cross-Origin-Resource-Policy", "same-origin");
    });
    if (existsSync(join(dir, "index.html"))) {
      // the page loads its files relative to its own URL: `/train` → `/train/` (query kept)
      sub.get("/train", async (request, reply) => await reply.redirect(`/train/${request.url.slice("/train".length)}`));
      await sub.register(fastifyStatic, { root: dir, prefix: "/train/", decorateReply: false, index: ["index.html"] });
      return;
    }
    const missing = async (request: { url: string }, reply: { code(c: number): { send(b: unknown): unknown } }) => {
      const message = `the browser app is not built (no ${join(dir, "index.html")}): run \`npm run build:web\`, then restart peft serve`;
      return await reply.code(404).send({ error: { message, type: "not_found_error", param: null, code: "web_app_not_built", path: request.url.split("?")[0] } });
    };
    sub.get("/train", missing);
    sub.get("/train/*", missing);
  });
}
