"""robot_policy.inference: the real-time core.

* ``LatencyEstimator``: inference latency as a percentile over a recent window.
* ``ChunkScheduler``: receding horizon / asynchronous / temporal-ensembling execution of
  timed action chunks, real-time-chunking priors. Shared by the ROS policy node and eval.
* ``InferenceEngine`` (``robot_policy.inference.engine``): static buffers, CUDA graphs, bf16,
  warm start, around any policy family. Imported lazily: the scheduler does not need torch.

See docs/inference.md.
"""

from robot_policy.inference.latency import LatencyConfig, LatencyEstimator
from robot_policy.inference.scheduler import (
    ChunkScheduler,
    InferenceRequest,
    Prior,
    SchedulerConfig,
    rtc_weights,
)

__all__ = [
    "ChunkScheduler",
    "InferenceRequest",
    "LatencyConfig",
    "LatencyEstimator",
    "Prior",
    "SchedulerConfig",
    "rtc_weights",
]
