/** Every op the builder emits. The table in `index.ts` must define each one (a compile error otherwise). */
export const OP_NAMES = [
  "Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Neg", "Identity", "Sqrt", "Reciprocal", "Exp", "Log",
  "Tanh", "Erf", "Sigmoid", "Relu", "Abs", "Sign", "Cos", "Sin", "Equal", "Less", "Greater", "Not", "And",
  "Where", "MatMul", "Gemm", "Conv", "ConvTranspose", "ReduceSum", "ReduceMean", "ReduceMax", "Reshape", "Transpose", "Concat",
  "Split", "Slice", "Pad", "Squeeze", "Unsqueeze", "Expand", "Cast", "CumSum", "Shape", "Size", "Range",
  "Softmax", "LogSoftmax", "SoftmaxCrossEntropyLoss", "LayerNormalization", "Gather", "GatherElements", "ScatterElements", "ScatterND",
  "RandomUniformLike",
  // onnxruntime contrib kernels (com.microsoft), inference graphs only
  "MultiHeadAttention", "SkipLayerNormalization", "FastGelu",
] as const;

export type OpName = (typeof OP_NAMES)[number];
