/** The ONNX opset every graph is emitted at. Op semantics in `ops/` follow this version. */
export const OPSET = 17;
/** ONNX IR version matching opset 17 (ONNX 1.12). */
export const IR_VERSION = 8;
