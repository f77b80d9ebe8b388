#!/usr/bin/env bash
# Everything the GPU machine should check, in one device call (see ../shared/gpu/README.md):
#   run(command="bash benchmarks/run_all_gpu.sh", carry=[".whl"])
# Results land in $OUT (gpu_tests.txt, one JSON per benchmark, bench.log: 8 files; 8 come back at most): copy the ones to keep into
# benchmarks/results/ and commit them with the command and date.
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
RINGKERNEL_GPU_TESTS=1 timeout 300 python3 -m pytest -m gpu -q -rA -p no:cacheprovider tests/gpu > "$OUT/gpu_tests.txt" 2>&1
tail -3 "$OUT/gpu_tests.txt"
for b in launch_selection launch_nd kernel_runtime memory_pool memory_sizes streams messaging; do
  [ -n "${ONLY:-}" ] && [[ " $ONLY " != *" $b "* ]] && continue
  echo "=== $b" >> "$OUT/bench.log"
  timeout 280 python3 "benchmarks/$b.py" --out "$OUT/$b.json" >> "$OUT/bench.log" 2>&1 || echo "$b failed (see bench.log)"
done
