/**
 * Tuner conformance suite: every case of `TUNER_CASES` (a PEFT method and options on one of the
 * tiny fixture bases) must behave as Python PEFT does for the same calls. What PEFT creates
 * (tensor names, shapes, merge formulas, parameter counts) is written out here independently of
 * `src/tuners`, from the base model's own safetensors file.
 */
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { AdapterStateError, UnsupportedOptionError } from "../errors.js";
import * as G from "../graph/api.js";
import { grad } from "../graph/autodiff.js";
import { crossEntropy } from "../graph/composite.js";
import { loadSafetensors } from "../io/safetensors.js";
import { type LoadedModel, loadModel } from "../models/load.js";
import { CompiledGraph } from "../runtime/session.js";
import { type Tensor, numel, toFloat32 } from "../tensor.js";
import { fixturePath } from "../util/paths.js";
import { PEFT_TS_VERSION } from "../util/version.js";
import { PeftModel } from "./peft-model.js";

type Arch = "bert" | "gpt2" | "llama";

/** One thing PEFT adds for an adapter, written out by hand. */
type Part =
  | { readonly kind: "lora"; readonly module: string; readonly r: number; readonly alpha: number }
  | { readonly kind: "ia3"; readonly module: string; readonly feedforward: boolean }
  | { readonly kind: "saved"; readonly module: string }
  /** A base bias trained in place (PEFT's `bias` option): saved with the adapter, no extra parameter. */
  | { readonly kind: "bias"; readonly module: string }
  | { readonly kind: "prompt"; readonly tokens: number };

interface TunerCase {
  readonly name: string;
  readonly arch: Arch;
  /** A PEFT config with PEFT's default initialisation. */
  readonly config: Readonly<Record<string, unknown>>;
  /** Keys that make a freshly created adapter non-trivial (random). */
  readonly random: Readonly<Record<string, unknown>>;
  readonly parts: readonly Part[];
  readonly rslora?: boolean;
  readonly dora?: boolean;
}

/** Shell-style brace expansion: `a.{0,1}.{q,v}` → a.0.q, a.0.v, a.1.q, a.1.v (nesting allowed). */
function expand(pattern: string): string[] {
  const open = pattern.indexOf("{");
  if (open < 0) return [pattern];
  let depth = 0;
  let close = -1;
  const cuts: number[] = [];
  for (let i = open; i < pattern.length && close < 0; i++) {
    const ch = pattern[i];
    if (ch === "{") depth++;
    else if (ch === "}" && --depth === 0) close = i;
    else if (ch === "," && depth === 1) cuts.push(i);
  }
  const bounds = [open, ...cuts, close];
  const alternatives = bounds.slice(1).map((end, k) => pattern.slice(bounds[k]! + 1, end));
  return alternatives.flatMap((alt) => expand(pattern.slice(0, open) + alt + pattern.slice(close + 1)));
}

const lora = (pattern: string, r: number, alpha: number): Part[] => expand(pattern).map((module) => ({ kind: "lora", module, r, alpha }));
const ia3 = (pattern: string, feedforward: boolean): Part[] => expand(pattern).map((module) => ({ kind: "ia3", module, feedforward }));
const saved = (module: string): Part => ({ kind: "saved", module });
const bias = (pattern: string): Part[] => expand(pattern).map((module) => ({ kind: "bias", module }));

const BERT_LAYER = "bert.encoder.layer.{0,1}";
const LLAMA_LAYER = "model.layers.{0,1}";
const GPT2_LAYER = "transformer.h.{0,1}";

