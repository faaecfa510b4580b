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

function draw(): void {
  const c = $<HTMLCanvasElement>("chart");
  const g = c.getContext("2d")!;
  const W = c.width;
  const H = c.height;
  const pad = 36;
  g.clearRect(0, 0, W, H);
  g.strokeStyle = "#c8ced8";
  g.strokeRect(pad, 10, W - 2 * pad, H - pad - 10);
  const maxLoss = Math.max(1e-6, ...losses.map((p) => p.loss));
  const x = (s: number) => pad + ((W - 2 * pad) * s) / Math.max(1, totalSteps);
  const yl = (l: number) => H - pad - ((H - pad - 10) * l) / maxLoss;
  const ya = (a: number) => H - pad - (H - pad - 10) * a;
  g.fillStyle = "#465066";
  g.font = "12px system-ui";
  g.fillText(`loss (max ${maxLoss.toFixed(3)})`, pad + 4, 24);
  g.fillText("validation accuracy", W - pad - 120, 24);
  g.fillText("step", W / 2, H - 8);
  g.strokeStyle = "#2f6fdb";
  g.beginPath();
  losses.forEach((p, i) => (i === 0 ? g.moveTo(x(p.step), yl(p.loss)) : g.lineTo(x(p.step), yl(p.loss))));
  g.stroke();
  g.fillStyle = "#d9822b";
  for (const p of accs) {
    g.beginPath();
    g.arc(x(p.step), ya(p.accuracy), 4, 0, 2 * Math.PI);
    g.fill();
  }
}

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
    status(`Model: ${label}`);
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

void init();
