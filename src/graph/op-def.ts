import type { Graph } from "./graph.js";
import type { AttrKind, Attrs, Node, Value, ValueInfo } from "./types.js";

/**
 * The gradient rule of an op: given the node and the gradients of its outputs (null where an
 * output got none), return one gradient per input (null where the input gets none). Broadcast
 * inputs may receive a gradient of the broadcast shape; `autodiff` sums it back centrally.
 */
export type VjpRule = (g: Graph, node: Node, gradOut: readonly (Value | null)[]) => (Value | null)[];

/** Marks an op whose outputs carry no gradient (shape arithmetic, comparisons, integer ops). */
export const nonDifferentiable = "nonDifferentiable" as const;

export interface OpDef {
  /** ONNX op type. */
  readonly type: string;
  /** Operator-set domain (default: the ONNX domain ""); `com.microsoft` for onnxruntime's contrib kernels. */
  readonly domain?: string;
  /** Attribute names and kinds this op accepts. */
  readonly attrs: Readonly<Record<string, AttrKind>>;
  /** Output dtypes and shapes from the inputs (and attributes / constant inputs). */
  readonly infer: (inputs: readonly Value[], attrs: Attrs, g: Graph) => ValueInfo[];
  readonly vjp: VjpRule | typeof nonDifferentiable;
}
