/**
 * Reading a TensorFlow.js graph model's artifacts (`model.json` + binary weight shards) into host
 * tensors, decoded exactly as `@tensorflow/tfjs-core`'s `io.decodeWeights` does:
 *
 * - each `weightsManifest` group concatenates its `paths` (shards) into one byte stream, and its
 *   `weights` lie back to back in that stream in the order listed, each taking
 *   numel(shape) × bytes-per-element (float32/int32: 4, bool: 1);
 * - a `quantization: { dtype, scale, min }` entry stores the weight as uint8/uint16 codes `q` and
 *   the value is `q·scale + min` computed in double precision and rounded once to float32 (for
 *   int32 weights: `Math.round(q·scale + min)`); `quantization.dtype: "float16"` stores IEEE
 *   halves (float32 weights only);
 * - `string` and `complex64` weights are valid TF.js but unused by the models peft-ts reads, so
 *   they raise `UnsupportedOptionError` rather than being skipped.
 *
 * Values are read in the host's byte order, as TF.js does with typed arrays (little-endian on
 * every platform Node supports).
 */
import { existsSync, readFileSync, statSync, dirname, join } from "../../platform/fs.js";
import { ConfigError, MissingFileError, UnsupportedOptionError } from "../../errors.js";
import { readJsonObject } from "../../io/json-file.js";
import { halfToFloat, numel, tensor, type Tensor } from "../../tensor.js";

/** One `modelTopology.node` entry of a TF.js graph model (attributes left as stored). */
export interface TfjsNode {
  readonly name: string;
  readonly op: string;
  readonly input: readonly string[];
  readonly attr: Readonly<Record<string, unknown>>;
}

export interface TfjsQuantization {
  readonly dtype: "uint8" | "uint16" | "float16";
  readonly scale?: number;
  readonly min?: number;
}

export interface TfjsWeightSpec {
  readonly name: string;
  readonly shape: readonly number[];
  readonly dtype: string;
  readonly quantization?: TfjsQuantization;
}

export interface TfjsWeightGroup {
  readonly paths: readonly string[];
  readonly weights: readonly TfjsWeightSpec[];
}

