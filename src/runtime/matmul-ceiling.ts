/**
 * The matmul ceiling (`npm run bench -- matmul`, `peft demo`'s achieved fraction). For the matrix products a GPT-2-small training
 * step runs (batch 8 × seq 128 = 1024 tokens), the best achieved GFLOP/s of
 *   plain  — a hand-written one-node ONNX MatMul graph, weight [K, N] as an initializer;
 *   matmul — the same product from peft-ts's graph builder (`ops.matmul`, weight [K, N]);
 *   linear — peft-ts's `linear` (x · Wᵀ with W [N, K], nn.Linear layout, as the models build it),
 * all through the same `CompiledGraph` session options. `measureMatmulCeiling` is reusable:
 * a training benchmark calls it in the same run and reports MFU = achieved / ceilingGflops.
 */
import { cpuCount, cpuTimeMs } from "../platform/ort.js";
import onnxProto from "onnx-proto";
import { ConfigError } from "../errors.js";
import { linear } from "../graph/composite.js";
import * as ops from "../graph/api.js";
import { Graph } from "../graph/graph.js";
import { IR_VERSION, OPSET } from "../graph/opset.js";
import { toOnnx } from "../graph/onnx.js";
import { CompiledGraph, type ExecutionProvider } from "./session.js";
import { type Tensor, floatToHalf, tensor } from "../tensor.js";

/** Element type of the ceiling products: float16 for mixed-precision steps (`train-step --dtype float16`). */
export type CeilingDtype = "float32" | "float16";

const { onnx } = onnxProto;

export interface MatmulShape {
  readonly name: string;
  readonly m: number;
  readonly k: number;
  readonly n: number;
}

/** GPT-2 small training shapes (1024 tokens, d 768, MLP 3072, vocab 50257) and a square 1024³. */
export const GPT2_SMALL_SHAPES: readonly MatmulShape[] = [
  { name: "attn_proj", m: 1024, k: 768, n: 768 },
  { name: "mlp_up", m: 1024, k: 768, n: 3072 },
  { name: "mlp_down", m: 1024, k: 3072, n: 768 },
  { name: "lm_head", m: 1024, k: 768, n: 50257 },
  { name: "square", m: 1024, k: 1024, n: 1024 },
];

export type MatmulVariant = "plain" | "matmul" | "linear";
export const MATMUL_VARIANTS: readonly MatmulVariant[] = ["plain", "matmul", "linear"];

export interface MatmulTiming {
  readonly bestMs: number;
  readonly medianMs: number;
  /** 2·m·k·n / best time. */
  readonly gflops: number;
  /** Least process CPU time (all threads) of a run. */
  readonly bestCpuMs: number;
  /**
   * 2·m·k·n / (best CPU time / threads): the rate if the threads had their cores to themselves.
   * On a machine shared with other work, wall-clock rates fall with the load; this one much less.
   */
  readonly cpuGflops: number;
}

export interface MatmulShapeResult extends MatmulShape {
  readonly gflop: number;
  readonly timings: Readonly<Partial<Record<MatmulVariant, MatmulTiming>>>;
  /** Largest |difference| of each builder variant's output from the plain graph's (same inputs). */
  readonly maxAbsDiff: Readonly<Partial<Record<MatmulVariant, number>>>;
}

export interface MatmulCeiling {
  readonly threads: number;
  readonly ep: ExecutionProvider;
  readonly repeat: number;
  readonly warmup: number;
  /** Whether timed runs copied the product out to JavaScript. */
  readonly transferOutput: boolean;
  readonly shapes: readonly MatmulShapeResult[];
  /** Σ flops / Σ best time of each variant over all shapes (the shape mix's throughput). */
  readonly gflops: Readonly<Partial<Record<MatmulVariant, number>>>;
  /** gflops[variant] / gflops.plain. */
  readonly ratio: Readonly<Partial<Record<MatmulVariant, number>>>;
  /** The ceiling for MFU: gflops.plain. */
  readonly ceilingGflops: number;
  /** The same from CPU time: Σ flops / Σ (best CPU time / threads) of the plain graph. */
  readonly ceilingCpuGflops: number;
  /** Best single-shape plain GFLOP/s. */
  readonly peakGflops: number;
}

