"""Streams: ``StreamManager`` (priorities, events, async copies), ``StreamPool``, pipelines, async/await."""

from .graph import CapturedGraph
from .manager import Event, StreamConfig, StreamId, StreamKind, StreamManager
from .pipeline import PipelineReport, run_pipeline
from .pool import StreamPool, StreamPoolStats

__all__ = [
    "CapturedGraph", "Event", "StreamConfig", "StreamId", "StreamKind", "StreamManager",
    "PipelineReport", "run_pipeline", "StreamPool", "StreamPoolStats",
]  # fmt: skip
