/** The page: controls, the live chart and progress, downloads; all the work happens in worker.ts. */
import type { BenchResult, Reply, Request } from "./protocol.js";

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
const worker = new Worker(new URL("worker.js", import.meta.url), { type: "module" });

/** Replies in arrival order, for requests that wait for one kind. */
type Waiter = { kinds: readonly Reply["kind"][]; resolve(r: Reply): void; reject(e: Error): void };
const waiters: Waiter[] = [];

function send(req: Request, until: readonly Reply["kind"][], transfer: Transferable[] = []): Promise<Reply> {
  return new Promise((resolve, reject) => {
    waiters.push({ kinds: until, resolve, reject });
    worker.postMessage(req, transfer);
  });
}

const losses: { step: number; loss: number }[] = [];
const accs: { step: number; accuracy: number }[] = [];
let totalSteps = 1;
let startedAt = 0;
let startedStep = 0;
let pausedAt = 0;

function status(s: string): void {
  $("status").textContent = s;
}

function fmtTime(s: number): string {
  if (!Number.isFinite(s)) return "…";
  const m = Math.floor(s / 60);
  return m > 0 ? `${m} min ${Math.round(s % 60)} s` : `${s.toFixed(1)} s`;
}

/** Tick values for an axis over [lo, hi]: about `n` round steps. */
function ticks(lo: number, hi: number, n: number): number[] {
  const raw = (hi - lo) / Math.max(1, n);
  const mag = 10 ** Math.floor(Math.log10(raw || 1));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? raw;
  const out: number[] = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Number(v.toPrecision(12)));
  return out;
}

/**
 * The live chart: training loss (left axis, scaled to the run's range) and validation accuracy
 * (right axis, 0–100 %) against the step. The canvas is sized to its CSS box × devicePixelRatio
 * at each draw, so it stays sharp at any window width.
 */
function draw(): void {
  const c = $<HTMLCanvasElement>("chart");
  const dpr = window.devicePixelRatio || 1;
  const W = Math.max(200, c.clientWidth);
  const H = Math.max(120, c.clientHeight);
  if (c.width !== Math.round(W * dpr) || c.height !== Math.round(H * dpr)) {
    c.width = Math.round(W * dpr);
    c.height = Math.round(H * dpr);
  }
  const g = c.getContext("2d")!;
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, W, H);
  const L = 56;
  const R = 48;
  const T = 26;
  const B = 36;
  const pw = W - L - R;
  const ph = H - T - B;
  g.font = "12px system-ui, sans-serif";
  g.lineWidth = 1;
  g.strokeStyle = "#c8ced8";
  g.strokeRect(L, T, pw, ph);
  if (losses.length === 0 && accs.length === 0) {
    g.fillStyle = "#7a8396";
    g.textAlign = "center";
    g.fillText("The loss curve and validation accuracy appear here while training.", L + pw / 2, T + ph / 2);
    return;
  }
  const lossVals = losses.map((p) => p.loss);
  let lo = Math.min(...lossVals);
  let hi = Math.max(...lossVals);
  const span = Math.max(hi - lo, Math.abs(hi) * 0.02, 1e-6);
  lo -= span * 0.1;
  hi += span * 0.1;
  const xMax = Math.max(1, totalSteps);
  const x = (s: number) => L + (pw * s) / xMax;
  const yl = (l: number) => T + ph - (ph * (l - lo)) / (hi - lo);
  const ya = (a: number) => T + ph - ph * a;
  // grid and axes
  g.fillStyle = "#465066";
  g.strokeStyle = "#eceff4";
  g.textAlign = "right";
  g.textBaseline = "middle";
  for (const v of ticks(lo, hi, 4)) {
    g.beginPath();
    g.moveTo(L, yl(v));
    g.lineTo(L + pw, yl(v));
    g.stroke();
    g.fillText(v.toFixed(Math.max(0, -Math.floor(Math.log10(Math.max(span, 1e-9))) + 1)), L - 6, yl(v));
  }
  g.textAlign = "left";
  for (const a of [0, 0.5, 1]) g.fillText(`${a * 100} %`, L + pw + 6, ya(a));
  g.textAlign = "center";
  g.textBaseline = "top";
  for (const s of ticks(0, xMax, 6).filter(Number.isInteger)) g.fillText(String(s), x(s), T + ph + 6);
  g.textBaseline = "alphabetic";
  g.textAlign = "left";
  g.fillStyle = "#2f6fdb";
  g.fillText("— training loss", L, T - 9);
  g.fillStyle = "#d9822b";
  g.textAlign = "right";
  g.fillText("● validation accuracy", L + pw, T - 9);
  g.fillStyle = "#465066";
  g.textAlign = "center";
  g.fillText("step", L + pw / 2, H - 2);
  // the curves
  g.strokeStyle = "#2f6fdb";
  g.lineWidth = 2;
  g.beginPath();
  losses.forEach((p, i) => (i === 0 ? g.moveTo(x(p.step), yl(p.loss)) : g.lineTo(x(p.step), yl(p.loss))));
  g.stroke();
  if (losses.length === 1) {
    g.fillStyle = "#2f6fdb";
    g.beginPath();
    g.arc(x(losses[0]!.step), yl(losses[0]!.loss), 3, 0, 2 * Math.PI);
    g.fill();
  }
  g.fillStyle = "#d9822b";
  for (const p of accs) {
    g.beginPath();
    g.arc(x(p.step), ya(p.accuracy), 4, 0, 2 * Math.PI);
    g.fill();
  }
}