export interface MatmulCeilingOptions {
  threads?: number;
  ep?: ExecutionProvider;
  shapes?: readonly MatmulShape[];
  /** Timed runs per shape and variant; the best counts (default 5). */
  repeat?: number;
  /** Untimed runs first (default 2). */
  warmup?: number;
  /** Which graphs to time (default all three; `plain` is always included). */
  variants?: readonly MatmulVariant[];
  /**
   * Copy the product out to JavaScript in every timed run (default true, as a graph output is).
   * False fetches a one-element slice instead: the kernel rate, which is what a training graph's
   * internal products see (for the lm_head shape the copy of the [1024, 50257] output is a large
   * share of the time).
   */
  transferOutput?: boolean;
  onProgress?: (msg: string) => void;
}

/** Deterministic uniform values in [-1, 1) (xorshift32), so every run multiplies the same data. */
function randomTensor(shape: readonly number[], seed: number): Tensor<"float32"> {
  const n = shape.reduce((a, b) => a * b, 1);
  const data = new Float32Array(n);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    data[i] = (s >>> 0) / 2 ** 31 - 1;
  }
  return tensor("float32", shape, data);
}

function transpose2d(t: Tensor<"float32">): Tensor<"float32"> {
  const [r, c] = t.shape as [number, number];
  const out = new Float32Array(r * c);
  const src = t.data;
  const B = 64;
  for (let i0 = 0; i0 < r; i0 += B)
    for (let j0 = 0; j0 < c; j0 += B)
      for (let i = i0; i < Math.min(i0 + B, r); i++) for (let j = j0; j < Math.min(j0 + B, c); j++) out[j * r + i] = src[i * c + j]!;
  return tensor("float32", [c, r], out);
}

/**
 * A one-node ONNX model written directly with onnx-proto: y = MatMul(x, w), w an initializer.
 * With `probe`, a second output `probe` = y[0:1, 0:1]: fetching only it times the product without
 * copying y out to JavaScript (the kernel rate a graph that consumes y internally sees).
 */
export function plainMatmulModel(w: Tensor<"float32">, m: number, probe = false, dtype: CeilingDtype = "float32"): Uint8Array {
  const [k, n] = w.shape as [number, number];
  const F32 = dtype === "float16" ? onnx.TensorProto.DataType.FLOAT16 : onnx.TensorProto.DataType.FLOAT;
  const wData = dtype === "float16" ? Uint16Array.from(w.data, floatToHalf) : w.data;
  const I64 = onnx.TensorProto.DataType.INT64;
  const vi = (name: string, dims: number[]) => ({ name, type: { tensorType: { elemType: F32, shape: { dim: dims.map((d) => ({ dimValue: d })) } } } });
  const ints = (name: string, v: number[]) => ({ name, dims: [v.length], dataType: I64, rawData: new Uint8Array(BigInt64Array.from(v, BigInt).buffer) });
  const model = onnx.ModelProto.create({
    irVersion: IR_VERSION,
    producerName: "peft-ts-bench",
    opsetImport: [{ domain: "", version: OPSET }],
    graph: {
      name: "plain_matmul",
      node: [
        { opType: "MatMul", input: ["x", "w"], output: ["y"], name: "matmul" },
        ...(probe ? [{ opType: "Slice", input: ["y", "probe_starts", "probe_ends"], output: ["probe"], name: "probe" }] : []),
      ],
      input: [vi("x", [m, k])],
      output: [vi("y", [m, n]), ...(probe ? [vi("probe", [1, 1])] : [])],
      initializer: [
        { name: "w", dims: [k, n], dataType: F32, rawData: new Uint8Array(wData.buffer, wData.byteOffset, wData.byteLength) },
        ...(probe ? [ints("probe_starts", [0, 0]), ints("probe_ends", [1, 1])] : []),
      ],
    },
  });
  return onnx.ModelProto.encode(model).finish();
}

function withProbe(g: Graph, y: ReturnType<typeof ops.matmul>, probe: boolean): Graph {
  g.output(y, "y");
  if (probe) g.output(ops.slice(y, [0, 0], [1, 1], [0, 1]), "probe");
  return g;
}

/** The same product from peft-ts's builder: `ops.matmul(x, w)` with w [K, N]. */
export function builderMatmulGraph(w: Tensor<"float32">, m: number, probe = false): Graph {
  const g = new Graph("bench_matmul");
  const x = g.input("x", "float32", [m, w.shape[0]!]);
  return withProbe(g, ops.matmul(x, g.initializer("w", w)), probe);
}

