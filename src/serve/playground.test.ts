/**
 * The playground page in headless Debian Chromium (playwright-core with its executablePath): the
 * page lists the models, and a classify request shows labels. The streaming chat check is in
 * playground-chat.test.ts.
 */
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { type BrowserContext, chromium } from "playwright-core";
import { type PeftServer, createServer } from "./server.js";
import { BERT, tinyChatModel } from "./test-util.js";

export const CHROMIUM = "/usr/bin/chromium";

/** Debian's chromium, headless, with a fresh profile (user data dir); `close()` removes the profile. */
export async function launchChromium(): Promise<{ browser: BrowserContext; close(): Promise<void> }> {
  const profile = mkdtempSync(join(tmpdir(), "peft-chromium-"));
  const browser = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"],
  });
  return {
    browser,
    close: async () => {
      await browser.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

describe("playground page (chromium)", { skip: existsSync(CHROMIUM) ? false : `${CHROMIUM} is not installed (.ci/run installs it)` }, () => {
  let server: PeftServer;
  let url: string;
  let chrome: Awaited<ReturnType<typeof launchChromium>>;
  before(async () => {
    server = await createServer({ model: BERT, port: 0 });
    url = await server.listen();
    chrome = await launchChromium();
  });
  after(async () => {
    await chrome?.close();
    await server.close();
  });

  test("lists the models and classifies token-id lines", async () => {
    const page = await chrome.browser.newPage();
    await page.goto(url);
    await page.waitForFunction('document.getElementById("model").options.length > 0');
    assert.deepEqual(await page.$$eval("#model option", (os) => os.map((o) => o.getAttribute("value"))), ["base"]);
    await page.selectOption("#mode", "classify");
    await page.fill("#input", "[2, 7, 9, 4]\n[5, 6]");
    await page.click("#send");
    await page.waitForFunction('document.getElementById("output").dataset.state === "done"');
    const text = await page.textContent("#output");
    assert.match(text!, /^0: LABEL_\d +\(\d\.\d{3} \/ \d\.\d{3} \/ \d\.\d{3}\)\n1: LABEL_\d/);
    assert.match((await page.textContent("#status"))!, /6 tokens/);
  });
});

describe("playground chat streams tokens into the page (chromium)", { skip: existsSync(CHROMIUM) ? false : `${CHROMIUM} is not installed (.ci/run installs it)` }, () => {
  const dir = mkdtempSync(join(tmpdir(), "peft-playground-"));
  let server: PeftServer;
  let url: string;
  let chrome: Awaited<ReturnType<typeof launchChromium>>;
  before(async () => {
    server = await createServer({ model: tinyChatModel(dir), port: 0 });
    url = await server.listen();
    chrome = await launchChromium();
  });
  after(async () => {
    await chrome?.close();
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test("a chat message streams its answer token by token", async () => {
    const page = await chrome.browser.newPage();
    await page.goto(url);
    await page.waitForFunction('document.getElementById("model").options.length > 0');
    await page.selectOption("#mode", "chat");
    await page.fill("#maxTokens", "8");
    await page.fill("#input", "good food");
    // count the writes of text into the output while the answer arrives: one mutation record per
    // write (a callback may batch several records when the events arrive in one network read)
    await page.evaluate(
      'window.updates = 0; new MutationObserver((records) => { for (const r of records) if ([...r.addedNodes].some((n) => n.textContent) || (r.type === "characterData" && r.target.textContent)) window.updates++; }).observe(document.getElementById("output"), { childList: true, characterData: true, subtree: true })',
    );
    await page.click("#send");
    await page.waitForFunction('document.getElementById("output").dataset.state === "done"');
    const updates = (await page.evaluate("window.updates")) as number;
    const tokens = Number(await page.getAttribute("#output", "data-tokens"));
    assert.equal(tokens, 8);
    assert.ok(updates >= 2, `the answer was written in ${updates} update(s), not token by token`);
    assert.ok(((await page.textContent("#output")) ?? "").trim().length > 0);
    assert.match((await page.textContent("#status"))!, /finished: length · \d+ prompt \+ 8 completion tokens/);
  });
});
