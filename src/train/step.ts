/**
 * One training step as one `session.run`: the model with its trainable adapter tensors as graph
 * inputs, the task loss, and the loss's gradient with respect to every trainable input (reverse-mode
 * autodiff appended to the same graph).
 */
import { AdapterStateError } from "../errors.js";
import { grad } from "../graph/autodiff.js";
import * as G from "../graph/api.js";
import type { Graph } from "../graph/graph.js";
import type { Value } from "../graph/types.js";
import type { PeftModel } from "../peft/peft-model.js";
import { CompiledGraph, type SessionOptions } from "../runtime/session.js";
import type { DType, Tensor } from "../tensor.js";
import { type LossTask, taskLoss } from "./loss.js";

export interface Batch {
  readonly inputIds: Tensor<"int64">;
  readonly attentionMask: Tensor<"int64">;
  /** [B, S] token labels (causal LM, −100 = ignore) or [B] class ids. */
  readonly labels: Tensor<"int64">;
}

export interface StepResult {
  readonly loss: number;
  /** Gradient per trainable graph input (same order as `TrainStep.names`). */
  readonly grads: Map<string, Float32Array | Float64Array>;
  readonly logits?: Tensor;
}

export interface TrainStepOptions {
  readonly task: LossTask;
  readonly dtype?: DType;
  /** Dropout masks seed. */
  readonly seed?: number;
  readonly session?: SessionOptions;
  /** Virtual tokens in front of the sequence; default: those of the active adapters (`TunerDef.virtualTokens`). */
  readonly prefixTokens?: number;
  /** Dropout layers active (default true, as in PyTorch's train mode). */
  readonly dropout?: boolean;
  /** Also output the logits (for metrics during training). */
  readonly withLogits?: boolean;
  /** Differentiate (default true); false builds an evaluation graph with the same inputs. */
  readonly gradients?: boolean;
}

export const GRAD_PREFIX = "grad::";

/** What `buildLossGraph` needs: the model-building part of `TrainStepOptions`. */
export type LossGraphOptions = Pick<TrainStepOptions, "task" | "dtype" | "seed" | "prefixTokens" | "dropout">;

/** The model and its task loss as one graph, before anything is differentiated. */
export interface LossGraph {
  readonly graph: Graph;
  /** The scalar loss (also the graph output `loss`). */
  readonly loss: Value;
  readonly logits: Value;
  /** Trainable graph inputs, in order. */
  readonly names: readonly string[];
  /** The graph values of `names`, same order. */
  readonly params: readonly Value[];
  /** Graph input → owning adapter and tensor key. */
  readonly owners: ReadonlyMap<string, { adapter: string; key: string }>;
  /** Initial values of the trainable inputs. */
  readonly initial: ReadonlyMap<string, Tensor>;
}

/**
 * Builds the training graph of `pm` (trainable adapter tensors as inputs, `labels` input, `loss`
 * output) for steps that append their own backward and update (`TrainStep`, `FusedAdamWStep`).
 */
export function buildLossGraph(pm: PeftModel, opts: LossGraphOptions): LossGraph {
  const built = pm.buildGraph({
    training: true,
    dropout: opts.dropout ?? true,
    seed: opts.seed ?? 0,
    ...(opts.dtype ? { dtype: opts.dtype } : {}),
  });
  const g = built.graph;
  const labels = g.input("labels", "int64", opts.task === "causal-lm" ? ["batch", "seq"] : ["batch"]);
  // prompt learning: the logits start with the adapters' virtual tokens, which have no labels
  const task = taskLoss(opts.task, built.outputs.logits, labels, opts.prefixTokens ?? built.virtualTokens);
  // tuners' loss terms (AdaLoRA's orthogonality regulariser), as PEFT adds them to outputs.loss
  const loss = built.regularizer ? G.add(task, G.cast(built.regularizer, task.dtype)) : task;
  g.output(loss, "loss");
  const names = [...built.trainable.keys()];
  if (names.length === 0) {
    throw new AdapterStateError(
      pm.activeAdapters.join(",") || "(none)",
      "has no trainable tensors: load adapters with { isTrainable: true } or create them with PeftModel.create/addAdapter",
    );
  }
  const params = names.map((n) => g.inputs.find((v) => v.name === n)!);
  return { graph: g, loss, logits: built.outputs.logits, names, params, owners: built.owners, initial: built.trainable };
}

export class TrainStep {
  private constructor(
    readonly session: CompiledGraph,
    /** Trainable graph inputs, in order. */
    readonly names: readonly string[],
    /** Graph input → owning adapter and tensor key. */
    readonly owners: ReadonlyMap<string, { adapter: string; key: string }>,
    /** Initial values of the trainable inputs. */
    readonly initial: ReadonlyMap<string, Tensor>,
    readonly withLogits: boolean,
    readonly withGradients: boolean,
  ) {}

  static async create(pm: PeftModel, opts: TrainStepOptions): Promise<TrainStep> {
    const { graph: g, loss, logits, names, params, owners, initial } = buildLossGraph(pm, opts);
    if (opts.gradients ?? true) grad(loss, params).forEach((gv, i) => g.output(gv, GRAD_PREFIX + names[i]!));
    if (opts.withLogits) g.output(logits, "logits");
    const session = await CompiledGraph.create(g, opts.session ?? {});
    return new TrainStep(session, names, owners, initial, opts.withLogits ?? false, opts.gradients ?? true);
  }

  /** Loss and gradients for a batch at the given parameter values. */
  async run(batch: Batch, params: ReadonlyMap<string, Tensor>): Promise<StepResult> {
    const feeds: Record<string, Tensor> = {
      input_ids: batch.inputIds,
      attention_mask: batch.attentionMask,
      labels: batch.labels,
    };
    for (const n of this.names) feeds[n] = params.get(n) ?? this.initial.get(n)!;
    const out = await this.session.run(feeds);
    const grads = new Map<string, Float32Array | Float64Array>();
    if (this.withGradients) for (const n of this.names) grads.set(n, out[GRAD_PREFIX + n]!.data as Float32Array | Float64Array);
    return { loss: Number(out.loss!.data[0]), grads, ...(this.withLogits ? { logits: out.logits! } : {}) };
  }

  async release(): Promise<void> {
    await this.session.release();
  }
}
