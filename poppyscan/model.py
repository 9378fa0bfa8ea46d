"""The model API (see docs/INTERFACES.md): networks from :mod:`poppyscan.network`, bundles and the
predictor from :mod:`poppyscan.bundle`.

>>> from poppyscan.model import load_bundle, make_predictor, build_model, save_bundle, BundleMeta
"""

from __future__ import annotations

from .archs import ARCHS, STRIDE, canonical_arch
from .bundle import (
    FORMAT,
    FORMAT_VERSION,
    Bundle,
    BundleMeta,
    Predictor,
    export_onnx,
    load_bundle,
    make_predictor,
    new_meta,
    read_meta,
    reexport_onnx,
    save_bundle,
    update_meta,
)


def build_model(*args, **kwargs):  # noqa: ANN002, ANN003, ANN201
    """:func:`poppyscan.network.build_model`, imported on first use (it needs torch)."""
    from .network import build_model as _build

    return _build(*args, **kwargs)


__all__ = [
    "ARCHS",
    "FORMAT",
    "FORMAT_VERSION",
    "STRIDE",
    "Bundle",
    "BundleMeta",
    "Predictor",
    "build_model",
    "canonical_arch",
    "export_onnx",
    "load_bundle",
    "make_predictor",
    "new_meta",
    "read_meta",
    "reexport_onnx",
    "save_bundle",
    "update_meta",
]
