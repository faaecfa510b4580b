/** LoRA (with rsLoRA and DoRA) as a peft-ts tuner. */
import { AdapterStateError, ConfigError, UnsupportedOptionError } from "../../errors.js";
import { castTensor } from "../../models/context.js";
import { type Tensor, toFloat32 } from "../../tensor.js";
import { resolveAllLinear } from "../common/target.js";
import { targetSpecToRaw } from "../common/target.js";
import { adaptedModules, addKernelDelta, matmul64, toStoredLayout, weightOutIn } from "../common/delta.js";
import { rejectFeedforward, savedModules } from "../common/train.js";
import type { AdapterInstance, BaseModelInfo, ConvModule, LinearModule, LowRankFactors, TensorRole, TunerDef } from "../common/types.js";
import { type LoraConfig, loraConfigToRaw, moduleRankAndScale, parseLoraConfig, rewritesBase } from "./config.js";
import { oloraFactors, pissaFactors } from "./init.js";
import { LORA_PREFIX, loraKeys, loraModuleOf } from "./keys.js";
import { applyLora, applyLoraConv, mixedLoraDelta } from "./layer.js";
import { doraMagnitude, loraDeltaWeight, mergeLoraWeight } from "./merge.js";

export { type LoraConfig, LORA_DEFAULTS, parseLoraConfig, loraConfigToRaw, moduleRankAndScale, rewritesBase } from "./config.js";
export { loraKeys, loraModuleOf, LORA_PREFIX } from "./keys.js";
export { applyLora, applyLoraConv, applyMixedLora, loraDelta, type LoraFactors, type LoraConvFactors, type StackedLora } from "./layer.js";
export { loraDeltaWeight, mergeLoraWeight, doraMagnitude } from "./merge.js";

/** The linear modules a (resolved) config adapts; an empty match is an error naming what exists. */
export function loraTargets(c: LoraConfig, model: BaseModelInfo): LinearModule[] {
  return adaptedModules(c, model, "LoRA").linear;
}

/**
 * The convolution modules a config adapts (PEFT's `lora.Conv2d`): lora_A [r, in, kh, kw] with the
 * layer's kernel, stride and padding, lora_B [out, r, 1, 1]. Options peft-ts implements for linear
 * layers only are refused here, naming the option and the layer.
 */
export function loraConvTargets(c: LoraConfig, model: BaseModelInfo): ConvModule[] {
  const conv = adaptedModules(c, model, "LoRA").conv;
  const first = conv[0];
  if (!first) return conv;
  const refuse = (key: string, value: unknown, why: string) => {
    throw new UnsupportedOptionError("adapter_config.json", key, value, `${first.name} is a convolution: ${why}`);
  };
  if (c.useDora) refuse("use_dora", true, "DoRA on convolutions is not implemented");
  if (c.init.kind === "pissa" || c.init.kind === "olora") refuse("init_lora_weights", loraConfigToRaw(c).init_lora_weights, "PiSSA / OLoRA initialisation factorises 2-D weights");
  if (c.fanInFanOut) refuse("fan_in_fan_out", true, "convolution kernels are stored [out, in, kh, kw]");
  const dilated = conv.find((m) => m.dilation[0] !== 1 || m.dilation[1] !== 1);
  if (dilated) throw new UnsupportedOptionError("adapter_config.json", "target_modules", dilated.name, "a dilated convolution: PEFT's lora_A does not take the layer's dilation, so its forward and its merged weight differ");
  return conv;
}

/** Kernel of a convolution LoRA as a 2-D view: A [r, in·kh·kw], B [out, r]. */
function flatConvFactors(A: Tensor, B: Tensor): { A: Tensor; B: Tensor } {
  const [r, ...rest] = A.shape as number[];
  return { A: { ...A, shape: [r!, rest.reduce((p, d) => p * d, 1)] }, B: { ...B, shape: [B.shape[0]!, B.shape[1]!] } };
}

function uniform(n: number, bound: number, rng: { uniform(): number }): Float32Array {
  return Float32Array.from({ length: n }, () => (rng.uniform() * 2 - 1) * bound);
}