/** peft-ts's `linear(x, W, null)` = x·Wᵀ with W [N, K] (PyTorch nn.Linear layout). */
export function builderLinearGraph(wNK: Tensor<"float32">, m: number, probe = false): Graph {
  const g = new Graph("bench_linear");
  const x = g.input("x", "float32", [m, wNK.shape[1]!]);
  return withProbe(g, linear(x, g.initializer("w", wNK), null), probe);
}

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  if (a.length !== b.length) return Number.POSITIVE_INFINITY;
  let d = 0;
  for (let i = 0; i < a.length; i++) {
    const x = Math.abs(a[i]! - b[i]!);
    if (!(x <= d)) d = x; // NaN propagates as > everything
  }
  return d;
}

/**
 * Times several sessions on the same input, interleaved: every round runs each session once, the
 * starting session rotating, so a change in machine load hits all variants alike.
 */
async function timeInterleaved(
  sessions: readonly CompiledGraph[],
  x: Tensor,
  opts: { repeat: number; warmup: number; fetch: readonly string[] },
): Promise<{ times: number[][]; cpu: number[][]; outputs: Float32Array[] }> {
  const outputs: Float32Array[] = [];
  for (const s of sessions) {
    outputs.push((await s.run({ x }, ["y"]))["y"]!.data as Float32Array);
    for (let i = 1; i < opts.warmup; i++) await s.run({ x }, opts.fetch);
  }
  const times: number[][] = sessions.map(() => []);
  const cpu: number[][] = sessions.map(() => []);
  for (let r = 0; r < opts.repeat; r++) {
    for (let j = 0; j < sessions.length; j++) {
      const idx = (r + j) % sessions.length;
      const c0 = cpuTimeMs();
      const t0 = performance.now();
      await sessions[idx]!.run({ x }, opts.fetch);
      times[idx]!.push(performance.now() - t0);
      cpu[idx]!.push(cpuTimeMs() - c0);
    }
  }
  return { times, cpu, outputs };
}

function timing(times: readonly number[], cpu: readonly number[], flops: number, threads: number): MatmulTiming {
  const sorted = [...times].sort((a, b) => a - b);
  const best = sorted[0]!;
  const median = sorted.length % 2 ? sorted[(sorted.length - 1) / 2]! : (sorted[sorted.length / 2 - 1]! + sorted[sorted.length / 2]!) / 2;
  const bestCpu = Math.max(Math.min(...cpu), 1e-3);
  return {
    bestMs: round(best, 3),
    medianMs: round(median, 3),
    gflops: sig(flops / (best / 1e3) / 1e9),
    bestCpuMs: round(bestCpu, 3),
    cpuGflops: sig(flops / (bestCpu / 1e3 / threads) / 1e9),
  };
}

/** Five significant digits (GFLOP/s range from 0.01 on tiny shapes to 10⁴ on a GPU). */
function sig(v: number): number {
  return Number(v.toPrecision(5));
}

/** `v` rounded to `digits` decimals. */
export function round(v: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(v * f) / f;
}

/**
 * Times each shape with each variant (warm-up runs, then `repeat` timed runs, best counts) and
 * checks that the builder graphs compute the plain graph's product. Sessions are created one
 * at a time and released before the next.
 */