addEventListener("resize", draw);

worker.onmessage = (e: MessageEvent<Reply>) => {
  const r = e.data;
  if (r.kind === "step") {
    const i = r.info;
    totalSteps = i.totalSteps;
    losses.push({ step: i.step, loss: i.loss });
    const done = i.step - startedStep;
    const perStep = (performance.now() - startedAt) / 1000 / Math.max(1, done);
    $<HTMLProgressElement>("progress").value = i.step / i.totalSteps;
    status(`step ${i.step}/${i.totalSteps} · loss ${i.loss.toFixed(4)} · ${i.examplesPerSecond.toFixed(1)} sentences/s · ETA ${fmtTime(perStep * (i.totalSteps - i.step))}`);
    $("metrics").dataset.steps = String(i.step);
    draw();
    return;
  }
  if (r.kind === "eval" && r.result.accuracy !== undefined) {
    accs.push({ step: r.result.step, accuracy: r.result.accuracy });
    draw();
    return;
  }
  const w = waiters.findIndex((x) => x.kinds.includes(r.kind) || r.kind === "error");
  if (w >= 0) {
    const [waiter] = waiters.splice(w, 1);
    if (r.kind === "error") waiter!.reject(new Error(`${r.request}: ${r.code ? `${r.code}: ` : ""}${r.message}`));
    else waiter!.resolve(r);
  }
};

async function run<T>(what: string, f: () => Promise<T>): Promise<T | undefined> {
  try {
    return await f();
  } catch (err) {
    status(`${what} failed: ${(err as Error).message}`);
    document.body.dataset.error = (err as Error).message;
    return undefined;
  }
}

function readAll(files: FileList): Promise<Map<string, Uint8Array>> {
  return Promise.all([...files].map(async (f) => [f.webkitRelativePath || f.name, new Uint8Array(await f.arrayBuffer())] as const)).then((e) => new Map(e));
}

async function pickData(spec: Request & { kind: "data" }): Promise<void> {
  const r = await send(spec, ["ready"]);
  if (r.kind !== "ready") return;
  const d = r.detail as { name: string; labels: string[]; train: number; validation: number; test: number };
  $("data-info").textContent = `${d.name}: ${d.train} train / ${d.validation} validation / ${d.test} test · labels ${d.labels.join(", ")}`;
  document.body.dataset.data = d.name;
}

function enableTrained(on: boolean): void {
  for (const id of ["classify", "export-zip", "export-compeft"]) $<HTMLButtonElement>(id).disabled = !on;
}

