"""The container boundary: runs one untrusted image under a hardened policy and reports facts.

This package never imports the service (`scorer`); it knows nothing of datasets, scores or gRPC.
"""

from sandbox.executor import (
    Executor,
    ExecutorError,
    GpuAssignment,
    ImageInfo,
    ImageNotFoundError,
    JobHandle,
    Limits,
    Observation,
    OutputFileStatus,
    RunResult,
    RunSpec,
)

__all__ = [
    "Executor",
    "ExecutorError",
    "GpuAssignment",
    "ImageInfo",
    "ImageNotFoundError",
    "JobHandle",
    "Limits",
    "Observation",
    "OutputFileStatus",
    "RunResult",
    "RunSpec",
]
