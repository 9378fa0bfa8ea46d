"""Architecture names and the network stride, without importing torch (the CPU path runs ONNX Runtime)."""

from __future__ import annotations

from .errors import ConfigError

STRIDE = 32  # inputs are padded to a multiple of this

ARCHS = ("unet_mnv3s", "unet_mnv3s15", "unet_mnv3l", "lraspp_mnv3l")
_ALIASES = {
    "lraspp_mobilenet_v3_large": "lraspp_mnv3l",
    "unet_mobilenet_v3_small": "unet_mnv3s",
    "unet_mobilenet_v3_small_x1.5": "unet_mnv3s15",
    "unet_mobilenet_v3_large": "unet_mnv3l",
}


def canonical_arch(arch: str) -> str:
    """Return the canonical architecture name, accepting the long aliases."""
    arch = _ALIASES.get(arch, arch)
    if arch not in ARCHS:
        raise ConfigError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHS)}")
    return arch
