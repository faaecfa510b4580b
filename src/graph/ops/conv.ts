/**
 * 2-D convolution (NCHW, ONNX `Conv` and `ConvTranspose`, group 1, explicit pads). The gradient
 * of each is written with the other: for Y = Conv(X, W), dX = ConvTranspose(dY, W) with the same
 * strides, pads and dilations (output padding restores X's size), and dW is a convolution of the
 * input by the output gradient with batch and channel axes swapped (strides and dilations swap
 * roles); ConvTranspose is the adjoint of Conv, so its rule reuses the same two pieces.
 */
import type { OpName } from "./names.js";
import { GraphBuildError } from "../../errors.js";
import * as G from "../api.js";
import type { OpDef } from "../op-def.js";
import { formatShape, sameDim } from "../shape.js";
import type { Attrs, Dim, Value } from "../types.js";
import { arity, sameDtype } from "./common.js";

/** Strides, pads ([top, left, bottom, right]) and dilations of a 2-D convolution. */
export interface Conv2dGeometry {
  readonly strides: readonly [number, number];
  readonly pads: readonly [number, number, number, number];
  readonly dilations: readonly [number, number];
}

function intsAttr(op: string, attrs: Attrs, name: string, n: number, fallback: number, min: number): number[] {
  const v = attrs[name];
  if (v === undefined) return new Array<number>(n).fill(fallback);
  if (!Array.isArray(v) || v.length !== n || v.some((x) => !Number.isInteger(x) || x < min)) {
    throw new GraphBuildError(op, `${name} must be ${n} integers ≥ ${min}, got ${JSON.stringify(v)}`);
  }
  return [...(v as number[])];
}

/** The geometry of a Conv / ConvTranspose node's attributes (2-D, group 1, no auto_pad). */
export function convGeometry(op: string, attrs: Attrs): Conv2dGeometry {
  if (attrs.group !== undefined && attrs.group !== 1) throw new GraphBuildError(op, `only group 1 is supported, got ${String(attrs.group)}`);
  if (attrs.auto_pad !== undefined && attrs.auto_pad !== "NOTSET") throw new GraphBuildError(op, "auto_pad is not supported: give explicit pads");
  const [sh, sw] = intsAttr(op, attrs, "strides", 2, 1, 1) as [number, number];
  const [dh, dw] = intsAttr(op, attrs, "dilations", 2, 1, 1) as [number, number];
  const [pt, pl, pb, pr] = intsAttr(op, attrs, "pads", 4, 0, 0) as [number, number, number, number];
  return { strides: [sh, sw], pads: [pt, pl, pb, pr], dilations: [dh, dw] };
}

/** Output size of one spatial axis of a convolution (null when the input size is not a number). */
export function convOutDim(size: Dim, kernel: number, stride: number, padBegin: number, padEnd: number, dilation: number): Dim {
  if (typeof size !== "number") return null;
  const span = (kernel - 1) * dilation + 1;
  const n = Math.floor((size + padBegin + padEnd - span) / stride) + 1;
  return n;
}

function checkRank4(op: string, what: string, v: Value): void {
  if (v.rank !== 4) throw new GraphBuildError(op, `${what} must be 4-D (NCHW / [out, in, kh, kw]), got ${formatShape(v.shape)}`);
}

function checkChannels(op: string, a: Dim, b: Dim, sa: Value, sb: Value): void {
  if (typeof a === "number" && typeof b === "number" && a !== b) {
    throw new GraphBuildError(op, `channels differ: input ${formatShape(sa.shape)} vs weight ${formatShape(sb.shape)}`);
  }
  if (typeof a === "string" && typeof b === "string" && !sameDim(a, b)) {
    throw new GraphBuildError(op, `channels differ: input ${formatShape(sa.shape)} vs weight ${formatShape(sb.shape)}`);
  }
}

function geometryAttrs(geo: Conv2dGeometry): Record<string, number[]> {
  return { strides: [...geo.strides], pads: [...geo.pads], dilations: [...geo.dilations] };
}

function staticSpatial(op: string, v: Value): [number, number] {
  const [h, w] = [v.shape[2], v.shape[3]];
  if (typeof h !== "number" || typeof w !== "number") throw new GraphBuildError(op, `the gradient needs static spatial dims, got ${formatShape(v.shape)}`);
  return [h, w];
}

/**
 * dX of Y = Conv(X, W): ConvTranspose(dY, W) with the forward's geometry; the output padding
 * adds back the trailing rows and columns of X that no window reached (fewer than a stride).
 */
function convInputGrad(dy: Value, w: Value, inputHw: readonly [number, number], geo: Conv2dGeometry): Value {
  const [ho, wo] = staticSpatial("Conv", dy);
  const k = [w.shape[2] as number, w.shape[3] as number];
  const outPad = [0, 1].map((a) => {
    const covered = geo.strides[a]! * ([ho, wo][a]! - 1) + (k[a]! - 1) * geo.dilations[a]! + 1 - geo.pads[a]! - geo.pads[a + 2]!;
    return inputHw[a]! - covered;
  });
  return dy.graph.op1("ConvTranspose", [dy, w], { ...geometryAttrs(geo), output_padding: outPad });
}

/**
 * dW of Y = Conv(X, W) ([out, in, kh, kw]): a convolution of Xᵀ [C, N, H, W] (batch and channels
 * swapped) by dYᵀ [M, N, Ho, Wo] as the kernel, strides = the forward's dilations and dilations =
 * its strides; the result [C, M, ≥kh, ≥kw] is cut to the kernel (rows past the last window get no
 * gradient) and transposed back.
 */
