"""Network builders: small torchvision-based segmenters for background/poppy.

Every architecture maps a float image batch ``(N, 3, H, W)`` (already normalised) to class logits
``(N, C, H, W)`` at the input resolution. ``H`` and ``W`` must be multiples of :data:`STRIDE`;
:func:`poppyscan.bundle.make_predictor` pads for callers.

Architectures (``arch`` in ``bundle.json``):

- ``unet_mnv3s`` (default): MobileNetV3-Small features to stride 32 (without the final 576-channel
  conv), an LRASPP-style gated context head, and a light U-Net decoder with skips at stride 16, 8 and 4,
  predicting at stride 4 (bilinear to full size). ~0.9 M parameters; measured ~11-12 Mpx/s at 512 px
  tiles in ONNX Runtime on 2 CPU cores (target >= 8), keeping enough resolution for 2 m² plots
  (a 2 m² plot is ~28 px across at 5 cm/px, i.e. 7 output cells).
- ``unet_mnv3s15``: the same network on MobileNetV3-Small at width multiplier 1.5 (2.0 M parameters,
  about 2x the capacity at ~0.8x the speed; trained once, from 0.4.1 by :mod:`poppyscan.widen`, as
  stage 9, not shipped: see the model card). No ImageNet weights exist for that width, so
  ``pretrained`` is refused.
- ``unet_mnv3l``: the same decoder on MobileNetV3-Large features (more capacity, ~1.7x slower).
- ``lraspp_mnv3l``: torchvision's LRASPP on MobileNetV3-Large (stride 8 output), for reference.

The bundle format, loading, saving, ONNX export and the predictor live in :mod:`poppyscan.bundle`;
:mod:`poppyscan.model` re-exports both modules' public names (the documented entry point).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from .archs import ARCHS, STRIDE, canonical_arch  # noqa: F401 - re-exported for callers
from .errors import ConfigError, DependencyError

if TYPE_CHECKING:
    from .bundle_meta import BundleMeta



def _conv_bn_act(cin: int, cout: int, k: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, padding=k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class _SepConv(nn.Sequential):
    """Depthwise 3x3 + pointwise 1x1, each with BN + ReLU."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(_conv_bn_act(cin, cin, 3, groups=cin), _conv_bn_act(cin, cout, 1))