export const TUNER_CASES: readonly TunerCase[] = [
  {
    name: "LoRA (SEQ_CLS, classifier saved)",
    arch: "bert",
    config: { peft_type: "LORA", task_type: "SEQ_CLS", r: 4, lora_alpha: 8, target_modules: ["query", "value"] },
    random: { init_lora_weights: false },
    parts: [...lora(`${BERT_LAYER}.attention.self.{query,value}`, 4, 8), saved("classifier")],
  },
  {
    name: "rsLoRA",
    arch: "llama",
    config: { peft_type: "LORA", task_type: "CAUSAL_LM", r: 4, lora_alpha: 16, use_rslora: true, target_modules: ["q_proj", "v_proj"] },
    random: { init_lora_weights: false },
    parts: lora(`${LLAMA_LAYER}.self_attn.{q_proj,v_proj}`, 4, 16),
    rslora: true,
  },
  {
    name: "DoRA",
    arch: "llama",
    config: { peft_type: "LORA", r: 4, lora_alpha: 8, use_dora: true, target_modules: ["q_proj", "k_proj", "v_proj", "o_proj"] },
    random: { init_lora_weights: false },
    parts: lora(`${LLAMA_LAYER}.self_attn.{q,k,v,o}_proj`, 4, 8),
    dora: true,
  },
  {
    name: "LoRA fan_in_fan_out (Conv1D)",
    arch: "gpt2",
    config: { peft_type: "LORA", task_type: "CAUSAL_LM", r: 4, lora_alpha: 8, fan_in_fan_out: true, target_modules: ["c_attn", "mlp.c_proj"] },
    random: { init_lora_weights: false },
    parts: lora(`${GPT2_LAYER}.{attn.c_attn,mlp.c_proj}`, 4, 8),
  },
  {
    name: "DoRA fan_in_fan_out (Conv1D)",
    arch: "gpt2",
    config: { peft_type: "LORA", r: 2, lora_alpha: 4, use_dora: true, fan_in_fan_out: true, target_modules: ["c_attn"] },
    random: { init_lora_weights: false },
    parts: lora(`${GPT2_LAYER}.attn.c_attn`, 2, 4),
    dora: true,
  },
  {
    name: "LoRA all-linear",
    arch: "llama",
    config: { peft_type: "LORA", task_type: "CAUSAL_LM", r: 2, lora_alpha: 4, target_modules: "all-linear" },
    random: { init_lora_weights: false },
    parts: lora(`${LLAMA_LAYER}.{self_attn.{q,k,v,o}_proj,mlp.{gate,up,down}_proj}`, 2, 4),
  },
  {
    name: "LoRA rank/alpha patterns + layers_to_transform",
    arch: "bert",
    config: {
      peft_type: "LORA",
      task_type: "SEQ_CLS",
      r: 4,
      lora_alpha: 4,
      target_modules: ["query", "value"],
      layers_to_transform: [1],
      rank_pattern: { query: 2 },
      alpha_pattern: { value: 6 },
    },
    random: { init_lora_weights: false },
    parts: [...lora("bert.encoder.layer.1.attention.self.query", 2, 4), ...lora("bert.encoder.layer.1.attention.self.value", 4, 6), saved("classifier")],
  },
  {
    name: "LoRA regex target + exclude_modules + gaussian init",
    arch: "llama",
    config: {
      peft_type: "LORA",
      r: 4,
      lora_alpha: 8,
      target_modules: ".*\\.layers\\.1\\.mlp\\..*_proj",
      exclude_modules: ["gate_proj"],
      rank_pattern: { up_proj: 2 },
      init_lora_weights: "gaussian",
    },
    random: { init_lora_weights: false },
    parts: [...lora("model.layers.1.mlp.up_proj", 2, 8), ...lora("model.layers.1.mlp.down_proj", 4, 8)],
  },
  {
    name: "LoRA bias='lora_only'",
    arch: "bert",
    config: { peft_type: "LORA", r: 4, lora_alpha: 8, bias: "lora_only", target_modules: ["query", "value"] },
    random: { init_lora_weights: false },
    parts: [...lora(`${BERT_LAYER}.attention.self.{query,value}`, 4, 8), ...bias(`${BERT_LAYER}.attention.self.{query,value}`)],
  },
  {
    name: "LoRA bias='all' (Conv1D)",
    arch: "gpt2",
    config: { peft_type: "LORA", r: 2, lora_alpha: 2, bias: "all", fan_in_fan_out: true, target_modules: ["c_fc"] },
    random: { init_lora_weights: false },
    parts: [...lora(`${GPT2_LAYER}.mlp.c_fc`, 2, 2), ...bias(`{${GPT2_LAYER}.{ln_1,attn.c_attn,attn.c_proj,ln_2,mlp.c_fc,mlp.c_proj},transformer.ln_f}`)],
  },
  {
    name: "(IA)³",
    arch: "llama",
    config: { peft_type: "IA3", task_type: "CAUSAL_LM", target_modules: ["k_proj", "v_proj", "down_proj"], feedforward_modules: ["down_proj"] },
    random: { init_ia3_weights: false },
    parts: [...ia3(`${LLAMA_LAYER}.self_attn.{k_proj,v_proj}`, false), ...ia3(`${LLAMA_LAYER}.mlp.down_proj`, true)],
  },
  {
    name: "(IA)³ SEQ_CLS (feed-forward suffix match)",
    arch: "bert",
    config: { peft_type: "IA3", task_type: "SEQ_CLS", target_modules: ["key", "value", "output.dense"], feedforward_modules: ["output.dense"] },
    random: { init_ia3_weights: false },
    parts: [...ia3(`${BERT_LAYER}.attention.self.{key,value}`, false), ...ia3(`${BERT_LAYER}.{attention.output.dense,output.dense}`, true), saved("classifier")],
  },
  {
    name: "(IA)³ fan_in_fan_out (Conv1D)",
    arch: "gpt2",
    config: { peft_type: "IA3", target_modules: ["c_attn", "mlp.c_proj"], feedforward_modules: ["mlp.c_proj"], fan_in_fan_out: true },
    random: { init_ia3_weights: false },
    parts: [...ia3(`${GPT2_LAYER}.attn.c_attn`, false), ...ia3(`${GPT2_LAYER}.mlp.c_proj`, true)],
  },
  {
    name: "prompt tuning",
    arch: "gpt2",
    config: { peft_type: "PROMPT_TUNING", task_type: "CAUSAL_LM", num_virtual_tokens: 4 },
    random: {},
    parts: [{ kind: "prompt", tokens: 4 }],
  },
  {
    name: "prompt tuning (SAMPLE_VOCAB)",
    arch: "llama",
    config: { peft_type: "PROMPT_TUNING", task_type: "CAUSAL_LM", num_virtual_tokens: 3, prompt_tuning_init: "SAMPLE_VOCAB" },
    random: {},
    parts: [{ kind: "prompt", tokens: 3 }],
  },
];

