/**
 * The platform seam for onnxruntime: `onnxruntime-node` here; bundlers building for a browser
 * swap in `ort.browser.ts` (`onnxruntime-web`, the package.json `browser` field). Both expose
 * onnxruntime-common's API (`InferenceSession`, `Tensor`, `env`), so `src/runtime` is the same code.
 */
import { cpus } from "node:os";
import * as ort from "onnxruntime-node";

export { ort };

/** The onnxruntime package in use and where it runs, for error messages. */
export function ortDescription(): string {
  return `onnxruntime-node ${ort.env.versions.node} on ${process.platform}/${process.arch}`;
}

/** Execution providers this onnxruntime-node build lists for this platform. */
export function ortProviders(): string[] {
  const backends = (ort as unknown as { listSupportedBackends?: () => { name: string }[] }).listSupportedBackends;
  return backends ? backends().map((b) => b.name) : ["cpu"];
}

/** Logical cores (the size of onnxruntime's default intra-op pool). */
export function cpuCount(): number {
  return cpus().length;
}

/** CPU time (user + system) this process has used, in ms: what a timed onnxruntime run cost the machine. */
export function cpuTimeMs(): number {
  const c = process.cpuUsage();
  return (c.user + c.system) / 1e3;
}
