import { GraphBuildError } from "../errors.js";
import { type DType, type Tensor, allocate, floatToBf16, floatToHalf, tensor } from "../tensor.js";
import type { OpDef } from "./op-def.js";
import { OPS } from "./ops/index.js";
import type { OpName } from "./ops/names.js";
import { type Attrs, type Node, type Shape, Value } from "./types.js";

export interface GraphOutput {
  readonly name: string;
  readonly value: Value;
}

/**
 * A hand-written gradient (see `Graph.customGradient`): given dL/dy, the gradients of the
 * declared inputs (null where an input gets none).
 */
export interface CustomGradient {
  readonly inputs: readonly Value[];
  readonly rule: (dy: Value) => (Value | null)[];
}

/**
 * A typed ONNX graph under construction. Inputs get symbolic dims (`"batch"`, `"seq"`), frozen
 * weights become initializers, every op call appends a node whose output shape is inferred at
 * once (so autodiff can reduce broadcasts). `toOnnx()` (see `onnx.ts`) emits the model bytes.
 */
export class Graph {
  readonly nodes: Node[] = [];
  readonly inputs: Value[] = [];
  readonly initializers: Value[] = [];
  readonly outputs: GraphOutput[] = [];
  private nextId = 0;
  private scopes: string[] = [];
  private readonly names = new Set<string>();
  private readonly scalarCache = new Map<string, Value>();
  /** Nodes whose output autodiff treats as a constant (see `stopGradient`). */
  readonly stopped = new Set<number>();
  /** Hand-written gradients by boundary node id (see `customGradient`). */
  readonly customGradients = new Map<number, CustomGradient>();

  constructor(readonly name = "peft_ts") {}

  /** Current name scope, e.g. `bert.encoder.layer.0.attention`. */
  get scope(): string {
    return this.scopes.join(".");
  }

  /** Run `fn` with `name` appended to the scope; node and value names carry the scope. */
  withScope<T>(name: string, fn: () => T): T {
    this.scopes.push(name);
    try {
      return fn();
    } finally {
      this.scopes.pop();
    }
  }

  private claim(name: string, what: string): string {
    if (this.names.has(name)) throw new GraphBuildError(what, `name '${name}' is already used in graph '${this.name}'`);
    this.names.add(name);
    return name;
  }

  /** A graph input (data or trainable parameter), with symbolic or fixed dims. */
  input(name: string, dtype: DType, shape: Shape): Value {
    const v = new Value(this, this.nextId++, "input", dtype, [...shape], this.claim(name, "input"), this.scope);
    this.inputs.push(v);
    return v;
  }

  /** A frozen tensor stored in the model (ORT pre-packs constant weights). */
  initializer(name: string, t: Tensor): Value {
    const v = new Value(this, this.nextId++, "initializer", t.dtype, [...t.shape], this.claim(name, "initializer"), this.scope, t);
    this.initializers.push(v);
    return v;
  }

  /** An unnamed constant (stored as an initializer with a generated name). */
  constant(t: Tensor): Value {
    return this.initializer(this.freshName("const"), t);
  }

  /** A scalar constant of the given dtype (cached: one initializer per dtype and value). */
  scalar(value: number, dtype: DType = "float32"): Value {
    const key = `${dtype}:${Object.is(value, -0) ? "-0" : value}`;
    let v = this.scalarCache.get(key);
    if (!v) {
      const data = allocate(dtype, 1);
      if (dtype === "int64") (data as BigInt64Array)[0] = BigInt(value);
      // float16 / bfloat16 arrays hold bit patterns
      else if (dtype === "float16") (data as Uint16Array)[0] = floatToHalf(value);
      else if (dtype === "bfloat16") (data as Uint16Array)[0] = floatToBf16(value);
      else (data as Float32Array)[0] = value;
      v = this.constant(tensor(dtype, [], data));
      this.scalarCache.set(key, v);
    }
    return v;
  }

  /** A 1-D int64 constant (shapes, axes, indices). */
  ints(values: readonly number[]): Value {
    return this.constant(tensor("int64", [values.length], BigInt64Array.from(values, (x) => BigInt(x))));
  }

  /** Mark `value` as a graph output called `name`. */
  output(value: Value, name: string): Value {
    let v = value;
    if (v.kind !== "node" || v.name !== null) v = this.op("Identity", [v])[0]!;
    v.name = this.claim(name, "output");
    this.outputs.push({ name, value: v });
    return v;
  }

  freshName(base: string): string {
    const prefix = this.scope ? `${this.scope}/${base}` : base;
    let n = this.nodes.length + this.initializers.length;
    let name = `${prefix}_${n}`;
    while (this.names.has(name)) name = `${prefix}_${++n}`;
    return name;
  }

  /**
   * Append one node of op `type`; returns its outputs with inferred dtype and shape. `slots`
   * gives the ONNX input position of each input when optional inputs are left out in between.
   */
  op(type: OpName, inputs: readonly Value[], attrs: Attrs = {}, slots?: readonly number[]): Value[] {
    const def: OpDef = OPS[type];
    for (const [k] of Object.entries(attrs)) {
      if (!(k in def.attrs)) {
        throw new GraphBuildError(type, `unknown attribute '${k}' (known: ${Object.keys(def.attrs).join(", ") || "none"})`);
      }
    }
    for (const i of inputs) {
      if (!(i instanceof Value)) throw new GraphBuildError(type, "an input is not a Value of this graph");
    }
    const infos = def.infer(inputs, attrs, this);
    const id = this.nextId++;
    const nodeName = this.freshName(type);
    const outputs = infos.map((info) => new Value(this, this.nextId++, "node", info.dtype, info.shape, null, this.scope));
    if (slots && (slots.length !== inputs.length || slots.some((s, i) => !Number.isInteger(s) || s < 0 || (i > 0 && s <= slots[i - 1]!)))) {
      throw new GraphBuildError(type, `slots [${slots.join(", ")}] must give one increasing input position per input (${inputs.length})`);
    }
    const node: Node = { id, op: type, inputs: [...inputs], outputs, attrs, name: nodeName, ...(slots ? { slots: [...slots] } : {}) };
    for (const o of outputs) o.producer = node;
    this.nodes.push(node);
    return outputs;
  }

  /** `x` as a value autodiff does not differentiate through (PyTorch's `detach()`). */
  stopGradient(x: Value): Value {
    const y = this.op1("Identity", [x]);
    this.stopped.add(y.producer!.id);
    return y;
  }

  /**
   * `y` (computed from `inputs` by ordinary ops) with a hand-written gradient: autodiff passes
   * dL/dy to `rule` and adds what it returns to `inputs`, instead of differentiating the nodes
   * between them. For composites whose generic backward would take many more passes over the
   * data than the closed form (GELU, cross-entropy); each rule is checked against finite differences.
   */
  customGradient(y: Value, inputs: readonly Value[], rule: (dy: Value) => (Value | null)[]): Value {
    const out = this.op1("Identity", [y]);
    this.customGradients.set(out.producer!.id, { inputs: [...inputs], rule });
    return out;
  }

  /** Single-output convenience. */
  op1(type: OpName, inputs: readonly Value[], attrs: Attrs = {}): Value {
    return this.op(type, inputs, attrs)[0]!;
  }
}
