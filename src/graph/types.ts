import type { DType, Tensor } from "../tensor.js";
import type { Graph } from "./graph.js";

/** A dimension: a number, a symbol such as `"batch"`, or `null` when unknown at build time. */
export type Dim = number | string | null;
export type Shape = readonly Dim[];

/** Attribute kinds as ONNX stores them. */
export type AttrKind = "int" | "float" | "ints" | "floats" | "string";
export type AttrValue = number | readonly number[] | string;
export type Attrs = Readonly<Record<string, AttrValue>>;

export interface ValueInfo {
  readonly dtype: DType;
  readonly shape: Shape;
}

/** A node of the graph: one ONNX op applied to values. */
export interface Node {
  readonly id: number;
  readonly op: string;
  readonly inputs: readonly Value[];
  readonly outputs: readonly Value[];
  readonly attrs: Attrs;
  readonly name: string;
  /**
   * The ONNX input position of each input, for ops with optional inputs left out in between
   * (contrib attention); absent: the inputs in order.
   */
  readonly slots?: readonly number[];
}

export type ValueKind = "input" | "initializer" | "node";

/**
 * A tensor-valued edge of the graph. Values are created by the `Graph` (inputs, initializers,
 * op outputs) and referenced by object; names are fixed only when the graph is exported.
 */
export class Value implements ValueInfo {
  /** Set when the value was produced by a node. */
  producer: Node | null = null;
  /** Explicit name (inputs, initializers, named outputs); others are named at export. */
  name: string | null;
  constructor(
    readonly graph: Graph,
    readonly id: number,
    readonly kind: ValueKind,
    readonly dtype: DType,
    readonly shape: Shape,
    name: string | null,
    /** The scope the value was created in (for readable generated names). */
    readonly scope: string,
    /** For initializers: the data. */
    readonly data: Tensor | null = null,
  ) {
    this.name = name;
  }
  get rank(): number {
    return this.shape.length;
  }
  toString(): string {
    return `${this.name ?? `%${this.id}`}: ${this.dtype}[${this.shape.map((d) => (d === null ? "?" : String(d))).join(", ")}]`;
  }
}