// ------------------------------------------------------------------------------ fixtures

interface Base {
  readonly model: LoadedModel;
  /** The base checkpoint as stored (tied weights such as GPT-2's lm_head absent). */
  readonly file: Map<string, Tensor>;
  readonly inputIds: Tensor<"int64">;
  readonly mask: Tensor<"int64">;
  /** transformers' logits for the inputs. */
  readonly logits: Tensor;
}

const bases = new Map<Arch, Base>();
function base(arch: Arch): Base {
  let b = bases.get(arch);
  if (!b) {
    const io = loadSafetensors(fixturePath("peft-parity", arch, "base.outputs.safetensors")).tensors;
    b = {
      model: loadModel(fixturePath("peft-parity", arch, "base")),
      file: loadSafetensors(fixturePath("peft-parity", arch, "base", "model.safetensors")).tensors,
      inputIds: io.get("input_ids") as Tensor<"int64">,
      mask: io.get("attention_mask") as Tensor<"int64">,
      logits: io.get("logits")!,
    };
    bases.set(arch, b);
  }
  return b;
}

const tmpRoot = mkdtempSync(join(tmpdir(), "peft-conformance-"));
let tmpCount = 0;
const freshDir = (): string => join(tmpRoot, `d${tmpCount++}`);
after(() => rmSync(tmpRoot, { recursive: true, force: true }));

