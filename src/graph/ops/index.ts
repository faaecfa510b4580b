/** The op table: every op the builder can emit, with its shape rule and gradient rule. */
import type { OpDef } from "../op-def.js";
import { contribOps } from "./contrib.js";
import { convOps } from "./conv.js";
import { elementwiseOps } from "./elementwise.js";
import { indexingOps } from "./indexing.js";
import { matmulOps } from "./matmul.js";
import type { OpName } from "./names.js";
import { nnOps } from "./nn.js";
import { reduceOps } from "./reduce.js";
import { shapeOps } from "./shape-ops.js";

export { OP_NAMES, type OpName } from "./names.js";

export const OPS: { readonly [K in OpName]: OpDef } = {
  ...elementwiseOps,
  ...matmulOps,
  ...convOps,
  ...reduceOps,
  ...shapeOps,
  ...nnOps,
  ...indexingOps,
  ...contribOps,
};
