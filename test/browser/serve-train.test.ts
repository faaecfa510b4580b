/**
 * `peft serve` serves the browser app at `/train` (the build of scripts/build-web.js), and the page
 * works offline once loaded. In headless Chromium (Debian's chromium through playwright-core, a
 * fresh profile): load `/train` from a running server, wait until the service worker controls the
 * page, cut the network (playwright's `setOffline`), reload — the page comes back from the
 * service worker's cache — then, still offline: train an (IA)³ adapter on a dropped JSONL (the
 * live chart draws the loss), export it (a PEFT zip with `peft_type` IA3), classify; pick a
 * Hugging Face model folder with the folder picker (a tiny BERT with its tokenizer.json), train
 * LoRA on it and classify. A screenshot at 1440 px is written to
 * dist/test-artifacts/browser-train-offline.png. Without a build, `/train` answers 404 with the
 * command that makes one and the server keeps serving.
 */
import assert from "node:assert/strict";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { type BrowserContext, type Page, chromium } from "playwright-core";
import { readZip } from "../../src/io/zip.js";
import { makeTinyModelDir, writeTinyDataset } from "../../src/runs/testing.js";
import { type PeftServer, createServer } from "../../src/serve/server.js";
import { BERT } from "../../src/serve/test-util.js";
import { packageRoot } from "../../src/util/paths.js";
import { CHROMIUM, buildApp } from "../../bench/browser-harness.js";
import { JSONL } from "./fixtures.js";

// The page's globals as the callbacks below use them (they run in Chromium; this file compiles without the DOM library).
interface PageElement {
  textContent: string | null;
  dataset: Record<string, string | undefined>;
}
interface Canvas {
  width: number;
  height: number;
  getContext(kind: "2d"): { getImageData(x: number, y: number, w: number, h: number): { data: Uint8ClampedArray } };
}
declare const document: { body: PageElement; documentElement: { scrollWidth: number }; querySelector(selector: string): PageElement | null; getElementById(id: string): unknown };
declare const crossOriginIsolated: boolean;
declare const innerWidth: number;
declare const window: unknown;

async function untilBody(page: Page, key: string, timeout = 300_000): Promise<string> {
  await page.waitForFunction((k) => document.body.dataset[k] !== undefined || document.body.dataset.error !== undefined, key, { timeout });
  const err = await page.evaluate(() => document.body.dataset.error);
  assert.equal(err, undefined, `the page reported: ${err}`);
  return (await page.evaluate((k) => document.body.dataset[k], key))!;
}

/** Pixels of the chart canvas close to the loss curve's colour (#2f6fdb). */
function lossPixels(page: Page): Promise<number> {
  return page.evaluate(() => {
    const c = document.getElementById("chart") as Canvas;
    const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
    let n = 0;
    for (let i = 0; i < d.length; i += 4) if (Math.abs(d[i]! - 0x2f) < 24 && Math.abs(d[i + 1]! - 0x6f) < 24 && Math.abs(d[i + 2]! - 0xdb) < 24 && d[i + 3]! > 200) n++;
    return n;
  });
}

async function classify(page: Page, text: string): Promise<string> {
  await page.evaluate(() => delete document.querySelector("#result")!.dataset.label);
  await page.fill("#text", text);
  await page.click("#classify");
  await page.waitForFunction(() => document.querySelector("#result")!.dataset.label !== undefined || document.body.dataset.error !== undefined, null, { timeout: 120_000 });
  assert.equal(await page.evaluate(() => document.body.dataset.error), undefined);
  return (await page.evaluate(() => document.querySelector("#result")!.dataset.label))!;
}

async function train(page: Page, o: { method: "lora" | "ia3"; lr: string; steps: number }): Promise<number[]> {
  await page.evaluate(() => delete document.body.dataset.trained);
  await page.selectOption("#method", o.method);
  await page.fill("#lr", o.lr);
  await page.fill("#batch", "16");
  await page.fill("#epochs", String(o.steps));
  await page.fill("#max-steps", String(o.steps));
  await page.click("#train");
  assert.equal(await untilBody(page, "trained"), String(o.steps));
  return page.evaluate(() => (window as { peftLab: { losses: { loss: number }[] } }).peftLab.losses.map((l) => l.loss));
}

