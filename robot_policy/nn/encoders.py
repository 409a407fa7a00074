"""Observation encoders: an MLP for low-dim state, a ResNet-18 for images.

The ResNet-18 follows Diffusion Policy: BatchNorm replaced by GroupNorm (BatchNorm statistics
break with EMA weights and small batches) and global average pooling replaced by spatial
softmax (keypoint coordinates keep *where* things are, which manipulation needs). It is written
here because torchvision has no CPU build for this torch; when torchvision is importable its
ImageNet conv weights can be loaded (``pretrained=True``; GroupNorm layers stay at init).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MLP(nn.Module):
    """Linear -> Mish stack; ``dims = (in, hidden..., out)``."""

    def __init__(self, dims: tuple[int, ...] | list[int]):
        super().__init__()
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            layers.append(nn.Linear(a, b))
            if i < len(dims) - 2:
                layers.append(nn.Mish())
        self.net = nn.Sequential(*layers) if layers else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _gn(ch: int) -> nn.GroupNorm:
    return nn.GroupNorm(max(1, ch // 16), ch)


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = _gn(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = _gn(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), _gn(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class SpatialSoftmax(nn.Module):
    """Per-channel softmax over pixels -> expected (x, y) keypoints, after a 1x1 conv."""

    def __init__(self, cin: int, num_kp: int = 32):
        super().__init__()
        self.kp = nn.Conv2d(cin, num_kp, 1)
        self.out_dim = num_kp * 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.kp(x)
        b, k, h, w = x.shape
        attn = torch.softmax(x.flatten(2), dim=-1).view(b, k, h, w)
        ys = torch.linspace(-1, 1, h, device=x.device, dtype=x.dtype)
        xs = torch.linspace(-1, 1, w, device=x.device, dtype=x.dtype)
        ex = (attn.sum(2) * xs).sum(-1)
        ey = (attn.sum(3) * ys).sum(-1)
        return torch.stack([ex, ey], dim=-1).flatten(1)


class ResNet18GN(nn.Module):
    """ResNet-18 trunk (GroupNorm) + spatial softmax + linear projection to ``out_dim``.

    ``width`` is the first stage's channel count (64 in the original); a smaller width keeps the
    same depth for CPU-only experiments.
    """

    def __init__(self, out_dim: int = 64, width: int = 64, num_kp: int = 32, pretrained: bool = False):
        super().__init__()
        w = width
        self.conv1 = nn.Conv2d(3, w, 7, 2, 3, bias=False)
        self.bn1 = _gn(w)
        chans = [w, w * 2, w * 4, w * 8]
        layers, cin = [], w
        for i, c in enumerate(chans):
            layers.append(nn.Sequential(BasicBlock(cin, c, 1 if i == 0 else 2), BasicBlock(c, c, 1)))
            cin = c
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.pool = SpatialSoftmax(cin, num_kp)
        self.proj = nn.Linear(self.pool.out_dim, out_dim)
        self.out_dim = out_dim
        if pretrained:
            self.load_torchvision_weights()

    def load_torchvision_weights(self) -> None:
        """Copy ImageNet conv weights from torchvision's resnet18 (width 64 only)."""
        try:
            from torchvision.models import ResNet18_Weights, resnet18
        except Exception as e:  # noqa: BLE001 - any import failure means "not available here"
            raise RuntimeError(
                f"pretrained=True needs an importable torchvision with downloadable weights ({e}); "
                "set pretrained: false in the policy config"
            ) from None
        src = resnet18(weights=ResNet18_Weights.IMAGENET1K_V1).state_dict()
        own = self.state_dict()
        for k, v in src.items():
            if k in own and own[k].shape == v.shape and "bn" not in k and "downsample.1" not in k:
                own[k] = v
        self.load_state_dict(own)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.proj(self.pool(x))


def crop_images(x: torch.Tensor, crop: tuple[int, int], random: bool) -> torch.Tensor:
    """Crop (N, C, H, W) to ``crop``: a random window per image in training, the centre otherwise."""
    n, _, h, w = x.shape
    ch, cw = crop
    if (ch, cw) == (h, w):
        return x
    if not random:
        top, left = (h - ch) // 2, (w - cw) // 2
        return x[:, :, top : top + ch, left : left + cw]
    tops = torch.randint(0, h - ch + 1, (n,), device=x.device)
    lefts = torch.randint(0, w - cw + 1, (n,), device=x.device)
    rows = (tops[:, None] + torch.arange(ch, device=x.device)[None]).view(n, 1, ch, 1)
    cols = (lefts[:, None] + torch.arange(cw, device=x.device)[None]).view(n, 1, 1, cw)
    idx_n = torch.arange(n, device=x.device).view(n, 1, 1, 1)
    return x.permute(0, 2, 3, 1)[idx_n, rows, cols].squeeze(1).permute(0, 3, 1, 2)


class ObsEncoder(nn.Module):
    """Normalized observation history -> one conditioning vector per batch element.

    Input: ``{key: (B, To, D)}`` for low-dim keys and ``{key: (B, To, 3, H, W)}`` float images.
    Each image key has its own ResNet (applied to every frame); features of all steps are
    concatenated with the low-dim state and passed through an MLP.
    """

    def __init__(
        self,
        lowdim_shapes: dict[str, int],
        image_keys: list[str],
        n_obs_steps: int,
        mlp_dims: tuple[int, ...] = (256, 256),
        image_feature_dim: int = 64,
        image_width: int = 64,
        crop_shape: tuple[int, int] | None = None,
        pretrained: bool = False,
    ):
        super().__init__()
        self.lowdim_keys = sorted(lowdim_shapes)
        self.image_keys = list(image_keys)
        self.crop_shape = tuple(crop_shape) if crop_shape else None
        self.images = nn.ModuleDict(
            {k: ResNet18GN(image_feature_dim, image_width, pretrained=pretrained) for k in self.image_keys}
        )
        per_step = sum(lowdim_shapes.values()) + image_feature_dim * len(self.image_keys)
        in_dim = per_step * n_obs_steps
        self.mlp = MLP((in_dim, *mlp_dims))
        self.out_dim = mlp_dims[-1] if mlp_dims else in_dim

    def forward(self, nobs: dict[str, torch.Tensor]) -> torch.Tensor:
        feats = [nobs[k] for k in self.lowdim_keys]
        for k in self.image_keys:
            img = nobs[k]
            b, t = img.shape[:2]
            flat = img.reshape(b * t, *img.shape[2:])
            if self.crop_shape:
                flat = crop_images(flat, self.crop_shape, random=self.training)
            feats.append(self.images[k](flat).view(b, t, -1))
        x = torch.cat(feats, dim=-1).flatten(1)
        return self.mlp(x)
