#!/usr/bin/env bash
# Issue 14's GPU checks in one device call (see ../shared/gpu/README.md):
#   run(command="bash benchmarks/run_messaging_gpu.sh", carry=[".whl"])
# $OUT gets: msg_small.txt (10^6 messages, first: a hang or a fault shows cheaply), messaging.json +
# messaging_bench.txt (the benchmark), msg_full.txt (10^7 messages), sanitizer_{memcheck,racecheck,synccheck}.txt
# (--report-api-errors no: cuda-bindings probes driver entry points with cuGetProcAddress, which fail
# by design and were reported as 34 "errors" that are not the kernels').
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 RINGKERNEL_GPU_TESTS=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
T="tests/gpu/test_messaging_gpu.py"
PYTEST="python3 -m pytest -m gpu -q -rA -p no:cacheprovider"
if [ "${SMALL_S:-150}" != 0 ]; then
  RINGKERNEL_MSG_COUNT=1000000 timeout "${SMALL_S:-150}" $PYTEST "$T" > "$OUT/msg_small.txt" 2>&1
  echo "small: rc=$? $(tail -1 "$OUT/msg_small.txt")"
fi
timeout "${BENCH_S:-170}" python3 benchmarks/messaging.py --out "$OUT/messaging.json" > "$OUT/messaging_bench.txt" 2>&1
echo "bench: rc=$?"; tail -4 "$OUT/messaging_bench.txt"
timeout "${FULL_S:-90}" $PYTEST "$T" > "$OUT/msg_full.txt" 2>&1
echo "full: rc=$? $(tail -1 "$OUT/msg_full.txt")"
for tool in memcheck racecheck synccheck; do
  RINGKERNEL_MSG_COUNT=100000 RINGKERNEL_SERIAL_KERNELS=1 timeout "${SAN_S:-60}" \
    compute-sanitizer --tool "$tool" --report-api-errors no $PYTEST "$T" > "$OUT/sanitizer_$tool.txt" 2>&1
  echo "$tool: rc=$? $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY|passed|failed' "$OUT/sanitizer_$tool.txt" | tail -2 | tr '\n' ' ')"
done
