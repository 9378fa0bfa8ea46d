"""The model API (see docs/INTERFACES.md): networks from :mod:`poppyscan.network`, bundles and the
predictor from :mod:`poppyscan.bundle`.

>>> from poppyscan.model import load_bundle, make_predictor, build_model, save_bundle, BundleMeta
"""

from __future__ import annotations

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
from .network import ARCHS, STRIDE, build_model, canonical_arch

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
