/** Folding LoRA into base weights (`merge_and_unload`), including DoRA's magnitude rescaling. */
import { ShapeMismatchError } from "../../errors.js";
import { type Tensor, toFloat32 } from "../../tensor.js";

/** ΔW = scaling·B·A as [out, in] (float64 accumulation). */
export function loraDeltaWeight(A: Tensor, B: Tensor, scaling: number): Float64Array {
  const [r, n] = A.shape as [number, number];
  const [m, rb] = B.shape as [number, number];
  if (rb !== r) throw new ShapeMismatchError("lora_B", [m, r], B.shape, "rank of lora_B differs from lora_A");
  const a = toFloat32(A);
  const b = toFloat32(B);
  const out = new Float64Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let k = 0; k < r; k++) {
      const bik = b[i * r + k]! * scaling;
      if (bik === 0) continue;
      const row = k * n;
      for (let j = 0; j < n; j++) out[i * n + j]! += bik * a[row + j]!;
    }
  }
  return out;
}

/** New base weight (stored layout) for W + ΔW, or DoRA's (m/‖W+ΔW‖)·(W+ΔW). */
export function mergeLoraWeight(
  weight: Tensor,
  delta: Float64Array,
  fanInFanOut: boolean,
  magnitude?: Tensor,
): Tensor {
  const w = toFloat32(weight);
  const [d0, d1] = weight.shape as [number, number];
  const [out, inn] = fanInFanOut ? [d1, d0] : [d0, d1];
  if (delta.length !== out * inn) throw new ShapeMismatchError("lora delta", [out, inn], [delta.length], "adapter does not fit the base weight");
  // combined in [out, in]
  const comb = new Float64Array(out * inn);
  for (let o = 0; o < out; o++) {
    for (let i = 0; i < inn; i++) {
      const wv = fanInFanOut ? w[i * d1 + o]! : w[o * d1 + i]!;
      comb[o * inn + i] = wv + delta[o * inn + i]!;
    }
  }
  if (magnitude) {
    const mag = toFloat32(magnitude);
    for (let o = 0; o < out; o++) {
      let s = 0;
      for (let i = 0; i < inn; i++) s += comb[o * inn + i]! ** 2;
      const f = mag[o]! / Math.sqrt(s);
      for (let i = 0; i < inn; i++) comb[o * inn + i]! *= f;
    }
  }
  const res = new Float32Array(w.length);
  for (let o = 0; o < out; o++) {
    for (let i = 0; i < inn; i++) {
      const v = comb[o * inn + i]!;
      if (fanInFanOut) res[i * d1 + o] = v;
      else res[o * d1 + i] = v;
    }
  }
  return { dtype: "float32", shape: [...weight.shape], data: res };
}

/** DoRA's initial magnitude: the row norms of W + ΔW ([out]). */
export function doraMagnitude(weight: Tensor, delta: Float64Array, fanInFanOut: boolean): Tensor {
  const merged = mergeLoraWeight(weight, delta, fanInFanOut);
  const w = merged.data as Float32Array;
  const [d0, d1] = weight.shape as [number, number];
  const [out, inn] = fanInFanOut ? [d1, d0] : [d0, d1];
  const mag = new Float32Array(out);
  for (let o = 0; o < out; o++) {
    let s = 0;
    for (let i = 0; i < inn; i++) s += (fanInFanOut ? w[i * d1 + o]! : w[o * d1 + i]!) ** 2;
    mag[o] = Math.sqrt(s);
  }
  return { dtype: "float32", shape: [out], data: mag };
}
