"""The model bundle: a directory with ``bundle.json``, ``model.pt`` and ``model.onnx`` (docs/INTERFACES.md).

One format for every entry point (detect, train, evaluate, export-onnx). The ONNX graph takes the raw
``uint8 (N, H, W, 3)`` RGB batch and returns ``float32 (N, H, W)`` poppy probability: casting,
normalisation and softmax are baked in, so callers pass image bytes and nothing else.

This module gathers the bundle's public names from where they live:

- :mod:`poppyscan.bundle_meta`: the metadata in ``bundle.json`` (:class:`BundleMeta`, :func:`new_meta`);
- :mod:`poppyscan.bundle_io`: the directory on disk (save, load, check, update metadata, ONNX export);
- :mod:`poppyscan.bundle_rules`: the GSD a mosaic runs at and the plot decision;
- :mod:`poppyscan.predictor`: the predictor (ONNX Runtime on CPU, torch on CUDA).
"""

from __future__ import annotations

from .bundle_io import (
    ONNX_OPSET,
    Bundle,
    check_bundle_target,
    export_onnx,
    load_bundle,
    load_state,
    read_meta,
    reexport_onnx,
    save_bundle,
    update_meta,
)
from .bundle_meta import FORMAT, FORMAT_VERSION, BundleMeta, new_meta
from .bundle_rules import check_min_gsd, gsd_floor_m, plot_decision, run_gsd_m
from .predictor import Predictor, cuda_available, make_predictor

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "ONNX_OPSET",
    "Bundle",
    "BundleMeta",
    "Predictor",
    "check_bundle_target",
    "check_min_gsd",
    "cuda_available",
    "export_onnx",
    "gsd_floor_m",
    "load_bundle",
    "load_state",
    "make_predictor",
    "new_meta",
    "plot_decision",
    "read_meta",
    "reexport_onnx",
    "run_gsd_m",
    "save_bundle",
    "update_meta",
]


def __getattr__(name: str):  # noqa: ANN202 - lazy, torch-backed names kept importable from here
    if name == "ExportModule":
        from .network import ExportModule

        return ExportModule
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