function showTest(prefix: string, t: { accuracy?: number; loss: number }): void {
  $("metrics").textContent = `${prefix}: test accuracy ${((t.accuracy ?? 0) * 100).toFixed(1)} % · loss ${t.loss.toFixed(4)}`;
  $("metrics").dataset.accuracy = String(t.accuracy ?? "");
}

async function init(): Promise<void> {
  const params = new URLSearchParams(location.search);
  const ep = (params.get("ep") ?? "cpu") as "cpu" | "webgpu";
  const threads = Number(params.get("threads") ?? 0) || navigator.hardwareConcurrency || 1;
  $<HTMLSelectElement>("ep").value = ep;
  $<HTMLInputElement>("threads").value = String(threads);
  await run("loading", async () => {
    await send({ kind: "init", threads, ep }, ["ready"]);
    await pickData({ kind: "data", spec: { builtin: $<HTMLSelectElement>("builtin").value } });
    status(`Ready (${ep === "cpu" ? `WASM, ${threads} thread${threads > 1 ? "s" : ""}` : "WebGPU"}${crossOriginIsolated ? "" : ", not cross-origin isolated: 1 thread"}).`);
    document.body.dataset.ready = "1";
  });
  for (const id of ["ep", "threads"]) {
    $(id).addEventListener("change", () => {
      const q = new URLSearchParams({ ep: $<HTMLSelectElement>("ep").value, threads: $<HTMLInputElement>("threads").value });
      location.search = q.toString(); // onnxruntime-web fixes its backend and threads at the first session
    });
  }
}

$("builtin").addEventListener("change", () => void run("loading data", () => pickData({ kind: "data", spec: { builtin: $<HTMLSelectElement>("builtin").value } })));

async function dataFile(f: File): Promise<void> {
  await run("loading data", async () => pickData({ kind: "data", spec: { file: f.name, text: await f.text() } }));
}
$("data-file").addEventListener("change", () => {
  const f = $<HTMLInputElement>("data-file").files?.[0];
  if (f) void dataFile(f);
});
$("drop").addEventListener("dragover", (e) => e.preventDefault());
$("drop").addEventListener("drop", (e) => {
  e.preventDefault();
  const f = e.dataTransfer?.files[0];
  if (f) void dataFile(f);
});

for (const el of document.querySelectorAll<HTMLInputElement>("input[name=model]")) {
  el.addEventListener("change", () => {
    if (el.value === "use-lite" && el.checked) void run("loading the model", () => send({ kind: "model" }, ["ready"]));
  });
}
$("hf-folder").addEventListener("change", () => {
  const files = $<HTMLInputElement>("hf-folder").files;
  if (!files || files.length === 0) return;
  (document.querySelector("input[value=hf]") as HTMLInputElement).checked = true;
  void run("loading the model", async () => {
    const map = await readAll(files);
    const label = [...map.keys()][0]?.split("/")[0] ?? "model";
    await send({ kind: "model", files: map, label }, ["ready"]);
    status(`Model: ${label} (${map.size} files)`);
    document.body.dataset.model = label;
  });
});

$("train").addEventListener("click", () => {
  losses.length = 0;
  accs.length = 0;
  startedAt = performance.now();
  startedStep = 0;
  $<HTMLButtonElement>("train").disabled = true;
  $<HTMLButtonElement>("pause").disabled = false;
  enableTrained(false);
  const num = (id: string) => Number($<HTMLInputElement>(id).value);
  const maxSteps = num("max-steps");
  void run("training", async () => {
    const r = await send(
      {
        kind: "train",
        adapter: { method: $<HTMLSelectElement>("method").value as "lora" | "ia3", r: num("r"), alpha: num("alpha") },
        options: { epochs: num("epochs"), batchSize: num("batch"), lr: num("lr"), seed: 0, ...(maxSteps > 0 ? { maxSteps } : {}) },
      },
      ["trained"],
    );
    if (r.kind !== "trained") return;
    status(`Trained ${r.steps} steps in ${fmtTime(r.seconds)}.`);
    showTest("trained", r.test);
    document.body.dataset.trained = String(r.steps);
    enableTrained(true);
  }).finally(() => {
    $<HTMLButtonElement>("train").disabled = false;
    $<HTMLButtonElement>("pause").disabled = true;
  });
});

