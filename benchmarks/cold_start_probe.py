"""Where does a fresh process's first cache hit spend its time? (diagnostic for issue 4)

Run after a ringkernel kernel has been cached in RINGKERNEL_CACHE_DIR. Prints, for a fresh
process with a CUDA context: the first and second read of the cache file, the first and
second cuModuleLoadData of its cubin, and the same after loading a tiny unrelated module.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from numba import cuda


def main() -> None:
    cuda.device_array(1)  # context
    cuda.synchronize()
    from ringkernel.compile.cache import default_cache_dir
    from ringkernel.compile.launcher import load_function, unload_module

    d = default_cache_dir()
    files = sorted(Path(d).glob("*.rkc"))
    out: dict = {"dir": str(d), "files": [f.name for f in files], "loading": os.environ.get("CUDA_MODULE_LOADING")}
    f = files[0]
    for label in ("read1", "read2"):
        t = time.perf_counter()
        f.read_bytes()
        out[label + "_ms"] = (time.perf_counter() - t) * 1e3
    from ringkernel.compile import PtxCache

    key, cc = f.stem.rsplit("-", 1)
    cache = PtxCache.with_dir(d)
    for label in ("get1", "get2"):
        t = time.perf_counter()
        entry = cache.get_entry(key, cc)
        out[label + "_ms"] = (time.perf_counter() - t) * 1e3
    assert entry is not None
    for label in ("load1", "load2", "load3"):
        t = time.perf_counter()
        fn = load_function(entry.cubin, str(entry.meta["entry_name"]))
        out[label + "_ms"] = (time.perf_counter() - t) * 1e3
        unload_module(fn.module)
    out["cubin_bytes"] = len(entry.cubin)
    print(json.dumps(out))


if __name__ == "__main__":
    sys.exit(main())
