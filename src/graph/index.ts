export { Graph, type GraphOutput } from "./graph.js";
export { Value, type Dim, type Shape, type Node, type Attrs, type AttrValue, type ValueInfo } from "./types.js";
export { grad, unbroadcast, type GradOptions } from "./autodiff.js";
export { toOnnx, toModelProto, summarize, formatSummary, liveNodes, type GraphSummary, type OnnxExportOptions } from "./onnx.js";
export { OPS, OP_NAMES, type OpName } from "./ops/index.js";
export { nonDifferentiable, type OpDef, type VjpRule } from "./op-def.js";
export { OPSET } from "./opset.js";
export * as ops from "./api.js";
export { gelu, geluTanh, silu, activation, rmsNorm, linear, crossEntropy, dropout } from "./composite.js";
