export type { Gradients, NamedParam, Optimizer, OptimizerKind, OptimizerState, ParamStateInfo } from "./types.js";
export { ADAMW_DEFAULTS, AdamW } from "./adamw.js";
export type { AdamWOptions } from "./adamw.js";
export { SGD_DEFAULTS, Sgd } from "./sgd.js";
export type { SgdOptions } from "./sgd.js";
export { clipGradNorm, gradNorm } from "./clip.js";
export { excludeFromWeightDecay, isNoDecayParamName } from "./decay.js";
export { ADAMW8BIT_DEFAULTS, AdamW8bit, packCodes, unpackCodes, type AdamW8bitOptions, type OptimizerStateBytes } from "./adamw8bit.js";
