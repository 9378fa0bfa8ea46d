"""Function-preserving widening (Net2WiderNet) of a trained ``unet_mnv3s`` into ``unet_mnv3s15``.

Training the 1.5x-wide network from scratch takes hours on a CPU; widening starts it from a trained
0.9 M-parameter model with the *same* outputs, so fine-tuning spends its steps on what the extra
channels can add (Chen, Goodfellow & Shlens, "Net2Net", ICLR 2016).

Every channel space of the narrow network (the stem, each block's expanded and squeeze channels,
each residual stream) grows from ``C`` to ``C' >= C`` channels with a map ``g: [0, C') -> [0, C)``:
the first ``C`` channels are the originals and the others copy random originals. A layer that
*produces* a widened space copies the filters (and batch-norm statistics) of ``g(j)``; a dense layer
that *consumes* it divides each input weight by the number of copies of its channel, so sums are
unchanged; depthwise layers copy per channel. Blocks with a residual connection keep the input's map
for their output. Element-wise activations (ReLU, hardswish, hardsigmoid) keep copies equal, so the
wide network computes the same function in eval mode (tested to float tolerance). A small noise
(``noise``, relative to each tensor's spread) on the copies' incoming weights breaks their symmetry so
that fine-tuning can make them differ.

The decoder (``width`` 128 in both) is unchanged apart from the 1x1 convolutions that read the
encoder's taps.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torchvision.ops.misc import Conv2dNormActivation, SqueezeExcitation

from .errors import ConfigError

WIDENINGS = {("unet_mnv3s", "unet_mnv3s15")}


def _map(rng: np.random.Generator, old: int, new: int) -> np.ndarray:
    if new < old:
        raise ConfigError(f"cannot widen {old} channels to {new}")
    return np.concatenate([np.arange(old), rng.integers(0, old, new - old)]).astype(np.int64)


class _Widener:
    def __init__(self, rng: np.random.Generator, noise: float) -> None:
        self.rng, self.noise = rng, noise

    def _noisy(self, w: torch.Tensor, g_out: np.ndarray | None, n_old: int) -> torch.Tensor:
        """Add noise to the rows (output channels) that are copies (index >= n_old)."""
        if self.noise <= 0 or g_out is None or len(g_out) == n_old:
            return w
        scale = float(w.std()) * self.noise if w.numel() > 1 else 0.0
        gen = torch.Generator().manual_seed(int(self.rng.integers(2**31)))
        extra = torch.randn(w[n_old:].shape, generator=gen) * scale
        w = w.clone()
        w[n_old:] += extra
        return w

    def conv(self, src: nn.Conv2d, dst: nn.Conv2d, g_in: np.ndarray | None, g_out: np.ndarray | None) -> None:
        w = src.weight.detach()
        n_out_old = w.shape[0]
        if src.groups > 1:  # depthwise: one filter per channel, in and out share the map
            if src.groups != src.in_channels or src.groups != src.out_channels:
                raise ConfigError("grouped convolutions other than depthwise cannot be widened")
            g = g_out if g_out is not None else np.arange(n_out_old)
            new = w[torch.from_numpy(g)]
            new = self._noisy(new, g, n_out_old)
        else:
            if g_in is not None:
                cnt = np.bincount(g_in, minlength=w.shape[1]).astype(np.float32)
                w = w[:, torch.from_numpy(g_in)] / torch.from_numpy(cnt[g_in]).view(1, -1, 1, 1)
            if g_out is not None:
                w = self._noisy(w[torch.from_numpy(g_out)], g_out, n_out_old)
            new = w
        if tuple(new.shape) != tuple(dst.weight.shape):
            raise ConfigError(f"widening produced {tuple(new.shape)}, expected {tuple(dst.weight.shape)}")
        with torch.no_grad():
            dst.weight.copy_(new)
            if src.bias is not None:
                b = src.bias.detach()
                dst.bias.copy_(b[torch.from_numpy(g_out)] if g_out is not None else b)

    @staticmethod
    def bn(src: nn.BatchNorm2d, dst: nn.BatchNorm2d, g: np.ndarray | None) -> None:
        idx = torch.from_numpy(g) if g is not None else torch.arange(src.num_features)
        with torch.no_grad():
            for name in ("weight", "bias", "running_mean", "running_var"):
                getattr(dst, name).copy_(getattr(src, name).detach()[idx])
            dst.num_batches_tracked.copy_(src.num_batches_tracked)

    def cna(self, src: Conv2dNormActivation, dst: Conv2dNormActivation, g_in, g_out) -> None:  # noqa: ANN001
        self.conv(src[0], dst[0], g_in, g_out)
        self.bn(src[1], dst[1], g_out)

    def se(self, src: SqueezeExcitation, dst: SqueezeExcitation, g_exp: np.ndarray) -> None:
        g_sq = _map(self.rng, src.fc1.out_channels, dst.fc1.out_channels)
        self.conv(src.fc1, dst.fc1, g_exp, g_sq)
        self.conv(src.fc2, dst.fc2, g_sq, g_exp)

    def inverted_residual(self, src: nn.Module, dst: nn.Module, g_in: np.ndarray) -> np.ndarray:
        layers_s, layers_d = list(src.block), list(dst.block)
        if len(layers_s) != len(layers_d):
            raise ConfigError("narrow and wide blocks differ in structure")
        g = g_in
        for k, (ls, ld) in enumerate(zip(layers_s, layers_d, strict=True)):
            last = k == len(layers_s) - 1
            if isinstance(ls, SqueezeExcitation):
                self.se(ls, ld, g)
                continue
            conv = ls[0]
            if conv.groups > 1:  # depthwise keeps the map
                self.cna(ls, ld, g, g)
                continue
            if last and src.use_res_connect:
                g_out = g_in
            else:
                g_out = _map(self.rng, conv.out_channels, ld[0].out_channels)
            self.cna(ls, ld, g, g_out)
            g = g_out
        return g


def widen_model(narrow: nn.Module, wide: nn.Module, *, seed: int = 0, noise: float = 0.01) -> nn.Module:
    """Copy the trained ``narrow`` :class:`~poppyscan.network.MobileUNet` (``unet_mnv3s``) into the
    freshly built ``wide`` one (``unet_mnv3s15``) so that both compute the same function (up to
    ``noise`` on the copied channels' incoming weights; ``noise=0`` preserves it exactly). Returns
    ``wide``."""
    rng = np.random.default_rng(seed)
    wd = _Widener(rng, noise)
    if len(narrow.stages) != len(wide.stages) or narrow.taps != wide.taps:
        raise ConfigError("the two networks differ in depth; only unet_mnv3s -> unet_mnv3s15 widens")
    maps: list[np.ndarray] = []
    g: np.ndarray | None = None
    for i, (s, d) in enumerate(zip(narrow.stages, wide.stages, strict=True)):
        if i == 0:  # stem: RGB in (unchanged), widened out
            g = _map(rng, s[0].out_channels, d[0].out_channels)
            wd.cna(s, d, None, g)
        else:
            g = wd.inverted_residual(s, d, g)
        maps.append(g)
    taps = [maps[i] for i in narrow.taps]
    wd.cna(narrow.context, wide.context, taps[-1], None)
    wd.conv(narrow.gate[1], wide.gate[1], taps[-1], None)
    for up_s, up_d, g_skip in zip(narrow.ups, wide.ups, reversed(taps[:-1]), strict=True):
        wd.cna(up_s.proj, up_d.proj, g_skip, None)
        up_d.refine.load_state_dict(up_s.refine.state_dict())
    wide.classifier.load_state_dict(narrow.classifier.state_dict())
    return wide


def widen(
    narrow: nn.Module, from_arch: str, to_arch: str, *, seed: int = 0, noise: float = 0.01
) -> nn.Module:
    """Build ``to_arch`` and initialise it from ``narrow`` (of ``from_arch``); see the module doc."""
    from .network import build_model, canonical_arch

    pair = (canonical_arch(from_arch), canonical_arch(to_arch))
    if pair not in WIDENINGS:
        raise ConfigError(
            f"cannot widen {pair[0]} into {pair[1]}; supported: "
            + ", ".join(f"{a} -> {b}" for a, b in sorted(WIDENINGS))
        )
    n_cls = narrow.classifier.out_channels
    wide = build_model(pair[1], num_classes=n_cls, pretrained=False)
    return widen_model(narrow, wide, seed=seed, noise=noise)
