/** The ONNX opset every graph is emitted at. Op semantics in `ops/` follow this version. */
export const OPSET = 17;
/** ONNX IR version matching opset 17 (ONNX 1.12). */
export const IR_VERSION = 8;
/** Version of onnxruntime's `com.microsoft` operator set the contrib ops (`ops/contrib.ts`) are emitted at. */
export const CONTRIB_OPSET = 1;
