#!/bin/bash
# The GPU measurements of issue 7 in one prepared run (at most 9 minutes: the timeouts below add up to 530 s), for a session that has the
# device tool. From the project root, after `npm run build` and `../shared/gpu/pack.sh`:
#
#   device run, carry [".gpu", "dist"]:   bash .gpu/run.sh bash bench/gpu-suite.sh
#
# Every benchmark writes one JSON line to $OUT/<name>.json (stderr to <name>.err); a summary line
# per benchmark is printed. Per-command timeouts keep the whole run under the device's 10-minute
# limit even when one of them hangs. MODEL=tiny STEPS=1 runs the same list on the small shape (a local
# smoke test, e.g. on lavapipe: see docs/webgpu.md).
set -u
out=${OUT:-/tmp/gpu-suite}
model=${MODEL:-gpt2-small}
steps=${STEPS:-10}
mkdir -p "$out"
node --version > "$out/env.txt" 2>&1
(nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv || true) >> "$out/env.txt" 2>&1

run() {
  local name=$1 limit=$2
  shift 2
  local t0=$SECONDS
  timeout "$limit" "$@" > "$out/$name.json" 2> "$out/$name.err"
  local rc=$?
  echo "== $name rc=$rc $((SECONDS - t0))s: $(python3 - "$out/$name.json" <<'PY' 2>/dev/null || tail -c 300 "$out/$name.json"
import json, sys
d = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
keys = ["model", "dtype", "resident", "batch", "seq", "tokensPerSecond", "stepMs", "achievedGflops", "mfu", "mfuMedian", "peakRssMiB", "ratios", "median_ms", "tokens_per_s", "device"]
print(json.dumps({k: d[k] for k in keys if k in d}))
PY
)"
}

ts="node dist/bench/main.js train-step --model $model"
# WebGPU: the step as in the CPU benchmark, then with the optimizer in the graph (state on the GPU),
# then float16 compute with float32 master weights, then the reference shape (batch 8 x seq 512).
run placement 30 node dist/bench/main.js placement --model "$model"
run webgpu-fp32 55 $ts --ep webgpu --steps $steps --ceiling-rounds 1
run webgpu-fp32-resident 55 $ts --ep webgpu --steps $steps --resident
run webgpu-fp16-resident 55 $ts --ep webgpu --steps $steps --resident --dtype float16
run webgpu-fp16-resident-seq512 65 $ts --ep webgpu --steps $steps --resident --dtype float16 --seq 512
run webgpu-infer 40 node dist/bench/main.js infer --ep webgpu
run webgpu-infer-fp16 40 node dist/bench/main.js infer --ep webgpu --dtype float16
# The peer on the same machine: Python PEFT + PyTorch on CUDA (fp32 at 8 x 128, bf16 at 8 x 512)
shapes=$([ "$model" = tiny ] && echo small || echo gpt2)
run torch-cuda-fp32 45 python3 .gpu/peer_peft.py --device cuda --shapes "$shapes" --steps $steps
run torch-cuda-bf16-seq512 45 python3 .gpu/peer_peft.py --device cuda --dtype bf16 --seq 512 --shapes "$shapes" --steps $steps
# The CPU comparison pinned to the same two cores, 2 threads each
run cpu-pinned 50 taskset -c 0,1 $ts --threads 2 --steps 3
run torch-cpu-pinned 50 taskset -c 0,1 python3 .gpu/peer_peft.py --device cpu --threads 2 --shapes "$shapes" --steps 3
echo "results in $out"
