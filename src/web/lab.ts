/**
 * The training lab behind the web app (exported by `peft-ts/web`), free of the DOM so that the
 * worker runs it in the browser and the tests and `npm run bench -- browser` run the very same
 * code in Node: load USE-lite or
 * a Hugging Face folder from files, build a dataset and its split, fine-tune LoRA / (IA)³ with
 * pause and resume, classify text, export and import adapters (PEFT zip or ComPEFT).
 */
import {
  type Dataset,
  type EvalResult,
  type FileMap,
  type LoadedModel,
  PeftModel,
  type StepInfo,
  type TokenizedExample,
  Trainer,
  type UciSource,
  UCI_SOURCES,
  adapterFromCompeft,
  adapterFromFiles,
  adapterToFiles,
  builtinDatasetFrom,
  collate,
  compeftAdapter,
  decodeCompeft,
  encodeCompeft,
  evaluateModel,
  isBuiltinDataset,
  modelFromFiles,
  parseCsvDataset,
  parseJsonlDataset,
  readZip,
  splitDataset,
  tokenizerFromFiles,
  uciExamples,
  useLiteAsLoadedModel,
  useLiteFromFiles,
  useLiteTfjsFileNames,
  writeZip,
} from "./core.js";

/** Fetches one file of a folder served by the page's origin (or read from disk in Node). */
export type FetchBytes = (name: string) => Promise<Uint8Array>;

/** USE-lite's TF.js files (model.json, its shards, vocab.json) through `fetchBytes`. */
export async function fetchUseLiteFiles(fetchBytes: FetchBytes): Promise<FileMap> {
  const modelJson = await fetchBytes("model.json");
  const names = useLiteTfjsFileNames(JSON.parse(new TextDecoder().decode(modelJson)) as Record<string, unknown>);
  const files = new Map<string, Uint8Array>([["model.json", modelJson]]);
  await Promise.all(names.slice(1).map(async (n) => files.set(n, await fetchBytes(n))));
  return files;
}

/** A base model ready for a classification adapter: weights, a tokenizer and its task. */
export interface LabBase {
  readonly id: string;
  readonly model: LoadedModel;
  encode(text: string): number[];
  readonly padId: number;
}

/** USE-lite with a fresh `numLabels` head (seeded as `peft train` seeds it). */
export function useLiteBase(files: FileMap, numLabels: number, seed: number, maxLength = 128): LabBase {
  const m = useLiteAsLoadedModel(useLiteFromFiles(files, "use-lite"), { numLabels, seed });
  const { tokenizer, ...model } = m;
  return { id: "use-lite", model, encode: (t) => tokenizer.encode(t).slice(0, maxLength), padId: 0 };
}

/** A Hugging Face sequence-classification folder (config.json, model.safetensors, tokenizer.json) picked by the user. */
export function hfBase(files: FileMap, label: string, maxLength = 128): LabBase {
  const model = modelFromFiles(files, label);
  if (model.def.task !== "seq-cls") throw new Error(`${label}: a ${model.config.modelType} model is not a sequence classifier; pick a BERT-style folder with a classifier head`);
  const tok = tokenizerFromFiles(files, label);
  return { id: label, model, encode: (t) => tok.encode(t, { truncation: true, maxLength }).ids, padId: tok.padTokenId ?? 0 };
}

export type DataSpec = { readonly builtin: string } | { readonly file: string; readonly text: string };

/** A built-in UCI dataset (its source files through `fetchBytes`) or a dropped JSONL / CSV file. */
export async function loadLabDataset(spec: DataSpec, fetchBytes: FetchBytes): Promise<Dataset> {
  if ("builtin" in spec) {
    if (!isBuiltinDataset(spec.builtin)) throw new Error(`unknown built-in dataset '${spec.builtin}'`);
    const rows = new Map<UciSource, unknown>();
    await Promise.all(UCI_SOURCES.map(async (s) => rows.set(s, JSON.parse(new TextDecoder().decode(await fetchBytes(`${s}.json`))))));
    return builtinDatasetFrom(spec.builtin, (s) => uciExamples(rows.get(s), s, `${s}.json`));
  }
  return /\.csv$/i.test(spec.file) ? parseCsvDataset(spec.file, spec.text) : parseJsonlDataset(spec.file, spec.text);
}

export interface LabSplit {
  readonly train: TokenizedExample[];
  readonly validation: TokenizedExample[];
  readonly test: TokenizedExample[];
}

/** The split `peft train --data <d> --seed <seed>` makes (0.8 / 0.1 / 0.1), tokenized. */
export function splitAndTokenize(ds: Dataset, base: LabBase, seed: number): LabSplit {
  const s = splitDataset(ds.examples, { seed, train: 0.8, validation: 0.1, test: 0.1 });
  const tok = (idx: readonly number[]) => idx.map((i) => ({ ids: base.encode(ds.examples[i]!.text), label: ds.examples[i]!.label }));
  return { train: tok(s.train), validation: tok(s.validation), test: tok(s.test) };
}

