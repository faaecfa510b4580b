/**
 * `npm run bench -- matmul`: the matmul ceiling (`src/runtime/matmul-ceiling.ts`) on GPT-2-small
 * training shapes: best GFLOP/s of a plain ORT MatMul vs the same product from peft-ts's graph
 * builder. `measureMatmulCeiling` is reusable: a training benchmark calls it in the same run and
 * reports MFU = achieved / ceilingGflops.
 */
import { performance } from "node:perf_hooks";
import { cpus } from "node:os";
import { type Command, InvalidArgumentError, Option } from "commander";
import { GPT2_SMALL_SHAPES, type MatmulShape, measureMatmulCeiling, round } from "../src/runtime/matmul-ceiling.js";
import type { ExecutionProvider } from "../src/runtime/session.js";
import { benchEnvironment, emitResult, positiveInt, progress } from "./env.js";

export {
  GPT2_SMALL_SHAPES,
  MATMUL_VARIANTS,
  PlainCeiling,
  builderLinearGraph,
  builderMatmulGraph,
  measureMatmulCeiling,
  mixCeilingGflops,
  plainMatmulModel,
  type CeilingDtype,
  type MatmulCeiling,
  type MatmulCeilingOptions,
  type MatmulShape,
  type MatmulShapeResult,
  type MatmulTiming,
  type MatmulVariant,
} from "../src/runtime/matmul-ceiling.js";

/** `--shapes`: names from GPT2_SMALL_SHAPES and/or `MxKxN`, comma-separated. */
export function parseShapes(spec: string): MatmulShape[] {
  return spec.split(",").map((part) => {
    const p = part.trim();
    const named = GPT2_SMALL_SHAPES.find((s) => s.name === p);
    if (named) return named;
    const m = /^(\d+)x(\d+)x(\d+)$/.exec(p);
    if (!m || [m[1], m[2], m[3]].some((d) => Number(d) < 1)) {
      throw new InvalidArgumentError(`'${p}' is neither MxKxN nor one of ${GPT2_SMALL_SHAPES.map((s) => s.name).join(", ")}`);
    }
    return { name: p, m: Number(m[1]), k: Number(m[2]), n: Number(m[3]) };
  });
}

export function register(program: Command): void {
  program
    .command("matmul")
    .description("matmul ceiling: best GFLOP/s of a plain ORT MatMul vs the same product from peft-ts's graph builder, on GPT-2-small training shapes")
    .option("--threads <n>", "intra-op threads (default: number of CPUs)", positiveInt("--threads"))
    .addOption(new Option("--ep <ep>", "execution provider").choices(["cpu", "webgpu"]).default("cpu"))
    .option("--repeat <n>", "timed runs per shape and variant (best counts)", positiveInt("--repeat"), 5)
    .option("--warmup <n>", "untimed runs before timing", positiveInt("--warmup"), 2)
    .option("--shapes <list>", `comma-separated MxKxN or names (${GPT2_SMALL_SHAPES.map((s) => s.name).join(", ")})`, parseShapes)
    .option("--no-transfer", "fetch a one-element slice instead of the product (kernel rate, no copy to JavaScript)")
    .action(async (o: { threads?: number; ep: ExecutionProvider; repeat: number; warmup: number; shapes?: MatmulShape[]; transfer: boolean }) => {
      const threads = o.threads ?? cpus().length;
      const t0 = performance.now();
      const r = await measureMatmulCeiling({
        threads,
        ep: o.ep,
        repeat: o.repeat,
        warmup: o.warmup,
        shapes: o.shapes ?? GPT2_SMALL_SHAPES,
        transferOutput: o.transfer,
        onProgress: progress,
      });
      emitResult({
        bench: "matmul",
        env: benchEnvironment({ threads, ep: o.ep }),
        repeat: r.repeat,
        warmup: r.warmup,
        transferOutput: r.transferOutput,
        ceilingGflops: r.ceilingGflops,
        ceilingCpuGflops: r.ceilingCpuGflops,
        peakGflops: r.peakGflops,
        gflops: r.gflops,
        ratio: r.ratio,
        shapes: r.shapes,
        wallSeconds: round((performance.now() - t0) / 1e3, 1),
      });
    });
}