export async function measureMatmulCeiling(options: MatmulCeilingOptions = {}): Promise<MatmulCeiling> {
  const threads = options.threads ?? cpuCount();
  const ep = options.ep ?? "cpu";
  const repeat = options.repeat ?? 5;
  const warmup = options.warmup ?? 2;
  const shapes = options.shapes ?? GPT2_SMALL_SHAPES;
  const variants = MATMUL_VARIANTS.filter((v) => v === "plain" || (options.variants ?? MATMUL_VARIANTS).includes(v));
  const say = options.onProgress ?? (() => undefined);
  const probe = !(options.transferOutput ?? true);

  const results: MatmulShapeResult[] = [];
  const totalFlops = { plain: 0, matmul: 0, linear: 0 };
  const totalSec = { plain: 0, matmul: 0, linear: 0 };
  let plainCpuSec = 0;
  for (const [i, s] of shapes.entries()) {
    const flops = 2 * s.m * s.k * s.n;
    const x = randomTensor([s.m, s.k], 1000 + i);
    const w = randomTensor([s.k, s.n], 2000 + i);
    const timings: Partial<Record<MatmulVariant, MatmulTiming>> = {};
    const diffs: Partial<Record<MatmulVariant, number>> = {};
    const sessions: CompiledGraph[] = [];
    try {
      for (const v of variants) {
        const bytes =
          v === "plain" ? plainMatmulModel(w, s.m, probe) : v === "matmul" ? toOnnx(builderMatmulGraph(w, s.m, probe)) : toOnnx(builderLinearGraph(transpose2d(w), s.m, probe));
        sessions.push(await CompiledGraph.create(bytes, { threads, ep }));
      }
      const { times, cpu, outputs } = await timeInterleaved(sessions, x, { repeat, warmup, fetch: probe ? ["probe"] : ["y"] });
      variants.forEach((v, j) => {
        const t = timing(times[j]!, cpu[j]!, flops, threads);
        timings[v] = t;
        if (v !== "plain") diffs[v] = maxAbsDiff(outputs[0]!, outputs[j]!);
        totalFlops[v] += flops;
        totalSec[v] += t.bestMs / 1e3;
        if (v === "plain") plainCpuSec += t.bestCpuMs / 1e3 / threads;
        say(`${s.name} [${s.m}x${s.k}]·[${s.k}x${s.n}] ${v}: best ${t.bestMs.toFixed(1)} ms, ${t.gflops.toFixed(1)} GFLOP/s`);
      });
    } finally {
      for (const sess of sessions) await sess.release();
    }
    results.push({ ...s, gflop: round(flops / 1e9, 4), timings, maxAbsDiff: diffs });
  }
  const gflops: Partial<Record<MatmulVariant, number>> = {};
  const ratio: Partial<Record<MatmulVariant, number>> = {};
  for (const v of variants) gflops[v] = sig(totalFlops[v] / totalSec[v] / 1e9);
  for (const v of variants) if (v !== "plain") ratio[v] = round(gflops[v]! / gflops.plain!, 3);
  return {
    threads,
    ep,
    repeat,
    warmup,
    transferOutput: !probe,
    shapes: results,
    gflops,
    ratio,
    ceilingGflops: gflops.plain!,
    ceilingCpuGflops: sig(totalFlops.plain / plainCpuSec / 1e9),
    peakGflops: Math.max(...results.map((r) => r.timings.plain!.gflops)),
  };
}

/**
 * The plain-MatMul ceiling measured one round at a time, so that a benchmark can interleave it
 * with its own work and both see the same machine load: `create` builds one kernel-rate session
 * per shape (product fetched through the one-element probe) and warms it up, every `round()` times
 * each shape once, `result()` reports the best run of each shape as `measureMatmulCeiling` does.
 */
export class PlainCeiling {
  private readonly times: number[][];
  private readonly cpu: number[][];
  private constructor(
    readonly shapes: readonly MatmulShape[],
    private readonly sessions: readonly CompiledGraph[],
    private readonly xs: readonly Tensor[],
    readonly threads: number,
    readonly ep: ExecutionProvider,
    readonly warmup: number,
  ) {
    this.times = shapes.map(() => []);
    this.cpu = shapes.map(() => []);
  }

  static async create(shapes: readonly MatmulShape[], opts: { threads: number; ep: ExecutionProvider; warmup?: number; dtype?: CeilingDtype }): Promise<PlainCeiling> {
    const sessions: CompiledGraph[] = [];
    const xs: Tensor[] = [];
    const dtype = opts.dtype ?? "float32";
    try {
      for (const [i, s] of shapes.entries()) {
        const x32 = randomTensor([s.m, s.k], 1000 + i);
        const x: Tensor = dtype === "float16" ? tensor("float16", x32.shape, Uint16Array.from(x32.data, floatToHalf)) : x32;
        const cg = await CompiledGraph.create(plainMatmulModel(randomTensor([s.k, s.n], 2000 + i), s.m, true, dtype), { threads: opts.threads, ep: opts.ep });
        sessions.push(cg);
        xs.push(x);
        for (let k = 0; k < (opts.warmup ?? 2); k++) await cg.run({ x }, ["probe"]);
      }
    } catch (e) {
      for (const cg of sessions) await cg.release();
      throw e;
    }
    return new PlainCeiling(shapes, sessions, xs, opts.threads, opts.ep, opts.warmup ?? 2);
  }

  private readonly mixRounds: { ms: number; cpuMs: number; flops: number }[] = [];

