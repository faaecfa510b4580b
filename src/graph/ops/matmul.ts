/** Matrix products. */
import type { OpName } from "./names.js";
import { GraphBuildError } from "../../errors.js";
import * as G from "../api.js";
import type { OpDef } from "../op-def.js";
import { broadcastShapes, formatShape } from "../shape.js";
import type { Dim, Value } from "../types.js";
import { arity, sameDtype } from "./common.js";

/** Swap the last two axes. */
function mT(x: Value): Value {
  const r = x.rank;
  const perm = [...Array(r).keys()];
  perm[r - 1] = r - 2;
  perm[r - 2] = r - 1;
  return G.transpose(x, perm);
}

function checkInner(op: string, a: Dim, b: Dim, sa: readonly Dim[], sb: readonly Dim[]): void {
  if (typeof a === "number" && typeof b === "number" && a !== b) {
    throw new GraphBuildError(op, `inner dims differ: ${formatShape(sa)} × ${formatShape(sb)}`);
  }
}

export const matmulOps = {
  MatMul: {
    type: "MatMul",
    attrs: {},
    infer: (inputs) => {
      arity("MatMul", inputs, 2);
      const dtype = sameDtype("MatMul", inputs);
      const [a, b] = inputs as [Value, Value];
      if (a.rank < 2 || b.rank < 2) throw new GraphBuildError("MatMul", "operands must have rank ≥ 2 (unsqueeze vectors first)");
      checkInner("MatMul", a.shape[a.rank - 1]!, b.shape[b.rank - 2]!, a.shape, b.shape);
      const batch = broadcastShapes("MatMul", a.shape.slice(0, -2), b.shape.slice(0, -2));
      return [{ dtype, shape: [...batch, a.shape[a.rank - 2]!, b.shape[b.rank - 1]!] }];
    },
    // dA = dY·Bᵀ, dB = Aᵀ·dY; broadcast batch dims are summed by autodiff
    vjp: (_g, n, [dy]) => {
      const [a, b] = n.inputs as [Value, Value];
      return [G.matmul(dy!, mT(b)), G.matmul(mT(a), dy!)];
    },
  },
  Gemm: {
    type: "Gemm",
    attrs: { transA: "int", transB: "int", alpha: "float", beta: "float" },
    infer: (inputs, attrs) => {
      arity("Gemm", inputs, 2, 3);
      const dtype = sameDtype("Gemm", inputs);
      const [a, b] = inputs as [Value, Value];
      if (a.rank !== 2 || b.rank !== 2) throw new GraphBuildError("Gemm", "A and B must be 2-D");
      const m = attrs.transA ? a.shape[1]! : a.shape[0]!;
      const ka = attrs.transA ? a.shape[0]! : a.shape[1]!;
      const kb = attrs.transB ? b.shape[1]! : b.shape[0]!;
      const nn = attrs.transB ? b.shape[0]! : b.shape[1]!;
      checkInner("Gemm", ka, kb, a.shape, b.shape);
      return [{ dtype, shape: [m, nn] }];
    },
    vjp: (_g, n, [dy]) => {
      const [a, b, c] = n.inputs as [Value, Value, Value | undefined];
      const { transA, transB } = n.attrs;
      const alpha = (n.attrs.alpha as number | undefined) ?? 1;
      const beta = (n.attrs.beta as number | undefined) ?? 1;
      const g = dy!;
      const al = alpha === 1 ? {} : { alpha };
      // Y = alpha·op(A)·op(B): d op(A) = alpha·dY·op(B)ᵀ, d op(B) = alpha·op(A)ᵀ·dY (alpha stays in the Gemm)
      const da = transA ? G.gemm(b, g, null, { transA: !!transB, transB: true, ...al }) : G.gemm(g, b, null, { transB: !transB, ...al });
      const db = transB ? G.gemm(g, a, null, { transA: true, transB: !!transA, ...al }) : G.gemm(a, g, null, { transA: !transA, ...al });
      const dc = c ? (beta === 1 ? dy! : G.mul(dy!, beta)) : null;
      return c ? [da, db, dc] : [da, db];
    },
  },
} satisfies Partial<Record<OpName, OpDef>>;
