"""Hybrid CPU/GPU dispatch: one element-wise body on both, a learned crossover (issue 15).

``HybridDispatcher`` decides per call (modes of the design proposal, section 6);
``@elementwise`` builds the CPU loop and the GPU kernel from one body and asks the dispatcher.
See docs/hybrid.md.
"""

from .dispatcher import Decision, Explanation, HybridConfig, HybridDispatcher, HybridStats, ProcessingMode
from .elementwise import HybridKernel, default_dispatcher, elementwise
from .model import CostModel, Fit

__all__ = [
    "ProcessingMode", "HybridConfig", "HybridDispatcher", "HybridStats", "Decision", "Explanation",
    "elementwise", "HybridKernel", "default_dispatcher", "CostModel", "Fit",
]  # fmt: skip
