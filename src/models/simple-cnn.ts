/**
 * A small convolutional image classifier (`model_type: "simple_cnn"`), PyTorch style:
 *
 *     x = pixels / 255                      [batch, channels, size, size]
 *     for i in 1..L: x = relu(conv{i}(x))  nn.Conv2d(c_{i−1}, c_i, kernel_size, stride, padding)
 *     logits = fc(flatten(x))               nn.Linear(c_L · s_L², num_labels)
 *
 * State-dict names `conv1.weight` [c_1, channels, k, k], `conv1.bias`, …, `fc.weight`, `fc.bias`.
 * The image enters through the text models' inputs: `input_ids` [batch, channels·size·size] holds
 * the pixel bytes 0…255 in (channel, row, column) order (`vocab_size` 256, so forward's token-id
 * check bounds them), `attention_mask` is all ones and unused. That keeps one input contract for
 * `PeftModel`, the trainer and evaluation; an image is a "sentence" of its pixel bytes.
 */
import { z } from "zod";
import { ConfigError, UnsupportedOptionError } from "../errors.js";
import * as G from "../graph/api.js";
import { convOutDim } from "../graph/ops/conv.js";
import type { ModelContext } from "./context.js";
import type { ModelDef, ModelInputs, ModelOutputs } from "./model-def.js";

export const SIMPLE_CNN_MODEL_TYPE = "simple_cnn";

export interface SimpleCnnConfig {
  readonly modelType: typeof SIMPLE_CNN_MODEL_TYPE;
  readonly imageSize: number;
  readonly numChannels: number;
  /** Output channels of conv1, conv2, … */
  readonly convChannels: readonly number[];
  readonly kernelSize: number;
  readonly stride: number;
  readonly padding: number;
  readonly labels: readonly string[];
  readonly numLabels: number;
  /** Pixel values 0…255 travel as token ids. */
  readonly vocabSize: 256;
  /** Features into `fc`: c_L · s_L² (the flattened last feature map). */
  readonly hiddenSize: number;
  /** Convolution layers. */
  readonly numLayers: number;
  readonly numHeads: 1;
  /** Side of each layer's output feature map, s_1 … s_L. */
  readonly featureSizes: readonly number[];
  /** Input length: channels · size² pixel bytes. */
  readonly maxPositionEmbeddings: number;
}

const posInt = z.number().int().positive();

const schema = z.object({
  model_type: z.literal(SIMPLE_CNN_MODEL_TYPE),
  architectures: z.array(z.string()).optional(),
  image_size: posInt.default(28),
  num_channels: posInt.default(1),
  conv_channels: z.array(posInt).min(1).default([16, 32]),
  kernel_size: posInt.default(3),
  stride: posInt.default(2),
  padding: z.number().int().nonnegative().default(1),
  id2label: z.record(z.string(), z.string()).nullable().optional(),
  num_labels: posInt.optional(),
  torch_dtype: z.string().optional(),
  dtype: z.string().optional(),
});

