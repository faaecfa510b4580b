/**
 * Sobol' low-discrepancy points in [0, 1)^d (Bratley & Fox's Gray-code construction) with the
 * Joe–Kuo direction numbers of the first 16 dimensions; beyond them the coordinates are uniform
 * random draws (seeded). `skip` drops the first points (the all-zero point among them).
 */
import { Rng } from "../util/rng.js";

/** Joe–Kuo (new-joe-kuo-6.21201): [degree s, coefficients a, initial m_1..m_s] of dimensions 2…16. */
const JOE_KUO: readonly (readonly [number, number, readonly number[]])[] = [
  [1, 0, [1]],
  [2, 1, [1, 3]],
  [3, 1, [1, 3, 1]],
  [3, 2, [1, 1, 1]],
  [4, 1, [1, 1, 3, 3]],
  [4, 4, [1, 3, 5, 13]],
  [5, 2, [1, 1, 5, 5, 17]],
  [5, 4, [1, 1, 5, 5, 5]],
  [5, 7, [1, 1, 7, 11, 19]],
  [5, 11, [1, 1, 5, 1, 1]],
  [5, 13, [1, 1, 1, 3, 11]],
  [5, 14, [1, 3, 5, 5, 31]],
  [6, 1, [1, 3, 3, 9, 7, 49]],
  [6, 13, [1, 1, 1, 15, 21, 21]],
  [6, 16, [1, 3, 1, 13, 27, 49]],
];

/** Dimensions with Sobol' direction numbers. */
export const SOBOL_MAX_DIM = JOE_KUO.length + 1;

const BITS = 30;

function directions(dim: number): Uint32Array {
  const v = new Uint32Array(BITS);
  if (dim === 0) {
    for (let i = 0; i < BITS; i++) v[i] = 1 << (BITS - 1 - i);
    return v;
  }
  const [s, a, m] = JOE_KUO[dim - 1]!;
  for (let i = 0; i < Math.min(s, BITS); i++) v[i] = m[i]! << (BITS - 1 - i);
  for (let i = s; i < BITS; i++) {
    let x = v[i - s]! ^ (v[i - s]! >>> s);
    for (let k = 1; k < s; k++) if ((a >>> (s - 1 - k)) & 1) x ^= v[i - k]!;
    v[i] = x;
  }
  return v;
}

/** `n` points of the `d`-dimensional sequence after skipping `skip` (random coordinates past {@link SOBOL_MAX_DIM}, from `seed`). */
export function sobolPoints(n: number, d: number, skip = 0, seed = 0): number[][] {
  const dirs = Array.from({ length: Math.min(d, SOBOL_MAX_DIM) }, (_, j) => directions(j));
  const x = new Uint32Array(dirs.length);
  const rng = new Rng(seed).fork("sobol");
  const out: number[][] = [];
  for (let i = 0; i < n + skip; i++) {
    if (i > 0) {
      // Gray code: flip the direction of the lowest zero bit of i-1
      let c = 0;
      let k = i - 1;
      while (k & 1) {
        k >>>= 1;
        c++;
      }
      for (let j = 0; j < dirs.length; j++) x[j] = x[j]! ^ dirs[j]![c]!;
    }
    if (i < skip) continue;
    const p = Array.from(x, (xi) => xi / 2 ** BITS);
    for (let j = dirs.length; j < d; j++) p.push(rng.uniform());
    out.push(p);
  }
  return out;
}
