/**
 * The aTLAS model as one graph: the composed weights are built inside it, so reverse-mode
 * autodiff gives ∂loss/∂λ directly. `AtlasContext` overrides `ModelContext.param`: for a block b
 * with kept pairs it returns
 *
 *     W_b = W0_b + Σ_t λ[t, b] · τ_{t,b}
 *
 * with W0_b the base parameter (an initializer), τ_{t,b} constants and λ the graph input
 * `atlas_coefficients` ([T, B] anisotropic, [T] isotropic). Every other parameter is the plain
 * base parameter. Any architecture works unchanged (every builder reads its weights through
 * `ctx.param`, linear layers included).
 *
 * Task heads can be fed at run time (`fedParams`, e.g. `classifier.weight` / `classifier.bias`):
 * they become graph inputs with the model's head shapes, so one graph serves several tasks with
 * their own heads. A head with fewer labels than the model's is padded by the caller (see
 * `padHead` in composer.ts): weight rows 0 and bias −1e9, classes that never win and carry no
 * probability.
 *
 * Outputs: `logits` [batch, labels]; `loss_ce` (mean cross-entropy against the `labels` input)
 * and `loss_entropy` (mean Shannon entropy of the softmax: the unsupervised test-time objective),
 * and, for the graph's `objective`, its gradient with respect to λ (`grad_ce` or `grad_entropy`).
 * onnxruntime runs every node of a graph whatever outputs are fetched, so evaluation uses a graph
 * without gradients (`objective: null`) and each objective its own graph.
 */
import { GraphBuildError } from "../../errors.js";
import * as G from "../../graph/api.js";
import { grad } from "../../graph/autodiff.js";
import { crossEntropy } from "../../graph/composite.js";
import { Graph } from "../../graph/graph.js";
import type { Value } from "../../graph/types.js";
import { type ContextOptions, ModelContext, type WeightSource } from "../../models/context.js";
import type { LoadedModel } from "../../models/load.js";
import { type Tensor, tensor } from "../../tensor.js";
import { type AtlasLayout, coefficientShape } from "./layout.js";
import type { AtlasTaskVector } from "./task-vectors.js";

export const ATLAS_COEF_INPUT = "atlas_coefficients";
export const ATLAS_OUTPUTS = {
  logits: "logits",
  lossCe: "loss_ce",
  gradCe: "grad_ce",
  lossEntropy: "loss_entropy",
  gradEntropy: "grad_entropy",
} as const;

/** A ModelContext whose parameters are the aTLAS composition (see the module comment). */
export class AtlasContext extends ModelContext {
  private readonly composed = new Map<string, Value>();
  private readonly fedValues = new Map<string, Value>();
  private readonly blockIndex: Map<string, number>;
  private readonly scalars = new Map<number, Value>();

  constructor(
    g: Graph,
    weights: WeightSource,
    options: ContextOptions,
    readonly layout: AtlasLayout,
    readonly taskVectors: readonly AtlasTaskVector[],
    readonly coef: Value,
    readonly fed: ReadonlySet<string> = new Set(),
  ) {
    super(g, weights, options);
    this.blockIndex = new Map(layout.blocks.map((b, i) => [b, i]));
  }

  /** λ_{t,b} as a scalar graph value (one Slice per pair, shared between uses). */
  private lambda(t: number, b: number): Value {
    const iso = this.layout.mode === "isotropic";
    const key = iso ? t : t * this.layout.blocks.length + b;
    let v = this.scalars.get(key);
    if (!v) {
      const s = iso ? G.slice(this.coef, [t], [t + 1], [0]) : G.slice(this.coef, [t, b], [t + 1, b + 1], [0, 1]);
      v = G.reshape(s, []);
      this.scalars.set(key, v);
    }
    return v;
  }