/** Validates a parsed `config.json`; `file` names it in errors. */
export function parseSimpleCnnConfig(raw: unknown, file: string): SimpleCnnConfig {
  const r = schema.strict().safeParse(raw);
  if (!r.success) {
    const issue = r.error.issues[0]!;
    throw new ConfigError(file, issue.path.join(".") || "(root)", issue.message);
  }
  const c = r.data;
  let labels: string[];
  if (c.id2label) {
    const n = Object.keys(c.id2label).length;
    labels = Array.from({ length: n }, (_, i) => {
      const l = c.id2label![String(i)];
      if (l === undefined) throw new ConfigError(file, "id2label", `label ids must be the integers 0..${n - 1}`);
      return l;
    });
    if (c.num_labels !== undefined && c.num_labels !== n) throw new ConfigError(file, "num_labels", `${c.num_labels} disagrees with id2label's ${n} labels`);
  } else labels = Array.from({ length: c.num_labels ?? 10 }, (_, i) => `LABEL_${i}`);
  const sizes: number[] = [];
  let s = c.image_size;
  for (let i = 0; i < c.conv_channels.length; i++) {
    s = convOutDim(s, c.kernel_size, c.stride, c.padding, c.padding, 1) as number;
    if (s < 1) throw new ConfigError(file, "conv_channels", `conv${i + 1} has no output: image_size ${c.image_size} is too small for ${c.conv_channels.length} layers of kernel ${c.kernel_size}, stride ${c.stride}`);
    sizes.push(s);
  }
  return {
    modelType: SIMPLE_CNN_MODEL_TYPE,
    imageSize: c.image_size,
    numChannels: c.num_channels,
    convChannels: [...c.conv_channels],
    kernelSize: c.kernel_size,
    stride: c.stride,
    padding: c.padding,
    labels,
    numLabels: labels.length,
    vocabSize: 256,
    hiddenSize: c.conv_channels[c.conv_channels.length - 1]! * s * s,
    numLayers: c.conv_channels.length,
    numHeads: 1,
    featureSizes: sizes,
    maxPositionEmbeddings: c.num_channels * c.image_size * c.image_size,
  };
}

/** The `config.json` object for a config. */
export function simpleCnnConfigJson(c: SimpleCnnConfig): Record<string, unknown> {
  return {
    architectures: ["SimpleCnnForImageClassification"],
    model_type: SIMPLE_CNN_MODEL_TYPE,
    image_size: c.imageSize,
    num_channels: c.numChannels,
    conv_channels: [...c.convChannels],
    kernel_size: c.kernelSize,
    stride: c.stride,
    padding: c.padding,
    id2label: Object.fromEntries(c.labels.map((l, i) => [String(i), l])),
    torch_dtype: "float32",
  };
}

/** Parameter names and shapes of a config (what model.safetensors holds). */
export function simpleCnnShapes(c: SimpleCnnConfig): Map<string, number[]> {
  const out = new Map<string, number[]>();
  let inC = c.numChannels;
  c.convChannels.forEach((oc, i) => {
    out.set(`conv${i + 1}.weight`, [oc, inC, c.kernelSize, c.kernelSize]);
    out.set(`conv${i + 1}.bias`, [oc]);
    inC = oc;
  });
  out.set("fc.weight", [c.numLabels, c.hiddenSize]);
  out.set("fc.bias", [c.numLabels]);
  return out;
}

export function buildSimpleCnn(ctx: ModelContext, c: SimpleCnnConfig, inputs: ModelInputs): ModelOutputs {
  const hooks = ctx.options.hooks;
  if (hooks?.embeds || hooks?.prefix) {
    throw new UnsupportedOptionError("adapter", "peft_type", hooks.prefix ? "PREFIX_TUNING" : "prompt learning", "simple_cnn takes images, not token embeddings: prompt learning does not apply");
  }
  const { g } = ctx;
  const pixels = g.withScope("pixels", () =>
    G.reshape(G.div(G.cast(inputs.inputIds, ctx.dtype), 255), [0, c.numChannels, c.imageSize, c.imageSize]),
  );
  let x = pixels;
  for (let i = 0; i < c.numLayers; i++) {
    x = G.relu(ctx.conv2d(`conv${i + 1}`, x, { stride: [c.stride, c.stride], padding: [c.padding, c.padding] }));
  }
  const hidden = G.reshape(x, [0, c.hiddenSize]);
  const logits = ctx.linear("fc", hidden);
  return { logits, hidden, attentionMask: inputs.attentionMask };
}

export const simpleCnn: ModelDef<SimpleCnnConfig> = {
  modelType: SIMPLE_CNN_MODEL_TYPE,
  task: "seq-cls",
  outputModules: ["fc"],
  // the convolutions of the default two-layer network
  loraTargets: ["conv1", "conv2"],
  layersPattern: [],
  tiedWeights: () => [],
  // no token embedding: prompt learning is refused at build time
  embeddingParam: "",
  build: buildSimpleCnn,
};
