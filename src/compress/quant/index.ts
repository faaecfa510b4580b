export {
  createDynamicMap,
  createNormalMap,
  normalMapValues,
  normalQuantile,
  codebookBounds,
  NF4_CODE,
  FP4_CODE,
} from "./codebooks.js";
export {
  quantize,
  dequantize,
  quantizeScales,
  blockAbsmax,
  int8Codes,
  validateQuantized,
  quantizedByteSize,
  codebookFor,
  QUANT_KINDS,
  DEFAULT_BLOCK_SIZE,
  NESTED_BLOCK_SIZE_4BIT,
} from "./quantize.js";
export type { QuantKind, QuantScheme, QuantizedTensor, BlockScales, QuantizedByteSize } from "./quantize.js";
export { onnxDequantParams, evaluateOnnxDequant } from "./onnx-params.js";
export type { OnnxDequantParams, DequantizeLinearParams, GatherCodebookParams, NestedScaleParams } from "./onnx-params.js";
export { emitDequantize, pairCodebook } from "./onnx-graph.js";
export { quantizeModel, isQuantizedModel, linearModuleNames, modelSizeReport, QuantizedWeights } from "./quantized-model.js";
export type { QuantizeModelOptions, ModelQuantization, QuantizedModel, ModelSizeReport } from "./quantized-model.js";