function maxDiff(a: Tensor, b: Tensor): number {
  assert.deepEqual([...a.shape], [...b.shape], "shapes differ");
  const x = toFloat32(a);
  const y = toFloat32(b);
  let m = 0;
  for (let i = 0; i < x.length; i++) m = Math.max(m, Math.abs(x[i]! - y[i]!));
  return m;
}

function maxAbs(t: Tensor): number {
  return toFloat32(t).reduce((m, x) => Math.max(m, Math.abs(x)), 0);
}

const isConv1d = (arch: Arch): boolean => arch === "gpt2";

/** [in, out] of a linear module, from its stored weight (Conv1D stores [in, out], nn.Linear [out, in]). */
function features(b: Base, arch: Arch, module: string): [number, number] {
  const w = b.file.get(`${module}.weight`);
  assert.ok(w, `base has no ${module}.weight`);
  const [d0, d1] = w.shape as [number, number];
  return isConv1d(arch) ? [d0, d1] : [d1, d0];
}

/** The adapter tensors PEFT creates (name without `base_model.model.` → shape). */
function expectedTensors(c: TunerCase): Map<string, number[]> {
  const b = base(c.arch);
  const out = new Map<string, number[]>();
  for (const p of c.parts) {
    if (p.kind === "lora") {
      const [fin, fout] = features(b, c.arch, p.module);
      out.set(`${p.module}.lora_A.weight`, [p.r, fin]);
      out.set(`${p.module}.lora_B.weight`, [fout, p.r]);
      if (c.dora) out.set(`${p.module}.lora_magnitude_vector`, [fout]);
    } else if (p.kind === "ia3") {
      const [fin, fout] = features(b, c.arch, p.module);
      out.set(`${p.module}.ia3_l`, p.feedforward ? [1, fin] : [fout, 1]);
    } else if (p.kind === "saved") {
      for (const [k, t] of b.file) if (k.startsWith(`${p.module}.`)) out.set(k, [...t.shape]);
    } else if (p.kind === "bias") {
      out.set(`${p.module}.bias`, [...b.file.get(`${p.module}.bias`)!.shape]);
    } else {
      const emb = [...b.file.entries()].find(([k]) => /(wte|word_embeddings|embed_tokens)\.weight$/u.test(k))!;
      out.set("prompt_embeddings", [p.tokens, emb[1].shape[1]!]);
    }
  }
  return out;
}

/** The PEFT state-dict key of an adapter tensor. */
const peftKey = (key: string): string => (key === "prompt_embeddings" ? key : `base_model.model.${key}`);

const isPrompt = (c: TunerCase): boolean => c.parts.some((p) => p.kind === "prompt");

// ---------------------------------------------------------------------- merge, by hand

/** W + s·B·A (or DoRA's m/‖W + s·B·A‖·(W + s·B·A)) in the stored layout, float64. */
function mergedLora(c: TunerCase, p: Extract<Part, { kind: "lora" }>, w: Tensor, t: ReadonlyMap<string, Tensor>): Float64Array {
  const [fin, fout] = features(base(c.arch), c.arch, p.module);
  const A = toFloat32(t.get(`${p.module}.lora_A.weight`)!);
  const B = toFloat32(t.get(`${p.module}.lora_B.weight`)!);
  const s = c.rslora ? p.alpha / Math.sqrt(p.r) : p.alpha / p.r;
  const wd = toFloat32(w);
  const at = (o: number, i: number): number => (isConv1d(c.arch) ? i * fout + o : o * fin + i);
  const out = new Float64Array(wd.length);
  for (let o = 0; o < fout; o++) {
    for (let i = 0; i < fin; i++) {
      let d = 0;
      for (let k = 0; k < p.r; k++) d += B[o * p.r + k]! * A[k * fin + i]!;
      out[at(o, i)] = wd[at(o, i)]! + s * d;
    }
  }
  if (c.dora) {
    const m = toFloat32(t.get(`${p.module}.lora_magnitude_vector`)!);
    for (let o = 0; o < fout; o++) {
      let n = 0;
      for (let i = 0; i < fin; i++) n += out[at(o, i)]! ** 2;
      for (let i = 0; i < fin; i++) out[at(o, i)]! *= m[o]! / Math.sqrt(n);
    }
  }
  return out;
}

