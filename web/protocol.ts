/** Messages between the page (app.ts) and the training worker (worker.ts). */
import type { EvalResult, StepInfo } from "peft-ts/web";
import type { AdapterChoice, DataSpec, ProbeResult, TrainOptions } from "peft-ts/web";

export type Request =
  | { readonly kind: "init"; readonly threads: number; readonly ep: "cpu" | "webgpu" }
  | { readonly kind: "model"; readonly files?: ReadonlyMap<string, Uint8Array>; readonly label?: string }
  | { readonly kind: "data"; readonly spec: DataSpec }
  | { readonly kind: "train"; readonly adapter: AdapterChoice; readonly options: TrainOptions }
  | { readonly kind: "pause" }
  | { readonly kind: "resume" }
  | { readonly kind: "classify"; readonly text: string }
  | { readonly kind: "export"; readonly format: "zip" | "compeft" }
  | { readonly kind: "import"; readonly name: string; readonly bytes: Uint8Array }
  | { readonly kind: "evaluate" }
  | { readonly kind: "probe" }
  | { readonly kind: "bench"; readonly steps: number; readonly batchSize: number; readonly forwards: number };

export interface BenchResult {
  readonly sentencesPerSecond: number;
  readonly forwardMs: number;
  readonly ep: string;
  readonly threads: number;
}

export type Reply =
  | { readonly kind: "ready"; readonly what: string; readonly detail: Record<string, unknown> }
  | { readonly kind: "step"; readonly info: StepInfo }
  | { readonly kind: "eval"; readonly result: EvalResult & { step: number } }
  | { readonly kind: "trained"; readonly steps: number; readonly seconds: number; readonly test: EvalResult }
  | { readonly kind: "paused"; readonly paused: boolean }
  | { readonly kind: "classified"; readonly text: string; readonly probs: number[]; readonly labels: readonly string[] }
  | { readonly kind: "exported"; readonly name: string; readonly bytes: Uint8Array }
  | { readonly kind: "imported"; readonly name: string; readonly test: EvalResult }
  | { readonly kind: "evaluated"; readonly test: EvalResult }
  | { readonly kind: "probed"; readonly result: ProbeResult }
  | { readonly kind: "benched"; readonly result: BenchResult }
  | { readonly kind: "error"; readonly request: string; readonly message: string; readonly code?: string };