class _UpBlock(nn.Module):
    """Upsample x2, add a projected skip, refine with a separable conv."""

    def __init__(self, cin: int, cskip: int, cout: int) -> None:
        super().__init__()
        self.proj = _conv_bn_act(cskip, cin, 1)
        self.refine = _SepConv(cin, cout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.refine(x + self.proj(skip))


class MobileUNet(nn.Module):
    """MobileNetV3 encoder + gated context head on the deepest tap + U-Net decoder over the other taps.

    Parameters
    ----------
    stages
        Encoder modules applied in order; the output of each is a candidate skip.
    taps
        Indices into ``stages`` whose outputs are used, shallowest first; the decoder predicts at the
        stride of the first tap.
    tap_channels
        Channels of the tapped outputs, same order.
    num_classes
        Output classes.
    width
        Decoder channels at the deepest tap (halved at each upsampling, minimum 16).
    """

    def __init__(
        self,
        stages: nn.ModuleList,
        taps: tuple[int, ...],
        tap_channels: tuple[int, ...],
        num_classes: int,
        width: int = 64,
    ) -> None:
        super().__init__()
        self.stages = stages
        self.taps = taps
        c16 = tap_channels[-1]
        self.context = _conv_bn_act(c16, width, 1)
        self.gate = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(c16, width, 1), nn.Sigmoid())
        widths = [max(width // 2**i, 16) for i in range(len(taps))]
        self.ups = nn.ModuleList(
            _UpBlock(widths[i], tap_channels[-2 - i], widths[i + 1]) for i in range(len(taps) - 1)
        )
        self.classifier = nn.Conv2d(widths[len(taps) - 1], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(self.low_res(x), size=x.shape[-2:], mode="bilinear", align_corners=False)

    def low_res(self, x: torch.Tensor) -> torch.Tensor:
        """Logits at the decoder's output stride (4), before the bilinear upsampling to input size."""
        feats = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in self.taps:
                feats.append(x)
        deep = feats[-1]
        y = self.context(deep) * self.gate(deep)
        for up, skip in zip(self.ups, reversed(feats[:-1]), strict=True):
            y = up(y, skip)
        return self.classifier(y)


class _LRASPPWrapper(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)["out"]

    def low_res(self, x: torch.Tensor) -> torch.Tensor:
        """Logits at the head's output stride (8), before torchvision's upsampling to input size."""
        return self.net.classifier(self.net.backbone(x))


def _local_weights(weights) -> None:  # noqa: ANN001
    """Raise DependencyError unless ``weights`` are already in the local torch cache (never download)."""
    url = weights.url
    cache = Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]
    if not cache.is_file():
        raise DependencyError(
            f"pretrained backbone weights {weights} are not in the local torch cache ({cache}); "
            "poppyscan never downloads at run time: copy the file there from a machine with network "
            "access, or train with pretrained: false"
        )


def build_model(arch: str = "unet_mnv3s", *, num_classes: int = 2, pretrained: bool = False) -> nn.Module:
    """Build a segmentation network returning logits ``(N, num_classes, H, W)``.

    Parameters
    ----------
    arch
        One of :data:`ARCHS` (or a long alias such as ``lraspp_mobilenet_v3_large``).
    num_classes
        Number of classes (background, poppy[, confuser]).
    pretrained
        Initialise the backbone with ImageNet weights from the local torch cache; raises
        :class:`~poppyscan.errors.DependencyError` if they are not there (nothing is downloaded).
    """
    import torchvision
    from torchvision.models import MobileNet_V3_Large_Weights, MobileNet_V3_Small_Weights

    arch = canonical_arch(arch)
    if arch in ("unet_mnv3s", "unet_mnv3s15"):
        width_mult = 1.5 if arch == "unet_mnv3s15" else 1.0
        if pretrained and width_mult != 1.0:
            raise ConfigError(
                f"no ImageNet weights exist for {arch} (MobileNetV3-Small at width {width_mult}); "
                "set train.pretrained: false"
            )
        weights = MobileNet_V3_Small_Weights.IMAGENET1K_V1 if pretrained else None
        if weights is not None:
            _local_weights(weights)
        feats = torchvision.models.mobilenet_v3_small(weights=weights, width_mult=width_mult).features
        # stride: 0->2, 1->4, 2-3->8, 4-8->16, 9-11->32 (12 = the 576-channel head conv, unused);
        # channels at width 1.5 are torchvision's (rounded to multiples of 8)
        return MobileUNet(
            nn.ModuleList(feats[:12]),
            taps=(1, 3, 8, 11),
            tap_channels=(16, 24, 48, 96) if width_mult == 1.0 else (24, 40, 72, 144),
            num_classes=num_classes,
            width=128,
        )
    if arch == "unet_mnv3l":
        weights = MobileNet_V3_Large_Weights.IMAGENET1K_V1 if pretrained else None
        if weights is not None:
            _local_weights(weights)
        feats = torchvision.models.mobilenet_v3_large(weights=weights).features
        # stride: 0-1->2, 2-3->4, 4-6->8, 7-12->16, 13-15->32 (16 = the 960-channel head conv, unused)
        return MobileUNet(
            nn.ModuleList(feats[:16]),
            taps=(3, 6, 12, 15),
            tap_channels=(24, 40, 112, 160),
            num_classes=num_classes,
            width=128,
        )
    # lraspp_mnv3l
    weights = MobileNet_V3_Large_Weights.IMAGENET1K_V1 if pretrained else None
    if weights is not None:
        _local_weights(weights)
    net = torchvision.models.segmentation.lraspp_mobilenet_v3_large(
        weights=None, weights_backbone=weights, num_classes=num_classes
    )
    return _LRASPPWrapper(net)


class ExportModule(nn.Module):
    """``uint8 (N, H, W, 3)`` RGB -> ``float32 (N, H, W)`` poppy probability (normalisation baked in)."""

    def __init__(self, net: nn.Module, meta: BundleMeta) -> None:
        super().__init__()
        self.net = net
        self.poppy = meta.poppy_class
        self.two_classes = len(meta.classes) == 2
        self.other = 1 - self.poppy if self.two_classes else 0
        self.register_buffer("mean", torch.tensor(meta.mean, dtype=torch.float32).view(1, 3, 1, 1) * 255.0)
        self.register_buffer("std", torch.tensor(meta.std, dtype=torch.float32).view(1, 3, 1, 1) * 255.0)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = image.permute(0, 3, 1, 2).float()
        x = (x - self.mean) / self.std
        low = getattr(self.net, "low_res", None)
        if self.two_classes and low is not None:
            # softmax(l)[poppy] == sigmoid(l_poppy - l_other), and bilinear upsampling is linear, so
            # upsampling the one-channel margin at low resolution gives the same probabilities as the
            # softmax of the upsampled logits (measured max difference 1.3e-7) at 2.4x the speed in
            # ONNX Runtime on CPU: its full-resolution two-channel Resize + Softmax cost ~55 % of the pass
            logits = low(x)
            margin = logits[:, self.poppy:self.poppy + 1] - logits[:, self.other:self.other + 1]
            margin = F.interpolate(margin, size=image.shape[1:3], mode="bilinear", align_corners=False)
            return torch.sigmoid(margin)[:, 0]
        return torch.softmax(self.net(x), dim=1)[:, self.poppy]
