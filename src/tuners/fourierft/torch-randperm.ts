/**
 * `torch.randperm(n, generator=torch.Generator().manual_seed(seed))` on the CPU, bit for bit:
 * PyTorch's CPU generator is MT19937 seeded with the low 32 bits of the seed (the standard
 * `init_genrand`), `random()` is one 32-bit output, and `randperm_cpu` is a forward
 * Fisher–Yates shuffle swapping r[i] with r[i + random() % (n − i)] (for n < 2³²/20).
 */
import { ConfigError } from "../../errors.js";

/** The standard 32-bit Mersenne Twister (as `std::mt19937` and PyTorch's `at::mt19937`). */
export class Mt19937 {
  private readonly mt = new Uint32Array(624);
  private idx = 624;

  constructor(seed: number) {
    this.mt[0] = seed >>> 0;
    for (let i = 1; i < 624; i++) {
      const prev = this.mt[i - 1]! ^ (this.mt[i - 1]! >>> 30);
      this.mt[i] = (Math.imul(1812433253, prev) + i) >>> 0; // mod 2³²
    }
  }

  /** The next 32-bit output. */
  next(): number {
    if (this.idx >= 624) {
      for (let k = 0; k < 624; k++) {
        const y = (this.mt[k]! & 0x80000000) | (this.mt[(k + 1) % 624]! & 0x7fffffff);
        this.mt[k] = this.mt[(k + 397) % 624]! ^ (y >>> 1) ^ (y & 1 ? 0x9908b0df : 0);
      }
      this.idx = 0;
    }
    let y = this.mt[this.idx++]!;
    y ^= y >>> 11;
    y ^= (y << 7) & 0x9d2c5680;
    y ^= (y << 15) & 0xefc60000;
    y ^= y >>> 18;
    return y >>> 0;
  }
}

/** The first `take` entries of `torch.randperm(n)` with a generator seeded `seed`. */
export function torchRandperm(n: number, seed: number, take = n): Int32Array {
  if (!Number.isSafeInteger(seed) || seed < 0) throw new ConfigError("adapter_config.json", "random_loc_seed", `must be a non-negative integer, got ${seed}`);
  if (n >= 2 ** 32 / 20) throw new ConfigError("adapter_config.json", "n_frequency", `layer of ${n} weights: too large for torch's 32-bit randperm path`);
  const r = new Int32Array(n);
  for (let i = 0; i < n; i++) r[i] = i;
  // the low 32 bits of the seed (PyTorch's mt19937 takes `seed & 0xffffffff`)
  const gen = new Mt19937(seed % 2 ** 32);
  for (let i = 0; i < n - 1; i++) {
    const z = gen.next() % (n - i);
    const t = r[i]!;
    r[i] = r[z + i]!;
    r[z + i] = t;
  }
  return r.slice(0, take);
}
