#!/usr/bin/env bash
# On the GPU machine, from the repository root:
#   bash benchmarks/experiments/fastlaunch/run.sh   (with .whl installed on PYTHONPATH)
set -euo pipefail
d=benchmarks/experiments/fastlaunch
inc=$(python3 -c "import sysconfig;print(sysconfig.get_paths()['include'])")
suf=$(python3 -c "import sysconfig;print(sysconfig.get_config_var('EXT_SUFFIX'))")
mkdir -p /tmp/fastlaunch
gcc -O2 -Wall -shared -fPIC -I"$inc" $d/fastlaunch.c -o /tmp/fastlaunch/fastlaunch$suf
PYTHONPATH=/tmp/fastlaunch:${PYTHONPATH:-} python3 $d/bench.py