/** The full state dict PEFT's `merge_and_unload` gives for this adapter. */
function expectedMerged(c: TunerCase, t: ReadonlyMap<string, Tensor>): Map<string, Float64Array> {
  const b = base(c.arch);
  const out = new Map<string, Float64Array>([...b.file].map(([k, v]) => [k, Float64Array.from(toFloat32(v))]));
  for (const p of c.parts) {
    if (p.kind === "lora") out.set(`${p.module}.weight`, mergedLora(c, p, b.file.get(`${p.module}.weight`)!, t));
    else if (p.kind === "saved") {
      for (const k of out.keys()) if (k.startsWith(`${p.module}.`)) out.set(k, Float64Array.from(toFloat32(t.get(k)!)));
    } else if (p.kind === "bias") {
      out.set(`${p.module}.bias`, Float64Array.from(toFloat32(t.get(`${p.module}.bias`)!)));
    } else if (p.kind === "ia3") {
      const [fin, fout] = features(b, c.arch, p.module);
      const l = toFloat32(t.get(`${p.module}.ia3_l`)!);
      const w = out.get(`${p.module}.weight`)!;
      for (let o = 0; o < fout; o++) {
        for (let i = 0; i < fin; i++) w[isConv1d(c.arch) ? i * fout + o : o * fin + i]! *= l[p.feedforward ? i : o]!;
      }
      const bias = out.get(`${p.module}.bias`);
      if (bias && !p.feedforward) for (let o = 0; o < fout; o++) bias[o]! *= l[o]!;
    }
  }
  return out;
}

// ------------------------------------------------------------------------------ helpers

function create(c: TunerCase, random: boolean, name = "default", seed = 1): PeftModel {
  const pm = new PeftModel(base(c.arch).model);
  pm.addAdapter(name, random ? { ...c.config, ...c.random } : c.config, { seed });
  if (random) {
    // a DoRA magnitude other than ‖W + ΔW‖ and a modules_to_save copy other than the original,
    // so the rescaling and the copy both matter
    const a = pm.adapter(name);
    const scaled = new Map<string, Tensor>();
    for (const [k, v] of a.tensors) {
      if (k.endsWith("lora_magnitude_vector") || base(c.arch).file.has(k)) {
        scaled.set(k, { dtype: "float32", shape: v.shape, data: Float32Array.from(toFloat32(v), (x, i) => x * (0.6 + (i % 5) / 5)) });
      }
    }
    pm.updateAdapterTensors(name, scaled);
  }
  return pm;
}

const run = (pm: PeftModel, c: TunerCase): Promise<Tensor> => pm.forward({ inputIds: base(c.arch).inputIds, attentionMask: base(c.arch).mask });

function groupDigits(n: number): string {
  return String(n).replace(/\B(?=(\d{3})+(?!\d))/gu, ",");
}

function sumNumel(shapes: Iterable<readonly number[]>): number {
  let s = 0;
  for (const sh of shapes) s += numel(sh);
  return s;
}

// ------------------------------------------------------------------------------ the suite