export interface TfjsModelJson {
  /** The model.json path (for error messages and to resolve shard paths). */
  readonly file: string;
  readonly nodes: readonly TfjsNode[];
  readonly weightsManifest: readonly TfjsWeightGroup[];
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function shapeOf(v: unknown, file: string, path: string): number[] {
  if (!Array.isArray(v) || !v.every((d) => Number.isInteger(d) && (d as number) >= 0)) {
    throw new ConfigError(file, path, `must be a list of non-negative integers, got ${JSON.stringify(v)}`);
  }
  return v as number[];
}

function quantizationOf(v: unknown, file: string, path: string): TfjsQuantization | undefined {
  if (v === undefined) return undefined;
  if (!isRecord(v)) throw new ConfigError(file, path, "must be an object { dtype, scale, min }");
  const dtype = v["dtype"];
  if (dtype !== "uint8" && dtype !== "uint16" && dtype !== "float16") {
    throw new UnsupportedOptionError(file, `${path}.dtype`, dtype, "TF.js quantizes to 'uint8', 'uint16' or 'float16'");
  }
  const q: { dtype: typeof dtype; scale?: number; min?: number } = { dtype };
  if (dtype !== "float16") {
    for (const k of ["scale", "min"] as const) {
      const x = v[k];
      if (typeof x !== "number" || !Number.isFinite(x)) {
        throw new ConfigError(file, `${path}.${k}`, `a ${dtype}-quantized weight needs a finite number '${k}', got ${JSON.stringify(x)}`);
      }
      q[k] = x;
    }
  }
  return q;
}

/** Parses and validates a TF.js graph model's `model.json`. */
export function readTfjsModelJson(file: string): TfjsModelJson {
  return parseTfjsModelJson(readJsonObject(file, "a TF.js graph model folder holds model.json next to its weight shards"), file);
}

/** Validates a parsed `model.json` (`file` names it in errors and anchors its shard paths). */
export function parseTfjsModelJson(raw: Record<string, unknown>, file: string): TfjsModelJson {
  const topo = raw["modelTopology"];
  if (!isRecord(topo) || !Array.isArray(topo["node"])) {
    throw new ConfigError(file, "modelTopology.node", "missing: this is not a TF.js graph model (layers models are not supported)");
  }
  const nodes: TfjsNode[] = (topo["node"] as unknown[]).map((n, i) => {
    if (!isRecord(n) || typeof n["name"] !== "string" || typeof n["op"] !== "string") {
      throw new ConfigError(file, `modelTopology.node[${i}]`, "each node needs a string 'name' and 'op'");
    }
    const input = n["input"] ?? [];
    if (!Array.isArray(input) || !input.every((s) => typeof s === "string")) {
      throw new ConfigError(file, `modelTopology.node[${i}].input`, "must be a list of strings");
    }
    return { name: n["name"], op: n["op"], input: input as string[], attr: isRecord(n["attr"]) ? n["attr"] : {} };
  });
  const manifest = raw["weightsManifest"];
  if (!Array.isArray(manifest)) throw new ConfigError(file, "weightsManifest", "missing: a graph model lists its weight shards there");
  const groups: TfjsWeightGroup[] = manifest.map((grp, gi) => {
    const at = `weightsManifest[${gi}]`;
    if (!isRecord(grp) || !Array.isArray(grp["paths"]) || !Array.isArray(grp["weights"])) {
      throw new ConfigError(file, at, "each group needs 'paths' and 'weights' lists");
    }
    const paths = grp["paths"] as unknown[];
    if (!paths.every((p) => typeof p === "string" && p.length > 0)) throw new ConfigError(file, `${at}.paths`, "must be a list of file names");
    const weights = (grp["weights"] as unknown[]).map((w, wi): TfjsWeightSpec => {
      const wat = `${at}.weights[${wi}]`;
      if (!isRecord(w) || typeof w["name"] !== "string" || typeof w["dtype"] !== "string") {
        throw new ConfigError(file, wat, "each weight needs a string 'name' and 'dtype'");
      }
      const quantization = quantizationOf(w["quantization"], file, `${wat}.quantization`);
      const spec = { name: w["name"], shape: shapeOf(w["shape"], file, `${wat}.shape`), dtype: w["dtype"] };
      return quantization ? { ...spec, quantization } : spec;
    });
    return { paths: paths as string[], weights };
  });
  return { file, nodes, weightsManifest: groups };
}

/** Bytes one weight takes in its group's stream. */
function byteSize(spec: TfjsWeightSpec, file: string, path: string): number {
  const n = numel(spec.shape);
  if (spec.quantization) {
    if (spec.quantization.dtype === "float16" && spec.dtype !== "float32") {
      throw new UnsupportedOptionError(file, `${path}.quantization.dtype`, "float16", `TF.js float16 quantization applies to float32 weights, not ${spec.dtype}`);
    }
    if (spec.dtype !== "float32" && spec.dtype !== "int32") {
      throw new UnsupportedOptionError(file, `${path}.dtype`, spec.dtype, "TF.js quantizes only float32 and int32 weights");
    }
    return n * (spec.quantization.dtype === "uint8" ? 1 : 2);
  }
  switch (spec.dtype) {
    case "float32":
    case "int32":
      return n * 4;
    case "bool":
      return n;
    default:
      throw new UnsupportedOptionError(file, `${path}.dtype`, spec.dtype, "peft-ts reads float32, int32 and bool TF.js weights");
  }
}

/** A fresh, aligned copy of `len` bytes of `buf` from `off`. */
function copyBytes(buf: Uint8Array, off: number, len: number): ArrayBuffer {
  const out = new ArrayBuffer(len);
  new Uint8Array(out).set(buf.subarray(off, off + len));
  return out;
}

/** Decodes one weight from its bytes, as `tf.io.decodeWeights`. */
function decodeOne(spec: TfjsWeightSpec, bytes: ArrayBuffer): Tensor {
  const n = numel(spec.shape);
  const q = spec.quantization;
  if (q) {
    const codes = q.dtype === "uint8" ? new Uint8Array(bytes) : new Uint16Array(bytes);
    if (spec.dtype === "int32") {
      const out = new Int32Array(n);
      for (let i = 0; i < n; i++) out[i] = Math.round(codes[i]! * q.scale! + q.min!);
      return tensor("int32", spec.shape, out);
    }
    const out = new Float32Array(n);
    if (q.dtype === "float16") for (let i = 0; i < n; i++) out[i] = halfToFloat(codes[i]!);
    else for (let i = 0; i < n; i++) out[i] = codes[i]! * q.scale! + q.min!;
    return tensor("float32", spec.shape, out);
  }
  if (spec.dtype === "float32") return tensor("float32", spec.shape, new Float32Array(bytes));
  if (spec.dtype === "int32") return tensor("int32", spec.shape, new Int32Array(bytes));
  return tensor("bool", spec.shape, new Uint8Array(bytes));
}

/**
 * Decodes every weight of `model` (shards are read from the folder of `model.file`). Returns the
 * tensors by their TF.js name, in manifest order.
 */
export function loadTfjsWeights(model: TfjsModelJson): Map<string, Tensor> {
  const dir = dirname(model.file);
  return decodeTfjsWeights(model, (p, gi) => {
    const f = join(dir, p);
    if (!existsSync(f) || !statSync(f).isFile()) {
      throw new MissingFileError(f, `${model.file} lists it in weightsManifest[${gi}].paths; restore the file (reinstall the package)`);
    }
    return readFileSync(f);
  });
}

/**
 * Decodes every weight of `model` from shard bytes: `shard(path, group)` gives the bytes of one
 * `weightsManifest[group].paths` entry (a file read, or a fetched / picked file in a browser).
 */
export function decodeTfjsWeights(model: TfjsModelJson, shard: (path: string, group: number) => Uint8Array): Map<string, Tensor> {
  const out = new Map<string, Tensor>();
  model.weightsManifest.forEach((grp, gi) => {
    const shards = grp.paths.map((p) => shard(p, gi));
    const stream = shards.length === 1 ? shards[0]! : concatBytes(shards);
    let off = 0;
    grp.weights.forEach((spec, wi) => {
      const at = `weightsManifest[${gi}].weights[${wi}]`;
      const len = byteSize(spec, model.file, at);
      if (off + len > stream.byteLength) {
        throw new ConfigError(
          model.file,
          `${at}`,
          `weight '${spec.name}' needs bytes ${off}..${off + len} but the shards of group ${gi} hold ${stream.byteLength}; the shards are truncated or belong to another model`,
        );
      }
      if (out.has(spec.name)) throw new ConfigError(model.file, `${at}.name`, `weight '${spec.name}' is listed twice`);
      out.set(spec.name, decodeOne(spec, copyBytes(stream, off, len)));
      off += len;
    });
    if (off !== stream.byteLength) {
      throw new ConfigError(model.file, `weightsManifest[${gi}]`, `the shards hold ${stream.byteLength} bytes but the listed weights use ${off}; the manifest does not describe these shards`);
    }
  });
  return out;
}

function concatBytes(parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.byteLength;
  }
  return out;
}
