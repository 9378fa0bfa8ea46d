"""The predictor: a bundle as a callable from a ``uint8 (N, H, W, 3)`` RGB batch to ``float32 (N, H, W)``
poppy probability, run by ONNX Runtime on the CPU or by torch on a CUDA GPU (:func:`make_predictor`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .archs import STRIDE
from .bundle_io import Bundle, _check_onnx, load_bundle
from .errors import BundleError, DependencyError, InputError


class Predictor:
    """Callable ``uint8 (N, H, W, 3)`` -> ``float32 (N, H, W)`` poppy probability.

    ``device`` is ``"cpu"`` (ONNX Runtime) or ``"cuda"`` (torch). Any ``H``/``W`` is accepted: inputs are
    reflect-padded to a multiple of the network stride and the output is cropped back.
    """

    def __init__(self, bundle: Bundle, device: str, threads: int) -> None:
        self.meta = bundle.meta
        self.device = device
        self.path = bundle.path  # the bundle directory: detect reads a plot scorer from it
        self._session = None
        self._module = None
        if device == "cpu":
            self._session = _ort_session(bundle, threads)
        else:
            if bundle.model is None:
                raise BundleError(
                    "the bundle was loaded without its torch network (with_torch=False); "
                    "load it with load_bundle(path) to predict on CUDA"
                )
            from .network import ExportModule

            self._module = ExportModule(bundle.model, bundle.meta).eval().to("cuda")

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        if (
            not isinstance(batch, np.ndarray)
            or batch.dtype != np.uint8
            or batch.ndim != 4
            or batch.shape[-1] != 3
        ):
            got = f"{batch.dtype} {batch.shape}" if isinstance(batch, np.ndarray) else type(batch).__name__
            raise InputError(f"predictor input must be a uint8 array (N, H, W, 3) RGB, got {got}")
        n, h, w, _ = batch.shape
        if n == 0:
            return np.zeros((0, h, w), np.float32)
        ph, pw = -h % STRIDE, -w % STRIDE
        x = batch
        if ph or pw:
            mode = "reflect" if (h > ph and w > pw) else "edge"
            x = np.pad(batch, ((0, 0), (0, ph), (0, pw), (0, 0)), mode=mode)
        x = np.ascontiguousarray(x)
        if self._session is not None:
            prob = self._session.run(["prob"], {"image": x})[0]
        else:
            import torch

            with torch.inference_mode():
                prob = self._module(torch.from_numpy(x).to("cuda", non_blocking=True)).float().cpu().numpy()
        return np.ascontiguousarray(prob[:, :h, :w], dtype=np.float32)


def _ort_session(bundle: Bundle, threads: int):  # noqa: ANN202
    import onnxruntime as ort

    if bundle.path is None:
        raise BundleError("bundle has no directory; save it with save_bundle before predicting on CPU")
    onnx_file = bundle.path / bundle.meta.onnx_file
    _check_onnx(onnx_file)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads)  # 0 = ONNX Runtime's default (all physical cores)
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(str(onnx_file), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001
        raise BundleError(
            f"ONNX model '{onnx_file}' cannot be loaded by ONNX Runtime "
            f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); "
            f"re-export it with `poppyscan export-onnx {bundle.path}`"
        ) from None


def cuda_available() -> bool:
    """True when torch sees a CUDA GPU. Without an NVIDIA driver on the machine, answer without importing
    torch (about 650 MB and 1.5 s that CPU inference through ONNX Runtime does not need)."""
    import shutil as _shutil

    if not (os.path.exists("/proc/driver/nvidia/version") or _shutil.which("nvidia-smi")):
        return False
    import torch

    return torch.cuda.is_available()


def make_predictor(bundle: Bundle | str | Path, device: str = "auto", threads: int = 0) -> Predictor:
    """Return a :class:`Predictor` for ``bundle`` (a :class:`Bundle` or a bundle directory).

    ``device``: ``"auto"`` (CUDA when torch sees a GPU, else CPU), ``"cpu"`` (ONNX Runtime with
    ``threads`` intra-op threads, 0 = all cores) or ``"cuda"`` (torch; raises
    :class:`~poppyscan.errors.DependencyError` when no GPU is available).
    """
    if not isinstance(bundle, Bundle):
        bundle = load_bundle(bundle)
    if device not in ("auto", "cpu", "cuda"):
        raise InputError(f"'device' must be auto, cpu or cuda, got {device!r}")
    if threads < 0:
        raise InputError(f"'threads' must be >= 0 (0 = all cores), got {threads}")
    cuda = device != "cpu" and cuda_available()
    if device == "auto":
        device = "cuda" if cuda else "cpu"
    elif device == "cuda" and not cuda:
        raise DependencyError("device 'cuda' was asked for but torch sees no CUDA GPU; use --device cpu")
    return Predictor(bundle, device, threads)
