#!/usr/bin/env bash
# The GPU checks of a session's final code (the eighth session's could not run: device time
# spent), in two calls (each within the 10-minute limit):
#   run(command="PART=checks bash benchmarks/run_verify_gpu.sh", carry=[".whl", ".whl_cupti"], timeout_s=600)
#   run(command="HYBRID_S=560 PART=hybrid bash benchmarks/run_verify_gpu.sh", carry=[".whl"], timeout_s=600)
# checks: $OUT/gpu_tests.txt (the whole tests/gpu with cupti-python installed, so the CUPTI tests run,
# ~2 min) and profiling.tgz (benchmarks/profiling.py: the CUPTI capture's cost, <1 min);
# hybrid: $OUT/hybrid.json + hybrid_log.txt (benchmarks/hybrid.py on the final code, 6-7 min: 402 s
# in the eighth session's run, more since the rounds are planned again from steady times);
# final: profiling.tgz and hybrid (run with .whl_cupti too; HYBRID_S=480 keeps it within 10 min);
# all: the three (HYBRID_S=450, ~8.5 min).
# overhead (also in checks): benchmarks/experiments/hybrid_overhead.py ($OUT/hybrid_overhead.json, <1 min);
# launch: the tests and benchmarks/launch_patterns.py ($OUT/launch_patterns.json, ~1 min);
# issue12: launch plus benchmarks/memory_sizes.py ($OUT/memory_sizes.json); figures: the two benchmarks
# without the tests (ROUNDS=9 for hosts whose speed changes in steps); profiling: profiling.tgz only.
# Without .whl_cupti the CUPTI tests are skipped (they say so) and the rest runs.
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
SITE=/tmp/site
if ls .whl_cupti/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/cupti_site \
    .whl_cupti/*.whl && SITE=/tmp/cupti_site:/tmp/site
fi
export PYTHONPATH=$SITE:$PWD PYTHONUNBUFFERED=1 RINGKERNEL_GPU_TESTS=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
PART=${PART:-checks}
if [ "$PART" = checks ] || [ "$PART" = all ] || [ "$PART" = launch ] || [ "$PART" = issue12 ] || [ "$PART" = profchecks ]; then
timeout "${TESTS_S:-200}" python3 -m pytest -m gpu -q -rs -p no:cacheprovider ${TESTS:-tests/gpu} > "$OUT/gpu_tests.txt" 2>&1
echo "tests: rc=$? $(tail -1 "$OUT/gpu_tests.txt")"; grep -E "^FAILED" "$OUT/gpu_tests.txt" | head -10
fi
if [ "$PART" = checks ] || [ "$PART" = final ] || [ "$PART" = all ] || [ "$PART" = profiling ] || [ "$PART" = profchecks ]; then
mkdir -p "$OUT/profiling"
timeout "${PROF_S:-120}" python3 benchmarks/profiling.py --out-dir "$OUT/profiling" > "$OUT/profiling/bench_log.txt" 2>&1
echo "profiling: rc=$?"; grep -E "CUPTI capture|launch_us|durations" "$OUT/profiling/bench_log.txt"
(cd "$OUT" && tar czf profiling.tgz profiling && rm -rf profiling)
fi
if [ "$PART" = launch ] || [ "$PART" = issue12 ] || [ "$PART" = figures ]; then
  timeout "${LAUNCH_S:-240}" python3 benchmarks/launch_patterns.py --launches 10000 --rounds "${ROUNDS:-5}" --out "$OUT/launch_patterns.json" > "$OUT/launch_log.txt" 2>&1
  echo "launch patterns: rc=$?"; cat "$OUT/launch_log.txt" | grep -v Warning | tail -12
fi
if [ "$PART" = issue12 ] || [ "$PART" = figures ] || [ "$PART" = memory ]; then
  timeout "${MEMORY_S:-240}" python3 benchmarks/memory_sizes.py --rounds "${ROUNDS:-5}" --out "$OUT/memory_sizes.json" > "$OUT/memory_log.txt" 2>&1
  echo "memory sizes: rc=$?"; tail -12 "$OUT/memory_log.txt"
fi
if [ "$PART" = overhead ] || [ "$PART" = checks ]; then
  PYTHONPATH=/tmp/site:$PWD timeout "${OVERHEAD_S:-150}" python3 benchmarks/experiments/hybrid_overhead.py --out "$OUT/hybrid_overhead.json" > "$OUT/hybrid_overhead_log.txt" 2>&1
  echo "hybrid overhead: rc=$?"; cat "$OUT/hybrid_overhead_log.txt" | grep -v Warning | tail -8
fi
if [ "$PART" = hybrid ] || [ "$PART" = final ] || [ "$PART" = all ]; then
  export PYTHONPATH=/tmp/site:$PWD  # (CUPTI not needed there)
  timeout "${HYBRID_S:-540}" python3 benchmarks/hybrid.py --reps 12 --out "$OUT/hybrid.json" > "$OUT/hybrid_log.txt" 2>&1
  echo "hybrid: rc=$?"; grep -E "adaptive/best" "$OUT/hybrid_log.txt"
fi
