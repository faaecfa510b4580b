/**
 * What the browser tests and `npm run bench -- browser` share: the app built by
 * scripts/build-web.js into a temporary folder, a static server on a free loopback port with the
 * cross-origin isolation headers threaded WASM needs, and Debian's Chromium through playwright-core.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import fastifyStatic from "@fastify/static";
import Fastify, { type FastifyInstance } from "fastify";
import { type Browser, chromium } from "playwright-core";
import { packageRoot } from "../src/util/paths.js";

export const CHROMIUM = process.env.PEFT_CHROMIUM ?? "/usr/bin/chromium";

interface WebBuild {
  readonly outDir: string;
  readonly sizes: Record<string, number>;
}

/** Builds the app (scripts/build-web.js) into a fresh temporary folder. */
export async function buildApp(): Promise<WebBuild & { cleanup(): void }> {
  const outDir = mkdtempSync(join(tmpdir(), "peft-web-"));
  const mod = (await import(join(packageRoot(), "scripts", "build-web.js"))) as { buildWeb(out: string): Promise<WebBuild> };
  const b = await mod.buildWeb(outDir);
  return { ...b, cleanup: () => rmSync(outDir, { recursive: true, force: true }) };
}

/** A static server of `root` on 127.0.0.1 (free port), cross-origin isolated (COOP/COEP). */
export async function serve(root: string): Promise<{ url: string; close(): Promise<void> }> {
  const app: FastifyInstance = Fastify({ logger: false });
  app.addHook("onSend", async (_req, reply) => {
    reply.header("Cross-Origin-Opener-Policy", "same-origin");
    reply.header("Cross-Origin-Embedder-Policy", "require-corp");
    reply.header("Cross-Origin-Resource-Policy", "same-origin");
  });
  await app.register(fastifyStatic, { root });
  const address = await app.listen({ host: "127.0.0.1", port: 0 });
  return { url: `${address}/`, close: () => app.close() };
}

/** Headless Chromium (playwright gives it a fresh temporary profile); `webgpu` adds the SwiftShader WebGPU adapter flags. */
export async function launchChromium(opts: { webgpu?: boolean } = {}): Promise<Browser> {
  const args = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    ...(opts.webgpu ? ["--enable-unsafe-webgpu", "--use-webgpu-adapter=swiftshader", "--enable-features=Vulkan"] : []),
  ];
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args, timeout: 60_000 });
}