/** The role of a LoRA tensor: A and B are the factors of a low-rank update (baseline 0), DoRA's magnitude is state. */
function loraRole(key: string): TensorRole | null {
  const module = loraModuleOf(key);
  if (module === null) return null;
  const k = loraKeys(module);
  if (key === k.A) return { kind: "update", module, baseline: 0, lowRank: "A" };
  if (key === k.B) return { kind: "update", module, baseline: 0, lowRank: "B" };
  return { kind: "state", module };
}

export const lora: TunerDef<LoraConfig> = {
  name: "lora",
  peftType: "LORA",
  prefix: LORA_PREFIX,
  method: "lora",
  kind: "module",
  role: loraRole,
  mixedBatch: {
    check(a) {
      if (a.config.useDora) throw new AdapterStateError(a.name, "mixed-adapter batches do not support DoRA (as in PEFT)");
      if (rewritesBase(a.config)) throw new AdapterStateError(a.name, `init_lora_weights '${String(loraConfigToRaw(a.config).init_lora_weights)}' rewrites the base weights, which cannot change per row; save it converted to a plain LoRA (path_initial_model_for_weight_conversion)`);
    },
    stacked(site, adapters, rowIndex, dtype) {
      const { name, inFeatures: fin, outFeatures: fout } = site;
      const k = loraKeys(name);
      const users = adapters.filter((a) => a?.tensors.has(k.A));
      if (users.length === 0) return null;
      const n = adapters.length + 1;
      const rmax = Math.max(...users.map((a) => a!.tensors.get(k.A)!.shape[0]!));
      const A = new Float32Array(n * rmax * fin);
      const B = new Float32Array(n * fout * rmax);
      const S = new Float32Array(n);
      adapters.forEach((a, idx) => {
        const ta = a?.tensors.get(k.A);
        if (!a || !ta) return;
        const r = ta.shape[0]!;
        const bv = toFloat32(a.tensors.get(k.B)!);
        A.set(toFloat32(ta), idx * rmax * fin); // rows beyond r stay zero
        for (let o = 0; o < fout; o++) for (let j = 0; j < r; j++) B[idx * fout * rmax + o * rmax + j] = bv[o * r + j]!;
        S[idx] = moduleRankAndScale(a.config, name).scaling;
      });
      const cast = (d: Float32Array, shape: number[]) => site.g.constant(castTensor({ dtype: "float32", shape, data: d }, dtype));
      return mixedLoraDelta(site, { A: cast(A, [n, rmax, fin]), B: cast(B, [n, fout, rmax]), scaling: cast(S, [n]) }, rowIndex);
    },
  },
  lowRank: {
    check(a, label, purpose) {
      const conv = [...a.tensors].find(([k, t]) => k.endsWith(".lora_A.weight") && t.shape.length !== 2);
      if (conv) throw new UnsupportedOptionError(label, "target_modules", loraModuleOf(conv[0]), `convolution LoRA factors ([r, in, kh, kw]) cannot be used by ${purpose}`);
      if (a.config.useDora) throw new UnsupportedOptionError(label, "use_dora", true, `DoRA magnitude vectors cannot be used by ${purpose}`);
      if (a.config.bias !== "none") throw new UnsupportedOptionError(label, "bias", a.config.bias, `adapters that train biases cannot be used by ${purpose}; use bias 'none'`);
      if (rewritesBase(a.config)) {
        throw new UnsupportedOptionError(label, "init_lora_weights", loraConfigToRaw(a.config).init_lora_weights, `the adapter works on a rewritten base weight and cannot be used by ${purpose}; save it converted to a plain LoRA first (path_initial_model_for_weight_conversion)`);
      }
    },
    factors(a) {
      const out = new Map<string, LowRankFactors>();
      for (const [key, t] of a.tensors) {
        if (loraRole(key)?.kind !== "update" || !key.endsWith(".lora_A.weight")) continue;
        const module = loraModuleOf(key)!;
        const B = a.tensors.get(loraKeys(module).B);
        if (!B) throw new ConfigError(`adapter '${a.name}'`, loraKeys(module).B, "missing (lora_A has no matching lora_B)");
        out.set(module, { A: t, B, scaling: moduleRankAndScale(a.config, module).scaling });
      }
      return out;
    },
    rankInfo: (c) => ({ r: c.r, rankPattern: c.rankPattern, useRslora: c.useRslora, targetModules: targetSpecToRaw(c.targetModules) }),
    configFor(c, o) {
      return {
        ...loraConfigToRaw(c),
        r: o.r,
        lora_alpha: o.alpha,
        target_modules: o.targetModules,
        rank_pattern: {},
        alpha_pattern: {},
        inference_mode: false,
        ...(o.resetLayout ? { use_rslora: false, exclude_modules: null, layers_to_transform: null, layers_pattern: null } : {}),
      };
    },
    keys: (m) => loraKeys(m),
  },
  trainConfig(o, model) {
    rejectFeedforward(o, "lora");
    return {
      peft_type: "LORA",
      task_type: o.taskType,
      r: o.r,
      lora_alpha: o.alpha,
      lora_dropout: o.dropout,
      target_modules: o.target ?? [...model.defaultTargets],
      ...savedModules(o),
      ...(model.linearModules.some((m) => m.fanInFanOut) ? { fan_in_fan_out: true } : {}),
    };
  },
  parseConfig: parseLoraConfig,
  toRaw: loraConfigToRaw,
  resolve: resolveAllLinear,
  expectedTensors(c, model) {
    const out = new Map<string, readonly number[]>();
    for (const m of loraTargets(c, model)) {
      const { r } = moduleRankAndScale(c, m.name);
      const k = loraKeys(m.name);
      out.set(k.A, [r, m.inFeatures]);
      out.set(k.B, [m.outFeatures, r]);
      if (c.useDora) out.set(k.magnitude, [m.outFeatures]);
    }
    for (const m of loraConvTargets(c, model)) {
      const { r } = moduleRankAndScale(c, m.name);
      const k = loraKeys(m.name);
      out.set(k.A, [r, m.inChannels, m.kernel[0], m.kernel[1]]);
      out.set(k.B, [m.outChannels, r, 1, 1]);
    }
    return out;
  },
  init(c, model, rng) {
    const out = new Map<string, Tensor>();
    for (const m of loraTargets(c, model)) {
      const { r, scaling } = moduleRankAndScale(c, m.name);
      const k = loraKeys(m.name);
      if (c.init.kind === "pissa" || c.init.kind === "olora") {
        const stored = model.weight(`${m.name}.weight`);
        if (c.init.kind === "olora" && m.fanInFanOut) {
          throw new UnsupportedOptionError("adapter_config.json", "init_lora_weights", "olora", `${m.name} is a Conv1D layer (weight stored [in, out]); PEFT's OLoRA factorises the stored weight, which does not fit lora_A/lora_B there`);
        }
        if (r > Math.min(m.outFeatures, m.inFeatures)) {
          throw new ConfigError("adapter_config.json", "r", `${r} exceeds min(out, in) = ${Math.min(m.outFeatures, m.inFeatures)} of ${m.name}: ${c.init.kind === "pissa" ? "PiSSA" : "OLoRA"} takes r singular / QR directions of the weight`);
        }
        const w = weightOutIn(stored, m.fanInFanOut);
        const f = c.init.kind === "pissa" ? pissaFactors(w, m.outFeatures, m.inFeatures, r, scaling, c.init.niter, rng) : oloraFactors(w, m.outFeatures, m.inFeatures, r);
        out.set(k.A, { dtype: "float32", shape: [r, m.inFeatures], data: Float32Array.from(f.A) });
        out.set(k.B, { dtype: "float32", shape: [m.outFeatures, r], data: Float32Array.from(f.B) });
        if (c.useDora) out.set(k.magnitude, doraMagnitude(stored, new Float64Array(m.outFeatures * m.inFeatures), m.fanInFanOut));
        continue;
      }
      // nn.Linear's default (Kaiming-uniform, a=√5) has bound 1/√fan_in
      const a =
        c.init.kind === "gaussian"
          ? Float32Array.from({ length: r * m.inFeatures }, () => rng.normal() / r)
          : uniform(r * m.inFeatures, 1 / Math.sqrt(m.inFeatures), rng);
      const b = c.init.kind === "random" ? uniform(m.outFeatures * r, 1 / Math.sqrt(r), rng) : new Float32Array(m.outFeatures * r);
      const A: Tensor = { dtype: "float32", shape: [r, m.inFeatures], data: a };
      const B: Tensor = { dtype: "float32", shape: [m.outFeatures, r], data: b };
      out.set(k.A, A);
      out.set(k.B, B);
      if (c.useDora) out.set(k.magnitude, doraMagnitude(model.weight(`${m.name}.weight`), loraDeltaWeight(A, B, scaling), m.fanInFanOut));
    }
    for (const m of loraConvTargets(c, model)) {
      const { r } = moduleRankAndScale(c, m.name);
      const k = loraKeys(m.name);
      // nn.Conv2d's default init (Kaiming-uniform, a=√5): bound 1/√fan_in, fan_in = in·kh·kw (lora_A) or r (lora_B)
      const fanIn = m.inChannels * m.kernel[0] * m.kernel[1];
      const a = c.init.kind === "gaussian" ? Float32Array.from({ length: r * fanIn }, () => rng.normal() / r) : uniform(r * fanIn, 1 / Math.sqrt(fanIn), rng);
      const b = c.init.kind === "random" ? uniform(m.outChannels * r, 1 / Math.sqrt(r), rng) : new Float32Array(m.outChannels * r);
      out.set(k.A, { dtype: "float32", shape: [r, m.inChannels, m.kernel[0], m.kernel[1]], data: a });
      out.set(k.B, { dtype: "float32", shape: [m.outChannels, r, 1, 1], data: b });
    }
    return out;
  },
  hooks(adapter: AdapterInstance<LoraConfig>, param, opts) {
    const c = adapter.config;
    return {
      linear: (name) => {
        const k = loraKeys(name);
        if (!adapter.tensors.has(k.A)) return null;
        const { scaling } = moduleRankAndScale(c, name);
        return (site) =>
          applyLora(
            site,
            {
              A: param(k.A),
              B: param(k.B),
              scaling,
              dropout: c.loraDropout,
              ...(c.useDora ? { magnitude: param(k.magnitude) } : {}),
            },
            opts.training,
            opts.seed,
          );
      },
      conv: (name) => {
        const k = loraKeys(name);
        if (!adapter.tensors.has(k.A)) return null;
        const { scaling } = moduleRankAndScale(c, name);
        return (site) => applyLoraConv(site, { A: param(k.A), B: param(k.B), scaling, dropout: c.loraDropout }, opts.training, opts.seed);
      },
    };
  },
  baseRewrite(c, model, initial) {
    if (!rewritesBase(c)) return null;
    const out = new Map<string, Tensor>();
    for (const m of loraTargets(c, model)) {
      const k = loraKeys(m.name);
      const A = initial.get(k.A);
      const B = initial.get(k.B);
      if (!A || !B) continue;
      const { scaling } = moduleRankAndScale(c, m.name);
      const stored = model.weight(`${m.name}.weight`);
      const w = weightOutIn(stored, m.fanInFanOut);
      const ba = matmul64(toFloat32(B), toFloat32(A), m.outFeatures, A.shape[0]!, m.inFeatures);
      for (let i = 0; i < w.length; i++) w[i]! -= scaling * ba[i]!;
      out.set(`${m.name}.weight`, toStoredLayout(w, stored, m.fanInFanOut));
    }
    return out;
  },
  convertMutatedInit(adapter, initial) {
    const c = adapter.config;
    if (c.useRslora && (Object.keys(c.rankPattern).length > 0 || Object.keys(c.alphaPattern).length > 0)) {
      throw new UnsupportedOptionError(`adapter '${adapter.name}'`, "use_rslora", true, "converting to a plain LoRA is not supported with rank_pattern or alpha_pattern at the same time as use_rslora (as in PEFT)");
    }
    if (c.useDora) throw new UnsupportedOptionError(`adapter '${adapter.name}'`, "use_dora", true, "a DoRA adapter's magnitudes are tied to its base weight and cannot be converted to a plain LoRA");
    const tensors = new Map<string, Tensor>();
    for (const [key, t] of adapter.tensors) {
      const module = loraModuleOf(key);
      if (module === null || loraRole(key)?.kind !== "update") {
        tensors.set(key, t);
        continue;
      }
      const k = loraKeys(module);
      const t0 = initial.tensors.get(key);
      if (!t0) throw new ConfigError(`initial adapter '${initial.name}'`, key, "missing: it must be the adapter saved right after creation, with the same target modules");
      const [d0, d1] = t.shape as [number, number];
      const [e0, e1] = t0.shape as [number, number];
      const a = toFloat32(t);
      const b = toFloat32(t0);
      if (key === k.A) {
        // [A; A₀] stacked along the rank
        if (e1 !== d1) throw new ConfigError(`initial adapter '${initial.name}'`, key, `shape [${e0}, ${e1}] does not fit [${d0}, ${d1}]`);
        const data = new Float32Array((d0 + e0) * d1);
        data.set(a);
        data.set(b, d0 * d1);
        tensors.set(key, { dtype: "float32", shape: [d0 + e0, d1], data });
      } else {
        // [B | −B₀]
        if (e0 !== d0) throw new ConfigError(`initial adapter '${initial.name}'`, key, `shape [${e0}, ${e1}] does not fit [${d0}, ${d1}]`);
        const data = new Float32Array(d0 * (d1 + e1));
        for (let o = 0; o < d0; o++) {
          for (let j = 0; j < d1; j++) data[o * (d1 + e1) + j] = a[o * d1 + j]!;
          for (let j = 0; j < e1; j++) data[o * (d1 + e1) + d1 + j] = -b[o * e1 + j]!;
        }
        tensors.set(key, { dtype: "float32", shape: [d0, d1 + e1], data });
      }
    }
    const double = (p: Readonly<Record<string, number>>) => Object.fromEntries(Object.entries(p).map(([k, v]) => [k, 2 * v]));
    const config: LoraConfig = {
      ...c,
      init: { kind: "kaiming" },
      r: 2 * c.r,
      loraAlpha: c.useRslora ? c.loraAlpha * Math.SQRT2 : 2 * c.loraAlpha,
      rankPattern: double(c.rankPattern),
      alphaPattern: double(c.alphaPattern),
    };
    return { config, tensors };
  },
  merge(adapter, model) {
    const c = adapter.config;
    const out = new Map<string, Tensor>();
    for (const key of adapter.tensors.keys()) {
      if (!key.endsWith(".lora_A.weight")) continue;
      const name = key.slice(0, -".lora_A.weight".length);
      const k = loraKeys(name);
      const { scaling } = moduleRankAndScale(c, name);
      const wname = `${name}.weight`;
      const A = adapter.tensors.get(k.A)!;
      if (A.shape.length === 4) {
        // a convolution: ΔW[o, c, i, j] = scaling·Σ_r B[o, r]·A[r, c, i, j]
        const f = flatConvFactors(A, adapter.tensors.get(k.B)!);
        out.set(wname, addKernelDelta(model.weight(wname), loraDeltaWeight(f.A, f.B, scaling)));
        continue;
      }
      const delta = loraDeltaWeight(A, adapter.tensors.get(k.B)!, scaling);
      const mag = c.useDora ? adapter.tensors.get(k.magnitude) : undefined;
      const mod = model.linearModules.find((m) => m.name === name);
      out.set(wname, mergeLoraWeight(model.weight(wname), delta, mod?.fanInFanOut ?? c.fanInFanOut, mag));
    }
    return out;
  },
};