for (const c of TUNER_CASES) {
  describe(`${c.arch}: ${c.name}`, () => {
    if (!isPrompt(c)) {
      test("a freshly created adapter (PEFT's default init) leaves the outputs unchanged", async () => {
        const pm = create(c, false);
        const expected = expectedTensors(c);
        for (const [k, t] of pm.adapter("default").tensors) {
          assert.ok(expected.has(k), `unexpected tensor ${k}`);
          const v = toFloat32(t);
          if (k.endsWith("lora_B.weight")) assert.ok(v.every((x) => x === 0), `${k} must start at zero`);
          if (k.endsWith("lora_A.weight")) assert.ok(v.some((x) => x !== 0), `${k} must be random`);
          if (k.endsWith("ia3_l")) assert.ok(v.every((x) => x === 1), `${k} must start at one`);
        }
        const out = await run(pm, c);
        const off = await pm.disableAdapter(() => run(pm, c));
        assert.ok(maxDiff(off, base(c.arch).logits) < 1e-4, "disabled adapter = transformers' base logits");
        assert.ok(maxDiff(out, off) < 1e-5, `outputs changed by ${maxDiff(out, off)}`);
        await pm.dispose();
      });
    }

    test("a random adapter changes the outputs; merged and unmerged outputs agree", async () => {
      const pm = create(c, true);
      const live = await run(pm, c);
      const b = base(c.arch);
      if (isPrompt(c)) {
        const n = (c.parts[0] as { tokens: number }).tokens;
        assert.deepEqual([...live.shape], [b.logits.shape[0], b.logits.shape[1]! + n, b.logits.shape[2]]);
        assert.throws(() => pm.mergeAdapter(), UnsupportedOptionError);
        assert.deepEqual(pm.mergedAdapters, []);
        await pm.dispose();
        return;
      }
      const change = maxDiff(live, b.logits);
      const scale = maxAbs(b.logits);
      assert.ok(change > 0.01 * scale, `a random adapter must change the logits (by ${change}, scale ${scale})`);
      // merge_and_unload state dict = the formula, computed here
      const want = expectedMerged(c, pm.adapter("default").tensors);
      const merged = pm.mergeAndUnload();
      assert.deepEqual(pm.mergedAdapters, [], "mergeAndUnload leaves the PeftModel unmerged");
      for (const [k, w] of want) {
        const got = toFloat32(merged.weights.get(k));
        let d = 0;
        for (let i = 0; i < w.length; i++) d = Math.max(d, Math.abs(got[i]! - w[i]!));
        assert.ok(d < 1e-5, `merged ${k} differs by ${d}`);
      }
      pm.mergeAdapter();
      assert.deepEqual(pm.mergedAdapters, ["default"]);
      const m = await run(pm, c);
      console.log(`${c.arch} ${c.name}: change ${change.toExponential(2)}, merged vs live ${maxDiff(m, live).toExponential(2)}, scale ${scale.toExponential(2)}`);
      assert.ok(maxDiff(m, live) < 1e-5 * Math.max(1, scale), `merged vs unmerged: ${maxDiff(m, live)}`);
      pm.unmergeAdapter();
      assert.ok(maxDiff(await run(pm, c), live) < 1e-6, "unmerge restores the adapter-live outputs");
      await pm.dispose();
    });

    test("save → load round-trips keys, dtypes, shapes, values and the parsed config", async () => {
      const pm = create(c, true);
      const dir = freshDir();
      assert.deepEqual(pm.savePretrained(dir), [dir]);
      const { tensors, metadata } = loadSafetensors(join(dir, "adapter_model.safetensors"));
      assert.deepEqual(metadata, { format: "pt", peft_ts_version: PEFT_TS_VERSION }, "PEFT's format key and peft-ts's writer record");
      const expected = expectedTensors(c);
      assert.deepEqual([...tensors.keys()].sort(), [...expected.keys()].map(peftKey).sort());
      const mine = pm.adapter("default").tensors;
      for (const [k, shape] of expected) {
        const t = tensors.get(peftKey(k))!;
        assert.equal(t.dtype, "float32", k);
        assert.deepEqual([...t.shape], shape, k);
        assert.deepEqual(t.data, mine.get(k)!.data, `${k} values`);
      }
      const raw = JSON.parse(readFileSync(join(dir, "adapter_config.json"), "utf8")) as Record<string, unknown>;
      assert.equal(raw.peft_type, c.config.peft_type);
      assert.equal(raw.inference_mode, true);
      const loaded = PeftModel.fromPretrained(base(c.arch).model, dir, { isTrainable: true });
      assert.deepEqual(loaded.adapter("default").config, pm.adapter("default").config);
      const frozen = PeftModel.fromPretrained(base(c.arch).model, dir);
      assert.deepEqual(frozen.adapter("default").config, { ...pm.adapter("default").config, inferenceMode: true });
      for (const [k, t] of loaded.adapter("default").tensors) assert.deepEqual(t.data, mine.get(k)?.data, k);
      assert.equal(loaded.adapter("default").tensors.size, mine.size);
      assert.ok(maxDiff(await run(loaded, c), await run(pm, c)) < 1e-7);
      await Promise.all([pm.dispose(), loaded.dispose(), frozen.dispose()]);
    });

    test("only adapter parameters are inputs of a training graph, and each gets a non-zero gradient", async () => {
      const pm = create(c, true);
      const b = base(c.arch);
      const logits = await run(pm, c);
      const built = pm.buildGraph({ training: true });
      const expected = expectedTensors(c);
      const savedKeys = new Set([...expected.keys()].filter((k) => b.file.has(k)));
      const wantInputs = [...expected.keys()].map((k) => (savedKeys.has(k) ? k : `default/${k}`));
      assert.deepEqual([...built.trainable.keys()].sort(), [...wantInputs].sort());
      const inputs = built.graph.inputs.map((v) => v.name!);
      assert.deepEqual([...inputs].sort(), ["attention_mask", "input_ids", ...wantInputs].sort());
      for (const n of inputs) assert.ok(!b.file.has(n) || savedKeys.has(n), `frozen base weight ${n} is a graph input`);
      const initializers = new Set(built.graph.initializers.map((v) => v.name));
      for (const p of c.parts) {
        if (p.kind === "lora" || p.kind === "ia3") assert.ok(initializers.has(`${p.module}.weight`), `${p.module}.weight is a frozen initializer`);
      }
      assert.ok([...b.file.keys()].some((k) => initializers.has(k)), "base weights are initializers");

      const g = built.graph;
      const vocab = logits.shape[logits.shape.length - 1]!;
      const rows = numel(logits.shape) / vocab;
      const labels = g.input("labels", "int64", ["n"]);
      const loss = crossEntropy(G.reshape(built.outputs.logits, [-1, vocab]), labels);
      const wrt = wantInputs.map((n) => built.graph.inputs.find((v) => v.name === n)!);
      const grads = grad(loss, wrt);
      g.output(loss, "loss");
      grads.forEach((gv, i) => g.output(gv, `grad_${i}`));
      const session = await CompiledGraph.create(g);
      const feeds: Record<string, Tensor> = {
        input_ids: b.inputIds,
        attention_mask: b.mask,
        labels: { dtype: "int64", shape: [rows], data: BigInt64Array.from({ length: rows }, (_, i) => BigInt((i * 7 + 3) % vocab)) },
      };
      for (const [k, t] of built.trainable) feeds[k] = t;
      const res = await session.run(feeds);
      assert.ok(Number.isFinite(toFloat32(res.loss!)[0]), "finite loss");
      wantInputs.forEach((n, i) => {
        const gt = res[`grad_${i}`]!;
        assert.deepEqual([...gt.shape], [...built.trainable.get(n)!.shape], `gradient shape of ${n}`);
        const v = toFloat32(gt);
        assert.ok(v.every(Number.isFinite), `gradient of ${n} is finite`);
        assert.ok(v.some((x) => x !== 0), `gradient of ${n} is zero`);
      });
      await session.release();
      await pm.dispose();
    });

    test("add / set / delete adapters", async () => {
      const b = base(c.arch);
      const pm = create(c, true);
      const first = await run(pm, c);
      pm.addAdapter("other", { ...c.config, ...c.random }, { seed: 7 });
      assert.deepEqual(pm.adapterNames, ["default", "other"]);
      assert.deepEqual(pm.activeAdapters, ["default"], "add_adapter does not activate the new adapter");
      assert.throws(() => pm.addAdapter("other", c.config), AdapterStateError);
      assert.throws(() => pm.setAdapter("missing"), (e: unknown) => e instanceof AdapterStateError && /missing/u.test(e.message));
      assert.deepEqual(pm.activeAdapters, ["default"], "a failed set_adapter changes nothing");
      pm.setAdapter("other");
      assert.equal(pm.activeAdapter, "other");
      const second = await run(pm, c);
      assert.ok(maxDiff(first, second) > 1e-4, "the two adapters give different outputs");

      const dir = freshDir();
      assert.deepEqual(pm.savePretrained(dir), [dir, join(dir, "other")]);
      assert.ok(existsSync(join(dir, "adapter_model.safetensors")) && existsSync(join(dir, "other", "adapter_config.json")));
      const only = freshDir();
      assert.deepEqual(pm.savePretrained(only, { selectedAdapters: ["other"] }), [join(only, "other")]);
      assert.ok(!existsSync(join(only, "adapter_config.json")), "an unselected adapter is not saved");

      pm.deleteAdapter("other");
      assert.deepEqual(pm.adapterNames, ["default"]);
      assert.deepEqual(pm.activeAdapters, ["default"], "deleting the active adapter activates a remaining one");
      assert.ok(maxDiff(await run(pm, c), first) < 1e-6);
      assert.throws(() => pm.deleteAdapter("other"), AdapterStateError);
      if (!isPrompt(c)) {
        pm.mergeAdapter();
        assert.throws(() => pm.deleteAdapter("default"), AdapterStateError, "a merged adapter cannot be deleted");
        pm.unmergeAdapter();
      }
      pm.deleteAdapter("default");
      assert.deepEqual(pm.adapterNames, []);
      assert.ok(maxDiff(await run(pm, c), b.logits) < 1e-4, "no adapter left: the base model's logits");
      await pm.dispose();
    });

    test("printTrainableParameters prints PEFT's text with PEFT's counts", async () => {
      const b = base(c.arch);
      const expected = expectedTensors(c);
      const adapterParams = sumNumel(expected.values());
      // PEFT counts every parameter once: the base (tied weights once) plus every adapter tensor,
      // modules_to_save copies included (the original module stays next to its copy), but not
      // base biases trained in place.
      const inPlace = new Set(c.parts.flatMap((p) => (p.kind === "bias" ? [`${p.module}.bias`] : [])));
      const extra = sumNumel([...expected].filter(([k]) => !inPlace.has(k)).map(([, sh]) => sh));
      const baseParams = sumNumel([...b.file.values()].map((t) => t.shape));
      const line = (t: number, all: number): string =>
        `trainable params: ${groupDigits(t)} || all params: ${groupDigits(all)} || trainable%: ${((100 * t) / all).toFixed(4)}`;

      const pm = create(c, false);
      const logged: string[] = [];
      const text = pm.printTrainableParameters((s) => logged.push(s));
      assert.equal(text, line(adapterParams, baseParams + extra));
      assert.deepEqual(logged, [text]);
      assert.deepEqual(pm.getNbTrainableParameters(), [adapterParams, baseParams + extra]);

      // a second, inactive adapter is frozen but still counted in all params
      pm.addAdapter("other", c.config);
      assert.equal(pm.printTrainableParameters(() => undefined), line(adapterParams, baseParams + 2 * extra));

      // from_pretrained loads for inference (frozen) unless is_trainable
      const dir = freshDir();
      pm.savePretrained(dir, { selectedAdapters: ["default"] });
      const frozen = PeftModel.fromPretrained(b.model, dir);
      assert.equal(frozen.printTrainableParameters(() => undefined), line(0, baseParams + extra));
      const trainable = PeftModel.fromPretrained(b.model, dir, { isTrainable: true });
      assert.equal(trainable.printTrainableParameters(() => undefined), line(adapterParams, baseParams + extra));
      assert.match(text, /^trainable params: [\d,]+ \|\| all params: [\d,]+ \|\| trainable%: \d+\.\d{4}$/u);
    });
  });
}