export interface AdapterChoice {
  readonly method: "lora" | "ia3";
  readonly r?: number;
  readonly alpha?: number;
  readonly dropout?: number;
}

/** The PEFT config `peft train` writes for this model (LoRA: the model's default targets; (IA)³: BERT's defaults). */
export function adapterConfig(c: AdapterChoice, base: LabBase): Record<string, unknown> {
  const head = { task_type: "SEQ_CLS", modules_to_save: ["classifier"] };
  if (c.method === "ia3") return { peft_type: "IA3", target_modules: ["key", "value", "output.dense"], feedforward_modules: ["output.dense"], ...head };
  return { peft_type: "LORA", r: c.r ?? 8, lora_alpha: c.alpha ?? 16, lora_dropout: c.dropout ?? 0, target_modules: [...base.model.def.loraTargets], ...head };
}

export interface TrainOptions {
  readonly epochs: number;
  readonly batchSize: number;
  readonly lr: number;
  readonly seed: number;
  readonly maxSteps?: number;
  readonly evalEvery?: number;
  /** Execution provider of the step sessions (default cpu: WASM in a browser). */
  readonly ep?: "cpu" | "webgpu";
}

/** Pause / resume between optimizer steps. */
export class PauseGate {
  private waiting: (() => void) | null = null;
  private gate: Promise<void> | null = null;
  get paused(): boolean {
    return this.gate !== null;
  }
  pause(): void {
    if (!this.gate) this.gate = new Promise((r) => (this.waiting = r));
  }
  resume(): void {
    const w = this.waiting;
    this.gate = null;
    this.waiting = null;
    w?.();
  }
  /** Resolves at once when running, or when `resume()` is called. */
  wait(): Promise<void> {
    return this.gate ?? Promise.resolve();
  }
}

export interface TrainEvents {
  onStep?(info: StepInfo): void;
  onEval?(r: EvalResult & { step: number }): void;
}

/** Fine-tunes `pm`'s active adapter as `peft train` does (AdamW, linear schedule, 6 % warm-up, clip 1). */
export async function trainAdapter(pm: PeftModel, data: LabSplit, o: TrainOptions, gate: PauseGate, ev: TrainEvents = {}): Promise<{ steps: number; seconds: number }> {
  const trainer = new Trainer(
    pm,
    {
      task: "seq-cls",
      epochs: o.epochs,
      batchSize: o.batchSize,
      lr: o.lr,
      seed: o.seed,
      weightDecay: 0.01,
      schedule: "linear",
      warmupRatio: 0.06,
      maxGradNorm: 1,
      ...(o.maxSteps !== undefined ? { maxSteps: o.maxSteps } : {}),
      ...(o.evalEvery !== undefined ? { evalEvery: o.evalEvery } : {}),
      ...(o.ep !== undefined ? { session: { ep: o.ep } } : {}),
    },
    data.train,
    data.validation,
  );
  const r = await trainer.fit({
    onStep: async (info) => {
      ev.onStep?.(info);
      // onnxruntime-web's runs resolve as microtasks: yield one macrotask so that a worker's
      // message handler (a pause) runs between steps
      await new Promise<void>((r) => setTimeout(r, 0));
      await gate.wait();
    },
    onEval: (e) => ev.onEval?.(e),
  });
  return { steps: r.steps, seconds: r.seconds };
}

/** Accuracy and loss of the active adapter on some examples (as `peft eval`). */
export function evaluate(pm: PeftModel, examples: readonly TokenizedExample[]): Promise<EvalResult> {
  return evaluateModel(pm, examples, { task: "seq-cls", batchSize: 32, session: pm.sessionOptions });
}

/** Class probabilities of one text. */
export async function classify(pm: PeftModel, base: LabBase, text: string): Promise<number[]> {
  const b = collate([{ ids: base.encode(text), label: 0 }], "seq-cls", base.padId);
  const logits = Array.from((await pm.forward({ inputIds: b.inputIds, attentionMask: b.attentionMask })).data as Float32Array);
  const m = Math.max(...logits);
  const e = logits.map((x) => Math.exp(x - m));
  const s = e.reduce((a, b) => a + b, 0);
  return e.map((x) => x / s);
}

/** The active adapter as a PEFT folder zip (adapter_config.json + adapter_model.safetensors). */
export function exportZip(pm: PeftModel): Uint8Array {
  return writeZip(pm.adapterFiles());
}

/** The active adapter as a ComPEFT file (LoRA factors / (IA)³ vectors sparsified; the head dense). */
export function exportCompeft(pm: PeftModel, density = 0.5, alpha = 1): Uint8Array {
  const a = adapterFromFiles(pm.adapterFiles());
  return encodeCompeft(compeftAdapter({ configRaw: a.configRaw, weights: a.weights, weightsMetadata: a.weightsMetadata }, { density, alpha }));
}

