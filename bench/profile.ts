/**
 * Reading onnxruntime profiles (the chrome-trace JSON a session writes when created with
 * `profilePrefix`): kernel time per op type and per node, averaged over the profiled runs.
 */
import { readFileSync } from "node:fs";

interface TraceEvent {
  readonly cat?: string;
  readonly name?: string;
  readonly dur?: number;
  readonly args?: { readonly op_name?: string; readonly provider?: string };
}

export interface OpTime {
  readonly op: string;
  /** Mean milliseconds per run. */
  readonly ms: number;
  /** Share of all kernel time. */
  readonly share: number;
  /** Kernel calls per run. */
  readonly calls: number;
}

export interface NodeTime {
  readonly node: string;
  readonly op: string;
  readonly ms: number;
}

export interface ProfileSummary {
  /** `model_run` events in the trace. */
  readonly runs: number;
  /** Mean wall milliseconds of one `model_run`. */
  readonly runMs: number;
  /** Mean summed kernel milliseconds per run (can exceed runMs when kernels run in parallel). */
  readonly kernelMs: number;
  readonly byOp: readonly OpTime[];
  /** The slowest nodes (mean ms per run). */
  readonly topNodes: readonly NodeTime[];
  /** Kernel time per execution provider (ms per run). */
  readonly byProvider: Readonly<Record<string, number>>;
}

/**
 * Summarises a profile file. `skipRuns` leading `model_run`s (warm-up) are left out: every kernel
 * event is assigned to the run it falls in by order, as onnxruntime writes them sequentially.
 */
export function summarizeProfile(file: string, opts: { skipRuns?: number; top?: number } = {}): ProfileSummary {
  const events = JSON.parse(readFileSync(file, "utf8")) as TraceEvent[];
  const skip = opts.skipRuns ?? 0;
  const ops = new Map<string, { us: number; calls: number }>();
  const nodes = new Map<string, { op: string; us: number }>();
  const providers: Record<string, number> = {};
  let runIndex = 0;
  let runs = 0;
  let runUs = 0;
  let kernelUs = 0;
  for (const e of events) {
    if (e.cat === "Session" && e.name === "model_run") {
      if (runIndex >= skip) {
        runs++;
        runUs += e.dur ?? 0;
      }
      runIndex++;
      continue;
    }
    // kernel events of run k are written before run k's model_run event
    if (runIndex < skip || e.cat !== "Node" || !e.name?.endsWith("_kernel_time")) continue;
    const op = e.args?.op_name ?? "?";
    const dur = e.dur ?? 0;
    kernelUs += dur;
    const o = ops.get(op) ?? { us: 0, calls: 0 };
    o.us += dur;
    o.calls++;
    ops.set(op, o);
    const node = e.name.slice(0, -"_kernel_time".length);
    const nd = nodes.get(node) ?? { op, us: 0 };
    nd.us += dur;
    nodes.set(node, nd);
    const p = e.args?.provider ?? "?";
    providers[p] = (providers[p] ?? 0) + dur;
  }
  const n = Math.max(runs, 1);
  const ms = (us: number) => Math.round((us / n / 1e3) * 100) / 100;
  const byOp = [...ops.entries()]
    .map(([op, v]) => ({ op, ms: ms(v.us), share: Math.round((v.us / Math.max(kernelUs, 1)) * 1000) / 1000, calls: Math.round(v.calls / n) }))
    .sort((a, b) => b.ms - a.ms);
  const topNodes = [...nodes.entries()]
    .map(([node, v]) => ({ node, op: v.op, ms: ms(v.us) }))
    .sort((a, b) => b.ms - a.ms)
    .slice(0, opts.top ?? 15);
  const byProvider = Object.fromEntries(Object.entries(providers).map(([k, v]) => [k, ms(v)]));
  return { runs, runMs: ms(runUs), kernelMs: ms(kernelUs), byOp, topNodes, byProvider };
}
