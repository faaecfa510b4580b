/** A tiny `simple_cnn` in memory, random images, and the network written out as loops (tests). */
import type { Tensor } from "../tensor.js";
import { naiveConv } from "../graph/conv.test-util.js";
import { Rng } from "../util/rng.js";
import { mapSource } from "./context.js";
import type { LoadedModel } from "./load.js";
import { type SimpleCnnConfig, parseSimpleCnnConfig, simpleCnn, simpleCnnShapes } from "./simple-cnn.js";

/** 6×6 one-channel images, conv1 1→2 and conv2 2→3 (kernel 3, stride 2, padding 1: 6 → 3 → 2), fc 12 → 4. */
export const TINY_CNN_RAW = { model_type: "simple_cnn", image_size: 6, num_channels: 1, conv_channels: [2, 3], kernel_size: 3, stride: 2, padding: 1, num_labels: 4 };

export function tinyCnnWeights(c: SimpleCnnConfig, seed = 1): Map<string, Tensor> {
  const rng = new Rng(seed);
  return new Map(
    [...simpleCnnShapes(c)].map(([k, shape]) => {
      const n = shape.reduce((a, b) => a * b, 1);
      return [k, { dtype: "float32", shape, data: Float32Array.from({ length: n }, () => (rng.uniform() * 2 - 1) * 0.8) }] as [string, Tensor];
    }),
  );
}

export function tinyCnn(seed = 1, raw: Record<string, unknown> = TINY_CNN_RAW): LoadedModel<SimpleCnnConfig> {
  const config = parseSimpleCnnConfig(raw, "tiny-cnn/config.json");
  return { dir: "tiny-cnn", config, def: simpleCnn, weights: mapSource(tinyCnnWeights(config, seed), "tiny-cnn/model.safetensors") };
}

/** `n` images of `c` as pixel bytes (int64 [n, channels·size²]). */
export function tinyImages(c: SimpleCnnConfig, n: number, seed = 2): Tensor<"int64"> {
  const rng = new Rng(seed);
  const len = c.numChannels * c.imageSize * c.imageSize;
  return { dtype: "int64", shape: [n, len], data: BigInt64Array.from({ length: n * len }, () => BigInt(Math.floor(rng.uniform() * 256))) };
}

/** Conv2d as loops (NCHW, group 1, symmetric padding), float64. */
export function convLoops(x: ArrayLike<number>, xs: readonly number[], w: ArrayLike<number>, ws: readonly number[], b: ArrayLike<number> | null, stride: number, pad: number): { data: Float64Array; shape: number[] } {
  return naiveConv(x, xs, w, ws, b, [stride, stride], [pad, pad, pad, pad], [1, 1]);
}

/**
 * The network's logits written out: pixels / 255, relu(conv) per layer with the given kernels
 * (default: the stored ones), then fc. `kernels` replaces a layer's kernel (W + ΔW).
 */
export function cnnLoops(c: SimpleCnnConfig, weights: ReadonlyMap<string, Tensor>, pixels: Tensor<"int64">, kernels: ReadonlyMap<string, ArrayLike<number>> = new Map()): Float64Array {
  const n = pixels.shape[0]!;
  let x: { data: ArrayLike<number>; shape: number[] } = { data: Float64Array.from(pixels.data as BigInt64Array, (v) => Number(v) / 255), shape: [n, c.numChannels, c.imageSize, c.imageSize] };
  for (let i = 1; i <= c.numLayers; i++) {
    const w = weights.get(`conv${i}.weight`)!;
    const y = convLoops(x.data, x.shape, kernels.get(`conv${i}`) ?? (w.data as Float32Array), w.shape, weights.get(`conv${i}.bias`)!.data as Float32Array, c.stride, c.padding);
    x = { data: y.data.map((v) => Math.max(0, v)), shape: y.shape };
  }
  const fw = weights.get("fc.weight")!.data as Float32Array;
  const fb = weights.get("fc.bias")!.data as Float32Array;
  const out = new Float64Array(n * c.numLabels);
  for (let a = 0; a < n; a++)
    for (let o = 0; o < c.numLabels; o++) {
      let acc = fb[o]!;
      for (let k = 0; k < c.hiddenSize; k++) acc += fw[o * c.hiddenSize + k]! * x.data[a * c.hiddenSize + k]!;
      out[a * c.numLabels + o] = acc;
    }
  return out;
}
