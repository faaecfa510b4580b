/**
 * Matrix-product FLOPs of a training run, read off the model's own graph: every MatMul/Gemm (and
 * Conv, a product over in-channels × kernel window per output element) of the forward graph with its shapes, where the symbolic dims `batch` and `seq` become the actual
 * batch size and padded length of each step. Terms are split into
 *   - base: products with a frozen weight (the model's linear layers) and between activations
 *     (attention scores and context);
 *   - trainable: products with a trainable tensor (LoRA A/B, IA³ vectors are elementwise and
 *     do not count, `modules_to_save` heads).
 * A training step costs 2× the base forward FLOPs (forward + gradient of the input; frozen
 * weights get no weight gradient) plus 3× the trainable ones (forward, input and weight
 * gradient). Elementwise work, softmax and norms are not counted: this is the matmul FLOP count
 * used for achieved-FLOP/s ratios against `measureMatmulCeiling`.
 */
import { foldDim, parseDimOrName } from "./dim.js";
import type { Graph } from "./graph.js";
import type { Node, Shape, Value } from "./types.js";

export interface MatmulTerm {
  /** The node's name (scope and op), for reports. */
  readonly name: string;
  /** Output shape with symbolic dims. */
  readonly out: Shape;
  /** The contracted dimension. */
  readonly k: Shape[number];
  readonly trainable: boolean;
}

export interface FlopSplit {
  readonly base: number;
  readonly trainable: number;
}

/**
 * Every matrix product of a forward graph; `trainableNames` are the graph inputs that are trained
 * (a product with one of them, or with a value computed from parameters only, is a weight product).
 */
export function matmulTerms(g: Graph, trainableNames: ReadonlySet<string>): MatmulTerm[] {
  // values computed from parameters only (no data input): weight-like operands
  const paramLike = new Set<number>();
  const fromTrainable = new Set<number>();
  for (const v of g.inputs) {
    if (v.name !== null && trainableNames.has(v.name)) {
      paramLike.add(v.id);
      fromTrainable.add(v.id);
    }
  }
  const isParamLike = (v: Value) => v.kind === "initializer" || paramLike.has(v.id);
  const terms: MatmulTerm[] = [];
  for (const n of g.nodes as readonly Node[]) {
    if (n.inputs.length > 0 && n.inputs.every(isParamLike)) {
      for (const o of n.outputs) paramLike.add(o.id);
      if (n.inputs.some((i) => fromTrainable.has(i.id))) for (const o of n.outputs) fromTrainable.add(o.id);
    }
    if (n.op === "Conv") {
      // a convolution is a product contracting in-channels × kernel window per output element
      const [, w] = n.inputs as [Value, Value];
      const window = w.shape.slice(1);
      const k = window.every((d) => typeof d === "number") ? (window as number[]).reduce((a, b) => a * b, 1) : window.join("*");
      terms.push({ name: n.name, out: n.outputs[0]!.shape, k, trainable: isParamLike(w) && fromTrainable.has(w.id) });
      continue;
    }
    if (n.op !== "MatMul" && n.op !== "Gemm") continue;
    const [a, b] = n.inputs as [Value, Value];
    const transA = n.op === "Gemm" && n.attrs.transA === 1;
    const k = transA ? a.shape[a.shape.length - 2]! : a.shape[a.shape.length - 1]!;
    const weight = isParamLike(a) ? a : isParamLike(b) ? b : null;
    terms.push({ name: n.name, out: n.outputs[0]!.shape, k, trainable: weight !== null && fromTrainable.has(weight.id) });
  }
  return terms;
}

/**
 * A dimension's size: numbers as they are; symbols `batch` and `seq` and products/sums of them as
 * the graph layer writes them (`batch*seq`, `seq+8`); any other symbol counts as the padded length.
 */
export function dimValue(d: Shape[number], batch: number, seq: number): number {
  const e = parseDimOrName(d);
  return e === null ? seq : foldDim(e, { num: (n) => n, sym: (name) => (name === "batch" ? batch : seq), add: (a, b) => a + b, mul: (a, b) => a * b })!;
}

/** Forward matmul FLOPs (2·M·K·N per product) for one batch of `batch` rows padded to `seq` tokens. */
export function forwardFlops(terms: readonly MatmulTerm[], batch: number, seq: number): FlopSplit {
  let base = 0;
  let trainable = 0;
  for (const t of terms) {
    let f = 2 * dimValue(t.k, batch, seq);
    for (const d of t.out) f *= dimValue(d, batch, seq);
    if (t.trainable) trainable += f;
    else base += f;
  }
  return { base, trainable };
}

/** Training FLOPs of one micro-batch: 2× base forward + 3× trainable forward. */
export function trainingFlops(terms: readonly MatmulTerm[], batch: number, seq: number): number {
  const f = forwardFlops(terms, batch, seq);
  return 2 * f.base + 3 * f.trainable;
}
