// The playground: plain browser JavaScript against the server's own HTTP API (no build step).
/* global document, fetch, location, TextDecoder, AbortController */
"use strict";
const $ = (id) => document.getElementById(id);
const out = $("output");
const status = $("status");
let controller = null;

function headers() {
  const h = { "content-type": "application/json" };
  const key = $("apiKey").value.trim();
  if (key) h.authorization = `Bearer ${key}`;
  return h;
}

function setStatus(text, isError = false) {
  status.textContent = text;
  status.className = isError ? "error" : "";
}

/** "[1, 2, 3]" → token ids; anything else stays text. */
function parsePrompt(text) {
  const t = text.trim();
  if (/^\[\s*\d+(\s*,\s*\d+)*\s*\]$/.test(t)) return JSON.parse(t);
  return text;
}

async function errorText(res) {
  try {
    const body = await res.json();
    return `${res.status} ${body.error?.code ?? ""}: ${body.error?.message ?? JSON.stringify(body)}`;
  } catch {
    return `${res.status} ${res.statusText}`;
  }
}

async function loadModels() {
  const res = await fetch("/v1/models", { headers: headers() });
  if (!res.ok) {
    setStatus(`cannot list models: ${await errorText(res)} (set the API key and reload the list by changing it)`, true);
    return;
  }
  const body = await res.json();
  const sel = $("model");
  sel.innerHTML = "";
  for (const m of body.data) {
    const o = document.createElement("option");
    o.value = m.id;
    o.textContent = m.parent ? `${m.id} (adapter of ${m.parent})` : `${m.id} (base)`;
    sel.appendChild(o);
  }
  $("server").textContent = `${body.data.length} model(s) · ${location.host}`;
  setStatus("");
}

/** Reads a server-sent event stream, calling onData with each parsed `data:` JSON until [DONE]. */
async function readSse(res, onData) {
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += decoder.decode(value, { stream: true });
    let i;
    while ((i = buf.indexOf("\n\n")) >= 0) {
      const event = buf.slice(0, i);
      buf = buf.slice(i + 2);
      for (const line of event.split("\n")) {
        if (!line.startsWith("data: ")) continue;
        const data = line.slice(6);
        if (data === "[DONE]") return;
        onData(JSON.parse(data));
      }
    }
  }
}

function appendToken(text, ids) {
  if (text) out.textContent += text;
  else if (ids && ids.length) out.textContent += (out.textContent && !out.textContent.endsWith(" ") ? " " : "") + ids.join(" ");
}

async function generate(mode, signal) {
  const model = $("model").value;
  const input = parsePrompt($("input").value);
  const common = { model, max_tokens: Number($("maxTokens").value), temperature: Number($("temperature").value), stream: true, stream_options: { include_usage: true }, return_token_ids: true };
  const chatWithIds = mode === "chat" && Array.isArray(input);
  const url = mode === "chat" && !chatWithIds ? "/v1/chat/completions" : "/v1/completions";
  const body = url === "/v1/completions" ? { ...common, prompt: input } : { ...common, messages: [{ role: "user", content: input }] };
  if (chatWithIds) setStatus("token-id input: sent as a completion prompt");
  const res = await fetch(url, { method: "POST", headers: headers(), body: JSON.stringify(body), signal });
  if (!res.ok) throw new Error(await errorText(res));
  let tokens = 0;
  await readSse(res, (chunk) => {
    if (chunk.error) throw new Error(`${chunk.error.code}: ${chunk.error.message}`);
    for (const c of chunk.choices ?? []) {
      const text = c.delta ? c.delta.content : c.text;
      appendToken(text, c.token_ids);
      tokens += c.token_ids ? c.token_ids.length : text ? 1 : 0;
      if (c.finish_reason) setStatus(`finished: ${c.finish_reason}`);
    }
    if (chunk.usage) setStatus(`${status.textContent} · ${chunk.usage.prompt_tokens} prompt + ${chunk.usage.completion_tokens} completion tokens`);
  });
  out.dataset.tokens = String(tokens);
}

async function encode(mode, signal) {
  const lines = $("input").value.split("\n").filter((l) => l.trim() !== "").map(parsePrompt);
  const url = mode === "embeddings" ? "/v1/embeddings" : "/classify";
  const body = { model: $("model").value, input: lines, ...(mode === "embeddings" ? { encoding_format: "float" } : {}) };
  const res = await fetch(url, { method: "POST", headers: headers(), body: JSON.stringify(body), signal });
  if (!res.ok) throw new Error(await errorText(res));
  const r = await res.json();
  if (mode === "embeddings") {
    out.textContent = r.data.map((d, i) => `${i}: [${d.embedding.slice(0, 6).map((x) => x.toFixed(4)).join(", ")}, …] (${d.embedding.length} dims)`).join("\n");
  } else {
    out.textContent = r.data.map((d) => `${d.index}: ${d.label}  (${d.probs.map((p) => p.toFixed(3)).join(" / ")})`).join("\n");
  }
  setStatus(`${r.usage.prompt_tokens} tokens`);
}

$("send").addEventListener("click", async () => {
  const mode = $("mode").value;
  out.textContent = "";
  delete out.dataset.tokens;
  out.dataset.state = "running";
  controller = new AbortController();
  $("send").disabled = true;
  $("stop").disabled = false;
  setStatus("…");
  try {
    if (mode === "chat" || mode === "completion") await generate(mode, controller.signal);
    else await encode(mode, controller.signal);
  } catch (e) {
    if (e.name === "AbortError") setStatus("stopped");
    else setStatus(String(e.message ?? e), true);
  } finally {
    out.dataset.state = "done";
    $("send").disabled = false;
    $("stop").disabled = true;
    controller = null;
  }
});
$("stop").addEventListener("click", () => controller?.abort());
$("apiKey").addEventListener("change", loadModels);
loadModels();
