/**
 * `torch.randperm(n, generator=torch.Generator().manual_seed(seed))` on the CPU, bit for bit:
 * PyTorch's CPU generator is MT19937 seeded with the low 32 bits of the seed (the standard
 * `init_genrand`), `random()` is one 32-bit output, and `randperm_cpu` is a forward
 * Fisher–Yates shuffle swapping r[i] with r[i + random() % (n − i)] (for n < 2³²/20).
 */
import { ConfigError } from "../../errors.js";
import { TorchGenerator } from "../../util/torch-generator.js";

/** The first `take` entries of `torch.randperm(n)` with a generator seeded `seed`. */
export function torchRandperm(n: number, seed: number, take = n): Int32Array {
  if (!Number.isSafeInteger(seed) || seed < 0) throw new ConfigError("adapter_config.json", "random_loc_seed", `must be a non-negative integer, got ${seed}`);
  if (n >= 2 ** 32 / 20) throw new ConfigError("adapter_config.json", "n_frequency", `layer of ${n} weights: too large for torch's 32-bit randperm path`);
  const r = new Int32Array(n);
  for (let i = 0; i < n; i++) r[i] = i;
  // torch's CPU generator (its mt19937 takes the low 32 bits of the seed)
  const gen = new TorchGenerator(seed);
  for (let i = 0; i < n - 1; i++) {
    const z = gen.random() % (n - i);
    const t = r[i]!;
    r[i] = r[z + i]!;
    r[z + i] = t;
  }
  return r.slice(0, take);
}
