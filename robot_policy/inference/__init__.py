"""robot_policy.inference: the real-time core.

* ``LatencyEstimator``: inference latency as a percentile over a recent window.
* ``ChunkScheduler``: receding horizon / asynchronous / temporal-ensembling execution of
  timed action chunks, real-time-chunking priors. Shared by the ROS policy node and eval.
* ``InferenceEngine`` (``robot_policy.inference.engine``): static buffers, CUDA graphs, bf16,
  warm start, around any policy family. Imported lazily: the scheduler does not need torch.
* ``ServingConfig`` (``robot_policy.inference.serving``): engine + warm start + scheduler
  settings in one frozen config, the source of the policy node's parameters and the flags of
  ``robot-policy eval`` and ``robot-policy bench inference``.

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
from robot_policy.inference.serving import EngineConfig, ServingConfig
from robot_policy.inference.warmstart import WarmStartConfig

__all__ = [
    "ChunkScheduler",
    "EngineConfig",
    "InferenceRequest",
    "LatencyConfig",
    "LatencyEstimator",
    "Prior",
    "SchedulerConfig",
    "ServingConfig",
    "WarmStartConfig",
    "rtc_weights",
]