  /**
   * Times every shape once, or `counts[i]` times: a round with the step's own counts runs the
   * products of one forward pass back to back, as long as a good part of a step, so its best time
   * is as lucky as a step's best under a fluctuating load (`mixResult`).
   */
  async round(counts?: readonly number[]): Promise<void> {
    let ms = 0;
    let cpuMs = 0;
    let flops = 0;
    for (const [i, cg] of this.sessions.entries()) {
      const s = this.shapes[i]!;
      for (let k = 0; k < (counts?.[i] ?? 1); k++) {
        const c0 = cpuTimeMs();
        const t0 = performance.now();
        await cg.run({ x: this.xs[i]! }, ["probe"]);
        const t = performance.now() - t0;
        const c = cpuTimeMs() - c0;
        this.times[i]!.push(t);
        this.cpu[i]!.push(c);
        ms += t;
        cpuMs += c;
        flops += 2 * s.m * s.k * s.n;
      }
    }
    if (counts) this.mixRounds.push({ ms, cpuMs, flops });
  }

  /** Rates of the rounds run with counts: best and median round, and CPU time of the best-CPU round. */
  mixResult(): { rounds: number; bestGflops: number; medianGflops: number; cpuGflops: number } {
    if (this.mixRounds.length === 0) throw new ConfigError("matmul ceiling", "mixResult", "PlainCeiling.mixResult() needs a round with counts");
    const rate = (r: { ms: number; flops: number }) => r.flops / (r.ms / 1e3) / 1e9;
    const byTime = [...this.mixRounds].sort((a, b) => a.ms - b.ms);
    const mid = byTime.length % 2 ? rate(byTime[(byTime.length - 1) / 2]!) : (rate(byTime[byTime.length / 2 - 1]!) + rate(byTime[byTime.length / 2]!)) / 2;
    const bestCpu = [...this.mixRounds].sort((a, b) => a.cpuMs - b.cpuMs)[0]!;
    return {
      rounds: this.mixRounds.length,
      bestGflops: sig(rate(byTime[0]!)),
      medianGflops: sig(mid),
      cpuGflops: sig(bestCpu.flops / (bestCpu.cpuMs / 1e3 / this.threads) / 1e9),
    };
  }

  result(): MatmulCeiling {
    if (this.times[0]!.length === 0) throw new ConfigError("matmul ceiling", "result", "PlainCeiling.result() needs at least one round");
    let flops = 0;
    let sec = 0;
    let cpuSec = 0;
    const shapes: MatmulShapeResult[] = this.shapes.map((s, i) => {
      const f = 2 * s.m * s.k * s.n;
      const t = timing(this.times[i]!, this.cpu[i]!, f, this.threads);
      flops += f;
      sec += t.bestMs / 1e3;
      cpuSec += t.bestCpuMs / 1e3 / this.threads;
      return { ...s, gflop: round(f / 1e9, 4), timings: { plain: t }, maxAbsDiff: {} };
    });
    const plain = sig(flops / sec / 1e9);
    return {
      threads: this.threads,
      ep: this.ep,
      repeat: this.times[0]!.length,
      warmup: this.warmup,
      transferOutput: false,
      shapes,
      gflops: { plain },
      ratio: {},
      ceilingGflops: plain,
      ceilingCpuGflops: sig(flops / cpuSec / 1e9),
      peakGflops: Math.max(...shapes.map((r) => r.timings.plain!.gflops)),
    };
  }

  async release(): Promise<void> {
    for (const cg of this.sessions) await cg.release();
  }
}

/**
 * The plain-MatMul speed of a workload's matmul mix: shape i runs `count` times, so the mix takes
 * Σ count·flops_i / gflops_i seconds for Σ count·flops_i FLOPs. Shapes are matched by name.
 * `rate: "cpu"` uses the CPU-time rates (`cpuGflops`) instead of the best wall-clock ones,
 * `"median"` the median wall-clock times.
 */
export function mixCeilingGflops(c: MatmulCeiling, mix: readonly (MatmulShape & { readonly count: number })[], rate: "wall" | "cpu" | "median" = "wall"): number {
  let flops = 0;
  let sec = 0;
  for (const s of mix) {
    const r = c.shapes.find((x) => x.name === s.name);
    const t = r?.timings.plain;
    if (!t) throw new ConfigError("matmul ceiling", "mix", `no plain timing for shape '${s.name}'`);
    const f = 2 * s.m * s.k * s.n * s.count;
    flops += f;
    sec += rate === "median" ? (t.medianMs / 1e3) * s.count : f / ((rate === "cpu" ? t.cpuGflops : t.gflops) * 1e9);
  }
  return sig(flops / sec / 1e9);
}
