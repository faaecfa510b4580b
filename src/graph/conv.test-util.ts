/** Reference convolution for tests (shared by the graph op's tests and the CNN model's). */
/** Conv2d written out as loops (NCHW, group 1). */
export function naiveConv(
  x: ArrayLike<number>, xs: readonly number[], w: ArrayLike<number>, ws: readonly number[], b: ArrayLike<number> | null,
  s: readonly number[], p: readonly number[], d: readonly number[],
): { data: Float64Array; shape: number[] } {
  const [n, c, h, wd] = xs as [number, number, number, number];
  const [m, , kh, kw] = ws as [number, number, number, number];
  const oh = Math.floor((h + p[0]! + p[2]! - ((kh - 1) * d[0]! + 1)) / s[0]!) + 1;
  const ow = Math.floor((wd + p[1]! + p[3]! - ((kw - 1) * d[1]! + 1)) / s[1]!) + 1;
  const out = new Float64Array(n * m * oh * ow);
  for (let a = 0; a < n; a++)
    for (let o = 0; o < m; o++)
      for (let y = 0; y < oh; y++)
        for (let z = 0; z < ow; z++) {
          let acc = b ? b[o]! : 0;
          for (let ci = 0; ci < c; ci++)
            for (let i = 0; i < kh; i++)
              for (let j = 0; j < kw; j++) {
                const r = y * s[0]! + i * d[0]! - p[0]!;
                const q = z * s[1]! + j * d[1]! - p[1]!;
                if (r < 0 || r >= h || q < 0 || q >= wd) continue;
                acc += x[((a * c + ci) * h + r) * wd + q]! * w[((o * c + ci) * kh + i) * kw + j]!;
              }
          out[((a * m + o) * oh + y) * ow + z] = acc;
        }
  return { data: out, shape: [n, m, oh, ow] };
}
