"""Image encoder of the HIL agent and the reward classifier: the project's ResNet-18 (GroupNorm,
:class:`robot_policy.nn.encoders.ResNet18GN`) truncated after ``stages`` of its four stages.

The full network divides the image by 32: a 48-64 px frame (what a CPU can afford for RL) ends
as a 2x2 map, on which spatial-softmax keypoints say almost nothing. HIL-SERL uses a ResNet-10
for the same reason; two stages (stride 8) keep a 6x6-8x8 map. The features are the
spatial-softmax keypoints (where) plus the channel means (what).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from robot_policy.nn.encoders import ResNet18GN, SpatialSoftmax


class TruncatedResNet(nn.Module):
    """(N, 3, H, W) float in [-0.5, 0.5] -> (N, out_dim)."""

    def __init__(
        self, out_dim: int, width: int = 16, stages: int = 2, num_kp: int = 16, pretrained: bool = False
    ):
        super().__init__()
        if not 1 <= stages <= 4:
            raise ValueError(f"stages must be in 1..4, got {stages}")
        full = ResNet18GN(out_dim, width=width, num_kp=num_kp, pretrained=pretrained)
        self.stem = nn.Sequential(full.conv1, full.bn1)
        self.stages = nn.ModuleList([full.layer1, full.layer2, full.layer3, full.layer4][:stages])
        channels = width * 2 ** (stages - 1)
        self.pool = SpatialSoftmax(channels, num_kp)
        self.proj = nn.Linear(self.pool.out_dim + channels, out_dim)
        self.out_dim = out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.stem(x)), 3, 2, 1)
        for stage in self.stages:
            x = stage(x)
        return self.proj(torch.cat([self.pool(x), x.mean((2, 3))], -1))
