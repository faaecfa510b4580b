/**
 * The training worker: onnxruntime-web and the whole peft-ts run here, off the page's thread.
 * Files come from the page's origin (USE-lite's TF.js files under ./use-lite/, the UCI sources
 * under ./data/, onnxruntime's .wasm under ./ort/) or from the user's file pickers.
 */
import { type Dataset, PeftModel, ort } from "peft-ts/web";
import {
  type FetchBytes,
  type LabBase,
  type LabSplit,
  PauseGate,
  adapterConfig,
  benchLab,
  classify,
  evaluate,
  exportCompeft,
  exportZip,
  fetchUseLiteFiles,
  hfBase,
  importAdapter,
  loadLabDataset,
  probe,
  splitAndTokenize,
  trainAdapter,
  useLiteBase,
} from "peft-ts/web";
import type { Reply, Request } from "./protocol.js";

const scope = self as unknown as { postMessage(m: Reply, transfer?: Transferable[]): void; onmessage: ((e: MessageEvent<Request>) => void) | null; location: Location };

const origin = (path: string): FetchBytes => async (name) => {
  const r = await fetch(new URL(`${path}${name}`, scope.location.href));
  if (!r.ok) throw new Error(`GET ${path}${name}: HTTP ${r.status}`);
  return new Uint8Array(await r.arrayBuffer());
};

const SEED = 0;
let useLiteFiles: Map<string, Uint8Array> | null = null;
let hf: { files: ReadonlyMap<string, Uint8Array>; label: string } | null = null;
let dataset: Dataset | null = null;
let base: LabBase | null = null;
let split: LabSplit | null = null;
let pm: PeftModel | null = null;
let ep: "cpu" | "webgpu" = "cpu";
const gate = new PauseGate();

function post(m: Reply, transfer: Transferable[] = []): void {
  scope.postMessage(m, transfer);
}

async function rebuildBase(): Promise<void> {
  if (!dataset) return;
  base = hf ? hfBase(hf.files, hf.label) : useLiteBase(useLiteFiles ?? (useLiteFiles = new Map(await fetchUseLiteFiles(origin("use-lite/")))), dataset.numLabels, SEED);
  split = splitAndTokenize(dataset, base, SEED);
}

function need<T>(v: T | null, what: string): T {
  if (v === null) throw new Error(`${what} first`);
  return v;
}

async function handle(req: Request): Promise<void> {
  switch (req.kind) {
    case "init": {
      ort.env.wasm.wasmPaths = new URL("ort/", scope.location.href).href;
      ort.env.wasm.numThreads = req.threads;
      ep = req.ep;
      useLiteFiles = new Map(await fetchUseLiteFiles(origin("use-lite/")));
      post({ kind: "ready", what: "init", detail: { threads: req.threads, ep, isolated: (self as unknown as { crossOriginIsolated?: boolean }).crossOriginIsolated ?? false, files: useLiteFiles.size } });
      return;
    }
    case "model": {
      hf = req.files ? { files: req.files, label: req.label ?? "model" } : null;
      await rebuildBase();
      post({ kind: "ready", what: "model", detail: { model: hf ? hf.label : "use-lite" } });
      return;
    }
    case "data": {
      dataset = await loadLabDataset(req.spec, origin("data/"));
      await rebuildBase();
      const s = need(split, "a dataset");
      post({ kind: "ready", what: "data", detail: { name: dataset.name, labels: dataset.labelNames, train: s.train.length, validation: s.validation.length, test: s.test.length } });
      return;
    }
    case "train": {
      const b = need(base, "pick a dataset");
      const s = need(split, "pick a dataset");
      if (pm) await pm.dispose();
      pm = PeftModel.create(b.model, adapterConfig(req.adapter, b), "default", { seed: req.options.seed });
      pm.sessionOptions = { ep };
      gate.resume();
      const r = await trainAdapter(pm, s, { ...req.options, ep }, gate, {
        onStep: (info) => post({ kind: "step", info }),
        onEval: (result) => post({ kind: "eval", result }),
      });
      post({ kind: "trained", ...r, test: await evaluate(pm, s.test) });
      return;
    }
    case "pause":
      gate.pause();
      post({ kind: "paused", paused: true });
      return;
    case "resume":
      gate.resume();
      post({ kind: "paused", paused: false });
      return;
    case "classify": {
      const probs = await classify(need(pm, "train or import an adapter"), need(base, "pick a dataset"), req.text);
      post({ kind: "classified", text: req.text, probs, labels: need(dataset, "pick a dataset").labelNames });
      return;
    }
    case "export": {
      const m = need(pm, "train or import an adapter");
      const bytes = req.format === "zip" ? exportZip(m) : exportCompeft(m);
      post({ kind: "exported", name: req.format === "zip" ? "adapter.zip" : "adapter.compeft", bytes }, [bytes.buffer]);
      return;
    }
    case "import": {
      const next = await importAdapter(need(base, "pick a dataset"), req.name, req.bytes);
      if (pm) await pm.dispose();
      pm = next;
      pm.sessionOptions = { ep };
      post({ kind: "imported", name: req.name, test: await evaluate(pm, need(split, "pick a dataset").test) });
      return;
    }
    case "evaluate":
      post({ kind: "evaluated", test: await evaluate(need(pm, "train or import an adapter"), need(split, "pick a dataset").test) });
      return;
    case "probe":
      post({ kind: "probed", result: await probe(need(useLiteFiles, "init"), ep) });
      return;
    case "bench": {
      const r = await benchLab(need(base, "pick a dataset"), need(split, "pick a dataset"), { ...req, ep });
      post({ kind: "benched", result: { ...r, ep, threads: ort.env.wasm.numThreads ?? 0 } });
      return;
    }
  }
}

scope.onmessage = (e) => {
  handle(e.data).catch((err: unknown) => {
    const error = err as { message?: string; code?: string };
    post({ kind: "error", request: e.data.kind, message: error.message ?? String(err), ...(typeof error.code === "string" ? { code: error.code } : {}) });
  });
};
