/**
 * The browser side of `ort.ts`: `onnxruntime-web` (WASM, multi-threaded when the page is
 * cross-origin isolated; WebGPU when the browser gives an adapter). Where it finds its `.wasm`
 * files is `ort.env.wasm.wasmPaths` (default: next to the bundle); threads are
 * `ort.env.wasm.numThreads`, set before the first session.
 */
import * as ort from "onnxruntime-web";

export { ort };

/** The page's (or worker's) `navigator`, typed as far as this file reads it (the core compiles without the DOM library). */
const nav = (globalThis as { navigator?: { userAgent?: string; gpu?: unknown; hardwareConcurrency?: number } }).navigator;

/** The onnxruntime package in use and where it runs, for error messages. */
export function ortDescription(): string {
  return `onnxruntime-web ${ort.env.versions.web ?? ""} in ${nav?.userAgent ?? "a browser"}`;
}

/** `cpu` (WASM) always; `webgpu` when the browser exposes `navigator.gpu` (whether it gives an adapter shows at session creation). */
export function ortProviders(): string[] {
  return nav?.gpu !== undefined ? ["cpu", "webgpu"] : ["cpu"];
}

/** Logical cores the browser reports (`navigator.hardwareConcurrency`). */
export function cpuCount(): number {
  return nav?.hardwareConcurrency ?? 1;
}

/** A page has no CPU-time clock: the wall clock (`performance.now()`) stands in, so CPU figures equal wall ones. */
export function cpuTimeMs(): number {
  return performance.now();
}