describe("peft serve /train in headless Chromium, offline after the first load", { timeout: 900_000, skip: existsSync(CHROMIUM) ? false : `${CHROMIUM} is not installed (.ci/run installs it)` }, () => {
  const work = mkdtempSync(join(tmpdir(), "peft-serve-train-"));
  let app: Awaited<ReturnType<typeof buildApp>>;
  let server: PeftServer;
  let url: string;
  let ctx: BrowserContext;

  before(async () => {
    app = await buildApp();
    server = await createServer({ model: BERT, port: 0, webApp: app.outDir });
    url = await server.listen();
    ctx = await chromium.launchPersistentContext(join(work, "profile"), {
      executablePath: CHROMIUM,
      headless: true,
      viewport: { width: 1440, height: 1000 },
      acceptDownloads: true,
      args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"],
      timeout: 60_000,
    });
  });
  after(async () => {
    await ctx?.close();
    await server?.close();
    app?.cleanup();
    rmSync(work, { recursive: true, force: true });
  });

  test("without a build, /train answers 404 with the command that makes one; the API keeps serving", async () => {
    const empty = join(work, "no-build");
    mkdirSync(empty);
    const s = await createServer({ model: BERT, port: 0, webApp: empty });
    try {
      for (const path of ["/train", "/train/", "/train/app.js"]) {
        const r = await s.app.inject({ url: path });
        assert.equal(r.statusCode, 404, path);
        const body = r.json() as { error: { code: string; message: string } };
        assert.equal(body.error.code, "web_app_not_built");
        assert.match(body.error.message, /npm run build:web/);
      }
      assert.equal((await s.app.inject({ url: "/health" })).statusCode, 200);
      assert.equal((await s.app.inject({ url: "/" })).statusCode, 200, "the playground is still served");
    } finally {
      await s.close();
    }
  });

  test("load /train, go offline, reload; train (IA)³ and an HF folder's LoRA, export, classify", async (t) => {
    const t0 = performance.now();
    const mark = (what: string) => t.diagnostic(`${what}: ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    const page = await ctx.newPage();
    // /train redirects to /train/ (the page loads its files relative to its URL), query kept
    await page.goto(`${url}/train?threads=2`);
    assert.equal(new URL(page.url()).pathname + new URL(page.url()).search, "/train/?threads=2");
    await untilBody(page, "ready");
    assert.equal(await page.evaluate(() => crossOriginIsolated), true, "peft serve sends COOP/COEP on /train (threaded WASM)");
    assert.equal(await untilBody(page, "offline"), "1", "the service worker controls the page");
    assert.match((await page.textContent("header"))!, /Works offline/);
    mark("online, cached");

    await ctx.setOffline(true);
    const reachable = await page.evaluate(() =>
      fetch("/health").then(
        () => true,
        () => false,
      ),
    );
    assert.equal(reachable, false, "the network is cut: the server cannot be reached");
    await page.reload();
    await untilBody(page, "ready");
    assert.equal(await page.evaluate(() => crossOriginIsolated), true, "the cached page keeps its isolation headers");
    mark("reloaded offline");

    // (IA)³ on USE-lite with a dropped JSONL, offline
    await page.evaluate(() => delete document.body.dataset.data);
    await page.setInputFiles("#data-file", { name: "tiny.jsonl", mimeType: "application/json", buffer: Buffer.from(JSONL) });
    assert.equal(await untilBody(page, "data"), "tiny.jsonl");
    // three steps: with peft train's warm-up (6 %, rounded up to one step) the first update has lr 0
    const losses = await train(page, { method: "ia3", lr: "0.01", steps: 3 });
    assert.equal(losses.length, 3);
    assert.ok(losses[2]! < losses[0]!, `loss fell: ${losses.join(" → ")}`);
    assert.ok((await lossPixels(page)) > 50, "the chart draws the loss curve");
    assert.ok(await page.evaluate(() => document.documentElement.scrollWidth <= innerWidth), "no horizontal overflow at 1440 px");
    mkdirSync(join(packageRoot(), "dist", "test-artifacts"), { recursive: true });
    const shot = join(packageRoot(), "dist", "test-artifacts", "browser-train-offline.png");
    await page.screenshot({ path: shot });
    assert.deepEqual([...readFileSync(shot).subarray(0, 4)], [0x89, 0x50, 0x4e, 0x47], "a PNG file");
    const [dl] = await Promise.all([page.waitForEvent("download"), page.click("#export-zip")]);
    const zipPath = join(work, "ia3.zip");
    await dl.saveAs(zipPath);
    const files = await readZip(new Uint8Array(readFileSync(zipPath)));
    const config = JSON.parse(new TextDecoder().decode(files.get("adapter_config.json"))) as { peft_type: string; target_modules: string[] };
    assert.equal(config.peft_type, "IA3");
    assert.ok(files.get("adapter_model.safetensors")!.byteLength > 0);
    assert.ok(["positive", "negative"].includes(await classify(page, "Excellent quality, I love it.")));
    mark("(IA)³ trained, exported, classified");

    // a Hugging Face folder picked with the folder picker (tiny BERT + tokenizer.json), LoRA
    const model = makeTinyModelDir("bert", join(work, "tiny-bert"));
    const data = writeTinyDataset(join(work, "three.jsonl"), 24, 0, 3);
    await page.evaluate(() => delete document.body.dataset.data);
    await page.setInputFiles("#data-file", data);
    assert.equal(await untilBody(page, "data"), "three.jsonl");
    await page.setInputFiles("#hf-folder", model);
    assert.equal(await untilBody(page, "model"), "tiny-bert");
    const bertLosses = await train(page, { method: "lora", lr: "0.01", steps: 2 });
    assert.equal(bertLosses.length, 2);
    assert.ok(bertLosses.every(Number.isFinite));
    assert.ok(["pos", "neg", "neu"].includes(await classify(page, "the food was great")));
    mark("HF folder trained, classified");
    await page.close();
  });
});