function convWeightGrad(x: Value, dy: Value, kernel: readonly [number, number], geo: Conv2dGeometry): Value {
  const xt = G.transpose(x, [1, 0, 2, 3]);
  const dyt = G.transpose(dy, [1, 0, 2, 3]);
  let k = x.graph.op1("Conv", [xt, dyt], { strides: [...geo.dilations], pads: [...geo.pads], dilations: [...geo.strides] });
  const [kh, kw] = staticSpatial("Conv", k);
  if (kh !== kernel[0] || kw !== kernel[1]) k = G.slice(k, [0, 0], [kernel[0], kernel[1]], [2, 3]);
  return G.transpose(k, [1, 0, 2, 3]);
}

const CONV_ATTRS = { strides: "ints", pads: "ints", dilations: "ints", group: "int", auto_pad: "string" } as const;

export const convOps = {
  // X [N, C, H, W], W [M, C, kh, kw], optional B [M] → Y [N, M, Ho, Wo]
  Conv: {
    type: "Conv",
    attrs: { ...CONV_ATTRS, kernel_shape: "ints" },
    infer: (inputs, attrs) => {
      arity("Conv", inputs, 2, 3);
      const geo = convGeometry("Conv", attrs);
      const dtype = sameDtype("Conv", inputs);
      const [x, w, b] = inputs as [Value, Value, Value | undefined];
      checkRank4("Conv", "X", x);
      checkRank4("Conv", "W", w);
      checkChannels("Conv", x.shape[1]!, w.shape[1]!, x, w);
      const [kh, kw] = [w.shape[2], w.shape[3]];
      if (typeof kh !== "number" || typeof kw !== "number") throw new GraphBuildError("Conv", `kernel dims must be numbers, got ${formatShape(w.shape)}`);
      if (attrs.kernel_shape !== undefined && JSON.stringify(attrs.kernel_shape) !== JSON.stringify([kh, kw])) {
        throw new GraphBuildError("Conv", `kernel_shape ${JSON.stringify(attrs.kernel_shape)} differs from W ${formatShape(w.shape)}`);
      }
      if (b && (b.rank !== 1 || (typeof b.shape[0] === "number" && typeof w.shape[0] === "number" && b.shape[0] !== w.shape[0]))) {
        throw new GraphBuildError("Conv", `B must be [${String(w.shape[0])}], got ${formatShape(b.shape)}`);
      }
      const oh = convOutDim(x.shape[2]!, kh, geo.strides[0], geo.pads[0], geo.pads[2], geo.dilations[0]);
      const ow = convOutDim(x.shape[3]!, kw, geo.strides[1], geo.pads[1], geo.pads[3], geo.dilations[1]);
      if ((typeof oh === "number" && oh < 1) || (typeof ow === "number" && ow < 1)) {
        throw new GraphBuildError("Conv", `input ${formatShape(x.shape)} is smaller than the kernel ${formatShape(w.shape)} with these pads and dilations`);
      }
      return [{ dtype, shape: [x.shape[0]!, w.shape[0]!, oh, ow] }];
    },
    vjp: (_g, n, [dy]) => {
      const [x, w, b] = n.inputs as [Value, Value, Value | undefined];
      const geo = convGeometry("Conv", n.attrs);
      const dx = convInputGrad(dy!, w, staticSpatial("Conv", x), geo);
      const dw = convWeightGrad(x, dy!, [w.shape[2] as number, w.shape[3] as number], geo);
      return b ? [dx, dw, G.reduceSum(dy!, [0, 2, 3], false)] : [dx, dw];
    },
  },
  // X [N, M, H, W], W [M, C, kh, kw] → Y [N, C, Ho, Wo], Ho = s·(H−1) + op + (kh−1)·d + 1 − pads
  ConvTranspose: {
    type: "ConvTranspose",
    attrs: { ...CONV_ATTRS, output_padding: "ints" },
    infer: (inputs, attrs) => {
      arity("ConvTranspose", inputs, 2);
      const dtype = sameDtype("ConvTranspose", inputs);
      const [x, w] = inputs as [Value, Value];
      checkRank4("ConvTranspose", "X", x);
      checkRank4("ConvTranspose", "W", w);
      checkChannels("ConvTranspose", x.shape[1]!, w.shape[0]!, x, w);
      const geo = convGeometry("ConvTranspose", attrs);
      const op = intsAttr("ConvTranspose", attrs, "output_padding", 2, 0, 0);
      const out = [0, 1].map((a): Dim => {
        const size = x.shape[a + 2]!;
        const k = w.shape[a + 2];
        if (typeof size !== "number" || typeof k !== "number") return null;
        if (op[a]! >= Math.max(geo.strides[a]!, geo.dilations[a]!)) throw new GraphBuildError("ConvTranspose", `output_padding ${op[a]!} must be below the stride or dilation`);
        return geo.strides[a]! * (size - 1) + op[a]! + (k - 1) * geo.dilations[a]! + 1 - geo.pads[a]! - geo.pads[a + 2]!;
      });
      return [{ dtype, shape: [x.shape[0]!, w.shape[1]!, out[0]!, out[1]!] }];
    },
    // the adjoint of Conv(·, W): dX = Conv(dY, W); dW as Conv's weight gradient with dY as its input and X as its output gradient
    vjp: (_g, n, [dy]) => {
      const [x, w] = n.inputs as [Value, Value];
      const geo = convGeometry("ConvTranspose", n.attrs);
      const dx = dy!.graph.op1("Conv", [dy!, w], geometryAttrs(geo));
      const dw = convWeightGrad(dy!, x, [w.shape[2] as number, w.shape[3] as number], geo);
      return [dx, dw];
    },
  },
} satisfies Partial<Record<OpName, OpDef>>;