/** Loads an exported adapter (a PEFT folder zip, a ComPEFT file, or the folder's files) onto `base` as a new model. */
export async function importAdapter(base: LabBase, name: string, bytes: Uint8Array | FileMap): Promise<PeftModel> {
  let files: FileMap;
  if (bytes instanceof Uint8Array) {
    if (/\.zip$/i.test(name)) files = await readZip(bytes, name);
    else {
      const a = adapterFromCompeft(decodeCompeft(bytes, name), name);
      files = adapterToFiles(a.configRaw, a.weights, a.weightsMetadata);
    }
  } else files = bytes;
  // loaded as trainable, as `peft eval` does: evaluation feeds the adapter tensors as graph inputs
  return PeftModel.fromFiles(base.model, files, { label: name, isTrainable: true });
}

/** Numbers the tests compare across platforms: logits of a fixed batch and the adapter after one step. */
export interface ProbeResult {
  readonly logits: number[];
  readonly loss: number;
  readonly params: Record<string, number[]>;
  /** Wall seconds of each part: building the model, the first forward (session creation included), the step (graph, session, run). */
  readonly seconds: { readonly build: number; readonly forward: number; readonly step: number };
}

export const PROBE_SENTENCES = ["The battery lasts all day.", "Terrible, it broke after a week.", "Works as described", "I would not buy this again!"];

/**
 * One seeded forward pass and one seeded SGD step (dropout off, no clipping) on a fixed batch. SGD
 * makes the step's change the gradient itself, so the comparison measures the backward pass; an
 * AdamW first step divides each gradient by its own magnitude (plus ε = 1e-8), which turns float32
 * noise in near-zero gradients into visible differences (docs/browser.md).
 */
export async function probe(useLite: FileMap, ep: "cpu" | "webgpu" = "cpu"): Promise<ProbeResult> {
  const t0 = performance.now();
  const base = useLiteBase(useLite, 2, 0);
  const pm = PeftModel.create(base.model, adapterConfig({ method: "lora", r: 4, alpha: 8 }, base), "default", { seed: 0 });
  pm.sessionOptions = { ep };
  try {
    // a LoRA B of zeros makes the first forward the base model's; one step makes it the adapter's
    const examples = PROBE_SENTENCES.map((t, i) => ({ ids: base.encode(t), label: i % 2 }));
    const b = collate(examples, "seq-cls", 0);
    const t1 = performance.now();
    const logits = Array.from((await pm.forward({ inputIds: b.inputIds, attentionMask: b.attentionMask })).data as Float32Array);
    const trainer = new Trainer(pm, { task: "seq-cls", epochs: 1, batchSize: 4, lr: 0.1, optimizer: "sgd", seed: 0, dropout: false, schedule: "constant", maxGradNorm: 0, session: { ep } }, examples);
    let loss = NaN;
    const t2 = performance.now();
    await trainer.fit({ onStep: (s) => void (loss = s.loss) });
    const t3 = performance.now();
    const params: Record<string, number[]> = {};
    for (const [k, t] of pm.adapter("default").tensors) params[k] = Array.from(t.data as Float32Array);
    return { logits, loss, params, seconds: { build: (t1 - t0) / 1000, forward: (t2 - t1) / 1000, step: (t3 - t2) / 1000 } };
  } finally {
    await pm.dispose();
  }
}

export interface BenchFigures {
  /** Training sentences per second of step time (the trainer's own step timing). */
  readonly sentencesPerSecond: number;
  /** Latency of classifying one sentence (`PeftModel.forward`, batch 1), mean over the runs. */
  readonly forwardMs: number;
}

/**
 * The `npm run bench -- browser` workload, the same in a page and in Node: a LoRA (r 8, query and
 * value) on USE-lite, one warm-up step (graph building and session creation are not timed), then
 * `steps` timed training steps of `batchSize` sentences and `forwards` timed single-sentence forwards.
 */
export async function benchLab(base: LabBase, data: LabSplit, o: { steps: number; batchSize: number; forwards: number; ep?: "cpu" | "webgpu" }): Promise<BenchFigures> {
  const pm = PeftModel.create(base.model, adapterConfig({ method: "lora" }, base), "default", { seed: 0 });
  if (o.ep) pm.sessionOptions = { ep: o.ep };
  const session = o.ep ? { session: { ep: o.ep } } : {};
  try {
    const run = (steps: number, onStep?: (i: StepInfo) => void) =>
      new Trainer(pm, { task: "seq-cls", epochs: 1, batchSize: o.batchSize, lr: 1e-3, seed: 0, maxSteps: steps, ...session }, data.train).fit(onStep ? { onStep } : {});
    await run(1);
    let secs = 0;
    await run(o.steps, (i) => void (secs += o.batchSize / i.examplesPerSecond));
    const text = "The food was great and the staff were friendly.";
    await classify(pm, base, text);
    const t0 = performance.now();
    for (let i = 0; i < o.forwards; i++) await classify(pm, base, text);
    return { sentencesPerSecond: (o.steps * o.batchSize) / secs, forwardMs: (performance.now() - t0) / o.forwards };
  } finally {
    await pm.dispose();
  }
}
