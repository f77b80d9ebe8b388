"""Compiled-kernel runtime: the on-disk PTX/cubin cache, the caching compiler, the fast launcher."""

from .cache import CACHE_VERSION, CacheEntry, CacheMode, PtxCache, PtxCacheStats, default_cache_dir
from .compiler import CachingCompiler, CompiledKernel, default_compiler
from .fingerprint import code_fingerprint, code_fingerprint_report

__all__ = [
    "CACHE_VERSION", "CacheEntry", "CacheMode", "PtxCache", "PtxCacheStats", "default_cache_dir",
    "CachingCompiler", "CompiledKernel", "default_compiler", "code_fingerprint",
    "code_fingerprint_report",
]  # fmt: skip
