/** Helpers for the server tests: fixture folders, an adapter root in a temp folder, metrics parsing. */
import { cpSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { makeTinyModelDir } from "../runs/testing.js";
import { fixturePath } from "../util/paths.js";

export const GPT2 = fixturePath("peft-parity", "gpt2", "base");
export const LLAMA = fixturePath("peft-parity", "llama", "base");
export const BERT = fixturePath("peft-parity", "bert", "base");

/** A temp folder holding copies of fixture adapters under the given names; `dispose()` removes it. */
export function adapterRoot(arch: "gpt2" | "llama" | "bert", copies: Record<string, string>): { dir: string; dispose(): void } {
  const dir = mkdtempSync(join(tmpdir(), "peft-serve-"));
  for (const [name, kind] of Object.entries(copies)) cpSync(fixturePath("peft-parity", arch, kind), join(dir, "root", name), { recursive: true });
  return { dir: join(dir, "root"), dispose: () => rmSync(dir, { recursive: true, force: true }) };
}

/** The value of one Prometheus sample (`name{labels}`), 0 when absent. */
export function metricValue(text: string, sample: string): number {
  for (const line of text.split("\n")) {
    if (line.startsWith(`${sample} `)) return Number(line.slice(sample.length + 1));
  }
  return 0;
}

export async function getMetrics(url: string): Promise<string> {
  return await (await fetch(`${url}/metrics`)).text();
}

/** Polls `/metrics` until `ok(text)` holds (at most `ms`). */
export async function waitForMetrics(url: string, ok: (text: string) => boolean, ms = 20_000): Promise<string> {
  const end = Date.now() + ms;
  for (;;) {
    const t = await getMetrics(url);
    if (ok(t)) return t;
    if (Date.now() > end) throw new Error(`metrics condition not reached in ${ms} ms:\n${t.split("\n").filter((l) => l.startsWith("peft_") && !l.startsWith("peft_process")).join("\n")}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

export async function postJson(url: string, body: unknown, headers: Record<string, string> = {}, signal?: AbortSignal): Promise<Response> {
  return await fetch(url, { method: "POST", headers: { "content-type": "application/json", ...headers }, body: JSON.stringify(body), ...(signal ? { signal } : {}) });
}

export const CHAT_TEMPLATE = "{% for m in messages %}{{ m['role'] }} {{ m['content'] }} {% endfor %}{% if add_generation_prompt %}the film was{% endif %}";

/** The tiny GPT-2 with a tokenizer and a chat template, in a temp folder. */
export function tinyChatModel(dir: string): string {
  const model = makeTinyModelDir("gpt2", join(dir, "gpt2"));
  writeFileSync(join(model, "tokenizer_config.json"), JSON.stringify({ pad_token: "[PAD]", model_max_length: 64, chat_template: CHAT_TEMPLATE }));
  return model;
}