  override param(name: string, expectShape?: readonly number[]): Value {
    if (this.fed.has(name)) {
      let v = this.fedValues.get(name);
      if (!v) {
        v = this.g.input(name, this.dtype, this.weights.info(name).shape);
        this.fedValues.set(name, v);
      }
      return v;
    }
    const b = this.blockIndex.get(name);
    if (b === undefined) return super.param(name, expectShape);
    const cached = this.composed.get(name);
    if (cached) return cached;
    const base = super.param(name, expectShape);
    const B = this.layout.blocks.length;
    let w = base;
    this.g.withScope(`atlas.${name}`, () => {
      this.taskVectors.forEach((tv, t) => {
        if (!this.layout.kept[t * B + b]) return;
        const data = tv.blocks.get(name)!;
        const tau: Tensor = this.dtype === "float64" ? tensor("float64", base.shape as number[], Float64Array.from(data)) : tensor("float32", base.shape as number[], data);
        const c = this.g.initializer(`atlas/${tv.name}/${name}`, tau);
        w = G.add(w, G.mul(c, this.lambda(t, b)));
      });
    });
    this.composed.set(name, w);
    return w;
  }
}

export interface AtlasGraphOptions {
  /** Compute dtype (float64 for gradient checks). Default float32. */
  readonly dtype?: "float32" | "float64";
  /** Parameters fed at run time (task heads), e.g. `["classifier.weight", "classifier.bias"]`. */
  readonly fedParams?: readonly string[];
  /** The objective whose ∂loss/∂λ is appended; null: an evaluation graph without gradients. Default cross-entropy. */
  readonly objective?: "cross-entropy" | "entropy" | null;
}

export interface AtlasGraph {
  readonly graph: Graph;
  readonly coef: Value;
  readonly logits: Value;
  readonly fedParams: readonly string[];
}

/** Mean Shannon entropy of softmax(logits) over the batch. */
export function meanSoftmaxEntropy(logits: Value): Value {
  const lp = G.logSoftmax(logits, -1);
  return G.neg(G.meanAll(G.reduceSum(G.mul(G.exp(lp), lp), [1], false)));
}

/** Builds the aTLAS graph of `model` with the task vectors and layout (see the module comment). */
export function buildAtlasGraph(model: LoadedModel, taskVectors: readonly AtlasTaskVector[], layout: AtlasLayout, opts: AtlasGraphOptions = {}): AtlasGraph {
  const dtype = opts.dtype ?? "float32";
  const fedParams = [...(opts.fedParams ?? [])];
  for (const p of fedParams) {
    if (!model.weights.has(p)) throw new GraphBuildError("aTLAS", `fed parameter '${p}' is not a parameter of the model; load the model with its head (e.g. loadUseLiteModel({ numLabels }))`);
    if (layout.blocks.includes(p)) throw new GraphBuildError("aTLAS", `'${p}' is both a task-vector block and a fed head; exclude heads from the task vectors`);
  }
  const g = new Graph("atlas");
  const inputIds = g.input("input_ids", "int64", ["batch", "seq"]);
  const attentionMask = g.input("attention_mask", "int64", ["batch", "seq"]);
  const coef = g.input(ATLAS_COEF_INPUT, dtype, coefficientShape(layout));
  const ctx = new AtlasContext(g, model.weights, { dtype }, layout, taskVectors, coef, new Set(fedParams));
  const outputs = model.def.build(ctx, model.config, { inputIds, attentionMask });
  const logits = outputs.logits;
  if (logits.rank !== 2) throw new GraphBuildError("aTLAS", `needs a classifier (logits [batch, labels]); this ${model.config.modelType} model gives rank-${logits.rank} logits`);
  g.output(logits, ATLAS_OUTPUTS.logits);
  const labels = g.input("labels", "int64", ["batch"]);
  const ce = crossEntropy(logits, labels);
  const ent = meanSoftmaxEntropy(logits);
  g.output(ce, ATLAS_OUTPUTS.lossCe);
  g.output(ent, ATLAS_OUTPUTS.lossEntropy);
  const objective = opts.objective === undefined ? "cross-entropy" : opts.objective;
  if (objective === "cross-entropy") g.output(grad(ce, [coef])[0]!, ATLAS_OUTPUTS.gradCe);
  if (objective === "entropy") g.output(grad(ent, [coef])[0]!, ATLAS_OUTPUTS.gradEntropy);
  return { graph: g, coef, logits, fedParams };
}