$("pause").addEventListener("click", () => {
  const b = $<HTMLButtonElement>("pause");
  const pausing = b.textContent === "Pause";
  if (pausing) pausedAt = performance.now();
  else startedAt += performance.now() - pausedAt; // the ETA counts running time only
  void run("pause", async () => {
    await send({ kind: pausing ? "pause" : "resume" }, ["paused"]);
    b.textContent = pausing ? "Resume" : "Pause";
    if (pausing) status(`Paused at step ${losses.at(-1)?.step ?? 0}.`);
    document.body.dataset.paused = pausing ? "1" : "0";
  });
});

$("classify").addEventListener("click", () => {
  void run("classify", async () => {
    const r = await send({ kind: "classify", text: $<HTMLInputElement>("text").value }, ["classified"]);
    if (r.kind !== "classified") return;
    const best = r.probs.indexOf(Math.max(...r.probs));
    $("result").textContent = `${r.labels[best]} (${(r.probs[best]! * 100).toFixed(1)} %) · ${r.labels.map((l, i) => `${l} ${(r.probs[i]! * 100).toFixed(1)} %`).join(" · ")}`;
    $("result").dataset.label = r.labels[best];
  });
});

function download(name: string, bytes: Uint8Array): void {
  const url = URL.createObjectURL(new Blob([bytes as Uint8Array<ArrayBuffer>]));
  const a = document.createElement("a");
  a.href = url;
  a.download = name;
  a.click();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

for (const [id, format] of [["export-zip", "zip"], ["export-compeft", "compeft"]] as const) {
  $(id).addEventListener("click", () => {
    void run("export", async () => {
      const r = await send({ kind: "export", format }, ["exported"]);
      if (r.kind === "exported") download(r.name, r.bytes);
    });
  });
}

$("import").addEventListener("change", () => {
  const f = $<HTMLInputElement>("import").files?.[0];
  if (!f) return;
  void run("import", async () => {
    const bytes = new Uint8Array(await f.arrayBuffer());
    const r = await send({ kind: "import", name: f.name, bytes }, ["imported"], [bytes.buffer]);
    if (r.kind !== "imported") return;
    showTest(`imported ${r.name}`, r.test);
    document.body.dataset.imported = r.name;
    enableTrained(true);
  });
});

$("probe").addEventListener("click", () => {
  void run("check", async () => {
    const r = await send({ kind: "probe" }, ["probed"]);
    if (r.kind === "probed") $("probe-out").textContent = JSON.stringify(r.result);
  });
});

/** What the chart shows, for scripts driving the page (the tests read the curve from here). */
(window as unknown as { peftLab: { losses: typeof losses; accs: typeof accs } }).peftLab = { losses, accs };

/** For `npm run bench -- browser`: training sentences/s and forward latency in this page's backend. */
(window as unknown as { peftBench: (steps: number, batchSize: number, forwards: number) => Promise<BenchResult> }).peftBench = async (steps, batchSize, forwards) => {
  const r = await send({ kind: "bench", steps, batchSize, forwards }, ["benched"]);
  if (r.kind !== "benched") throw new Error("no bench result");
  return r.result;
};

/** Registers the service worker (web/sw.ts) that caches the whole build, so a reload works offline. */
async function offline(): Promise<void> {
  const el = $("offline");
  if (!("serviceWorker" in navigator)) {
    el.textContent = "Offline use needs a secure origin (https or localhost).";
    return;
  }
  try {
    await navigator.serviceWorker.register(new URL("sw.js", import.meta.url));
    await navigator.serviceWorker.ready;
    if (!navigator.serviceWorker.controller) await new Promise((r) => navigator.serviceWorker.addEventListener("controllerchange", r, { once: true }));
    el.textContent = "Works offline: the app, onnxruntime and the model are cached.";
    document.body.dataset.offline = "1";
  } catch (err) {
    el.textContent = `No offline cache: ${(err as Error).message}`;
  }
}

draw();
void init();
void offline();
