"""The model bundle: a directory with ``bundle.json``, ``model.pt`` and ``model.onnx`` (docs/INTERFACES.md).

One format for every entry point (detect, train, evaluate, export-onnx). The ONNX graph takes the raw
``uint8 (N, H, W, 3)`` RGB batch and returns ``float32 (N, H, W)`` poppy probability: casting,
normalisation and softmax are baked in, so callers pass image bytes and nothing else.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import logging
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .archs import STRIDE, canonical_arch
from .errors import BundleError, DependencyError, InputError, OutputExistsError

if TYPE_CHECKING:
    from torch import nn

log = logging.getLogger(__name__)

FORMAT = "poppyscan-bundle"
FORMAT_VERSION = 1
ONNX_OPSET = 17
_REQUIRED = (
    "format",
    "format_version",
    "name",
    "version",
    "arch",
    "classes",
    "poppy_class",
    "bands",
    "mean",
    "std",
    "gsd_m",
    "tile_size",
    "overlap",
    "threshold",
)


@dataclass(frozen=True)
class BundleMeta:
    """The metadata in ``bundle.json``. Validated on construction (raises :class:`BundleError`)."""

    name: str
    version: str
    arch: str
    classes: tuple[str, ...] = ("background", "poppy")
    poppy_class: int = 1
    bands: tuple[str, ...] = ("red", "green", "blue")
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    gsd_m: float = 0.05
    tile_size: int = 512
    overlap: float = 0.25
    threshold: float = 0.5
    min_prob_mean: float = 0.0  # plot decision: a thresholded region is a plot if its mean probability
    #                             reaches this (0 = every region); outlines come from ``threshold``
    min_gsd_m: float | None = None  # mosaics finer than ``gsd_m`` run at max(their GSD, this); None = gsd_m
    #                                 (every mosaic resampled to gsd_m). See :func:`run_gsd_m`.
    plot_scorer: str | None = None  # file in the bundle with the plot scorer (poppyscan.plot_scorer); when
    #                                 set, a region is a plot if its score reaches plot_scorer_cut and
    #                                 min_prob_mean is not used. None = the min_prob_mean rule
    plot_scorer_cut: float = 0.5
    training: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    metrics: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    created: str = ""
    torch_weights: str = "model.pt"
    onnx_file: str = "model.onnx"
    format: str = FORMAT
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        def bad(name: str, msg: str) -> BundleError:
            return BundleError(f"bundle field '{name}' {msg}")

        if self.format != FORMAT:
            raise bad("format", f"must be {FORMAT!r}, got {self.format!r}")
        if self.format_version != FORMAT_VERSION:
            raise bad(
                "format_version",
                f"is {self.format_version!r} but this poppyscan reads version "
                f"{FORMAT_VERSION}; re-export the bundle with a matching poppyscan version",
            )
        try:
            canonical_arch(self.arch)
        except ValueError as exc:
            raise bad("arch", str(exc)) from None
        if len(self.classes) < 2 or not all(isinstance(c, str) for c in self.classes):
            raise bad("classes", f"must list at least 2 class names, got {list(self.classes)!r}")
        if not (isinstance(self.poppy_class, int) and 0 <= self.poppy_class < len(self.classes)):
            raise bad(
                "poppy_class",
                f"must index into classes (0..{len(self.classes) - 1}), got {self.poppy_class!r}",
            )
        if tuple(self.bands) != ("red", "green", "blue"):
            raise bad(
                "bands", f"must be ['red', 'green', 'blue'] (RGB models only), got {list(self.bands)!r}"
            )
        for name in ("mean", "std"):
            vals = getattr(self, name)
            if len(vals) != 3 or not all(isinstance(v, (int, float)) for v in vals):
                raise bad(name, f"must be 3 numbers (one per band, 0-1 scale), got {list(vals)!r}")
        if not all(v > 0 for v in self.std):
            raise bad("std", f"must be positive, got {list(self.std)!r}")
        if not (isinstance(self.gsd_m, (int, float)) and 0.005 <= self.gsd_m <= 0.5):
            raise bad("gsd_m", f"must be in [0.005, 0.5] m/px, got {self.gsd_m!r}")
        if not (
            isinstance(self.tile_size, int) and 64 <= self.tile_size <= 4096 and self.tile_size % STRIDE == 0
        ):
            raise bad("tile_size", f"must be a multiple of {STRIDE} in [64, 4096], got {self.tile_size!r}")
        if not (isinstance(self.overlap, (int, float)) and 0 <= self.overlap < 0.5):
            raise bad("overlap", f"must be in [0, 0.5), got {self.overlap!r}")
        if not (isinstance(self.threshold, (int, float)) and 0 < self.threshold < 1):
            raise bad("threshold", f"must be in (0, 1), got {self.threshold!r}")
        if not (isinstance(self.min_prob_mean, (int, float)) and 0 <= self.min_prob_mean < 1):
            raise bad("min_prob_mean", f"must be in [0, 1), got {self.min_prob_mean!r}")
        if self.min_gsd_m is not None and not (
            isinstance(self.min_gsd_m, (int, float)) and 0.5 * self.gsd_m <= self.min_gsd_m <= self.gsd_m
        ):
            raise bad("min_gsd_m", f"must be null or in [gsd_m / 2, gsd_m] = [{0.5 * self.gsd_m:g}, "
                      f"{self.gsd_m:g}] m/px, got {self.min_gsd_m!r}")

        if self.plot_scorer is not None and not (
            isinstance(self.plot_scorer, str) and self.plot_scorer.endswith(".json")
            and Path(self.plot_scorer).name == self.plot_scorer and not self.plot_scorer.startswith(".")
        ):
            raise bad("plot_scorer", f"must be null or the name of a .json file in the bundle directory, "
                      f"got {self.plot_scorer!r}")
        if not (isinstance(self.plot_scorer_cut, (int, float)) and 0 < self.plot_scorer_cut < 1):
            raise bad("plot_scorer_cut", f"must be in (0, 1), got {self.plot_scorer_cut!r}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for k in ("classes", "bands", "mean", "std"):
            d[k] = list(d[k])
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BundleMeta:
        """Build from parsed ``bundle.json``; missing required keys raise :class:`BundleError` naming them."""
        if not isinstance(data, dict):
            raise BundleError("bundle metadata must be a JSON object")
        missing = [k for k in _REQUIRED if k not in data]
        if missing:
            raise BundleError(f"bundle metadata is missing key(s) {', '.join(missing)}")
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        for k in ("classes", "bands", "mean", "std"):
            if isinstance(kwargs.get(k), list):
                kwargs[k] = tuple(kwargs[k])
        try:
            return cls(**kwargs)
        except TypeError as exc:
            raise BundleError(f"bundle metadata is malformed ({exc})") from None

    def with_updates(self, **changes: Any) -> BundleMeta:
        return dataclasses.replace(self, **changes)


@dataclass
class Bundle:
    """A loaded bundle: metadata, the torch network (CPU, eval mode; ``None`` when loaded without it)
    and the bundle directory."""

    meta: BundleMeta
    model: nn.Module | None
    path: Path | None = None

    @property
    def onnx_path(self) -> Path | None:
        return None if self.path is None else self.path / self.meta.onnx_file


def gsd_floor_m(meta: Any, min_gsd_m: float | None = None) -> float:
    """The finest GSD (m/px) any mosaic is read at: ``min_gsd_m`` (an override), else the bundle's
    ``min_gsd_m``, else its ``gsd_m`` (every mosaic resampled to it).

    >>> gsd_floor_m(new_meta(gsd_m=0.04)), gsd_floor_m(new_meta(gsd_m=0.04, min_gsd_m=0.035), 0.03)
    (0.04, 0.03)
    """
    lo = min_gsd_m if min_gsd_m is not None else getattr(meta, "min_gsd_m", None)
    return float(meta.gsd_m) if lo is None else float(lo)


def run_gsd_m(meta: Any, mosaic_gsd_m: float, min_gsd_m: float | None = None) -> float:
    """The GSD (m/px) a mosaic of ``mosaic_gsd_m`` is read and predicted at.

    Coarser mosaics are resampled to the bundle's ``gsd_m``. A finer mosaic runs at its own GSD down to
    ``min_gsd_m`` (the argument, else the bundle's field, else ``gsd_m``): a model trained with scale
    jitter sees plants up to that much larger than at ``gsd_m``, so detail a fine flight recorded is not
    thrown away by downsampling. One rule for ``detect``, the whole-scene predictor and calibration.

    >>> m = new_meta(gsd_m=0.04, min_gsd_m=0.035)
    >>> run_gsd_m(m, 0.06), run_gsd_m(m, 0.037), run_gsd_m(m, 0.02), run_gsd_m(m, 0.02, 0.04)
    (0.04, 0.037, 0.035, 0.04)
    """
    return min(float(meta.gsd_m), max(gsd_floor_m(meta, min_gsd_m), float(mosaic_gsd_m)))


def check_min_gsd(meta: Any, min_gsd_m: float | None, option: str = "detect.min_gsd_m") -> None:
    """Refuse (:class:`~poppyscan.errors.ConfigError`) a ``min_gsd_m`` override outside
    ``[gsd_m / 2, gsd_m]`` of the model ``meta``: finer than half the training GSD, plants are larger
    than any scale jitter showed the network."""
    from .errors import ConfigError

    g = float(meta.gsd_m)
    if min_gsd_m is not None and not 0.5 * g - 1e-12 <= min_gsd_m <= g + 1e-12:
        from .config import option_name

        name = f"'{option}'" if option.startswith("-") else f"'{option_name(option)}' (config '{option}')"
        raise ConfigError(f"{name} must be in [{0.5 * g:g}, {g:g}] m/px for this model "
                          f"(trained at {g:g} m/px), got {min_gsd_m:g}")


def plot_decision(prob_mean: Any, min_prob_mean: float, scores: Any = None,
                  min_score: float | None = None) -> np.ndarray:
    """The plot decision: True where a thresholded region's mean probability reaches ``min_prob_mean``
    (the bundle field; to within float rounding) and, with a plot scorer (``min_score`` given), its score
    reaches ``min_score``, i.e. the region is reported as a plot. One rule for ``detect``, the
    whole-scene predictor and the calibration grid (:func:`poppyscan.plot_scorer.decision_bounds` says
    which bounds are in effect).

    >>> plot_decision([0.84, 0.85, 0.9], 0.85).tolist()
    [False, True, True]
    >>> plot_decision([0.84, 0.85, 0.9], 0.0, [0.2, 0.4, 0.3], 0.3).tolist()
    [False, True, True]
    """
    keep = np.asarray(prob_mean, dtype=float) >= min_prob_mean - 1e-9
    if min_score is not None:
        keep &= np.asarray(scores, dtype=float) >= min_score - 1e-9
    return keep


def new_meta(
    *, arch: str = "unet_mnv3s", name: str = "poppyscan-untrained", version: str = "0.0.0", **kwargs: Any
) -> BundleMeta:
    """Metadata with defaults, ``created`` set to now (UTC)."""
    kwargs.setdefault("created", _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"))
    return BundleMeta(name=name, version=version, arch=canonical_arch(arch), **kwargs)


def export_onnx(model: nn.Module, meta: BundleMeta, path: str | Path) -> Path:
    """Write the ONNX export (dynamic batch/H/W axes, bundle metadata in ``metadata_props``)."""
    import onnx
    import torch

    from .network import ExportModule

    path = Path(path)
    module = ExportModule(model, meta).eval().cpu()
    dummy = torch.zeros(1, meta.tile_size, meta.tile_size, 3, dtype=torch.uint8)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (dummy,),
            str(path),
            input_names=["image"],
            output_names=["prob"],
            dynamic_axes={
                "image": {0: "batch", 1: "height", 2: "width"},
                "prob": {0: "batch", 1: "height", 2: "width"},
            },
            opset_version=ONNX_OPSET,
            dynamo=False,
        )
    proto = onnx.load(str(path))
    props = {
        "poppyscan_bundle": json.dumps(meta.to_dict(), ensure_ascii=False),
        "name": meta.name,
        "version": meta.version,
        "gsd_m": str(meta.gsd_m),
        "threshold": str(meta.threshold),
    }
    del proto.metadata_props[:]
    for k, v in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    proto.producer_name = "poppyscan"
    onnx.save(proto, str(path))
    return path


def check_bundle_target(path: str | Path, overwrite: bool, *, option: str = "--bundle-out") -> Path:
    """Refuse a place to save a bundle where saving would lose something; return it as a Path.

    Parameters
    ----------
    path
        Where the bundle directory is to be written.
    overwrite
        Whether an existing model bundle there may be replaced.
    option
        The command-line option that named ``path``, for the message.

    Raises
    ------
    OutputExistsError
        When ``path`` exists and ``overwrite`` is false; and, even with ``overwrite``, when it is a file or a
        non-empty directory that is not a model bundle (no ``bundle.json``), which saving would delete.
    """
    path = Path(path)
    if not (path.exists() or path.is_symlink()):
        return path
    if not overwrite:
        raise OutputExistsError(
            f"bundle '{path}' already exists; pass --overwrite to replace it or choose another {option}"
        )
    if not path.is_dir():
        raise OutputExistsError(
            f"'{path}' is a file, not a model bundle directory; --overwrite replaces only a bundle: "
            f"choose another {option} or move it away"
        )
    if not (path / "bundle.json").is_file() and any(path.iterdir()):
        raise OutputExistsError(
            f"'{path}' is a non-empty directory that is not a model bundle (no bundle.json); --overwrite "
            f"replaces only a bundle: choose another {option} or move its files away"
        )
    return path


def save_bundle(
    path: str | Path, model: nn.Module, meta: BundleMeta, *, overwrite: bool = False, onnx: bool = True,
    plot_scorer: Any = None,
) -> Bundle:
    """Write a bundle directory atomically (``bundle.json``, ``model.pt``, ``model.onnx``; the
    :class:`~poppyscan.plot_scorer.PlotScorer` ``plot_scorer`` when ``meta.plot_scorer`` names one) and
    return it.

    Raises :class:`~poppyscan.errors.OutputExistsError` if ``path`` exists and ``overwrite`` is false, and
    even with ``overwrite`` when ``path`` is anything but a model bundle or an empty directory
    (:func:`check_bundle_target`).
    """
    if bool(meta.plot_scorer) != (plot_scorer is not None):
        raise ValueError("meta.plot_scorer and the plot_scorer argument must be given together")
    path = check_bundle_target(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval().cpu()
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent))
    tmp.chmod(0o755)
    try:
        import torch

        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        torch.save(state, tmp / meta.torch_weights)
        if onnx:
            export_onnx(model, meta, tmp / meta.onnx_file)
        if plot_scorer is not None:
            plot_scorer.save(tmp / meta.plot_scorer)
        (tmp / "bundle.json").write_text(
            json.dumps(meta.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return Bundle(meta=meta, model=model, path=path)


def read_meta(path: str | Path) -> BundleMeta:
    """Read and validate ``bundle.json`` of the bundle directory ``path``."""
    path = Path(path)
    if not path.is_dir():
        what = "is not a directory" if path.exists() else "does not exist"
        raise BundleError(
            f"model bundle '{path}' {what}; pass a bundle directory (bundle.json + model.pt + model.onnx)"
        )
    meta_file = path / "bundle.json"
    if not meta_file.is_file():
        raise BundleError(f"model bundle '{path}' has no bundle.json; it is not a poppyscan bundle")
    try:
        data = json.loads(meta_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"'{meta_file}' is not valid JSON ({exc}); the bundle is corrupt") from None
    try:
        return BundleMeta.from_dict(data)
    except BundleError as exc:
        raise BundleError(f"'{meta_file}': {exc}") from None


def load_state(model: nn.Module, weights_file: Path) -> None:
    """Load a ``state_dict`` file into ``model``, raising :class:`BundleError` on any mismatch."""
    if not weights_file.is_file():
        raise BundleError(f"model weights '{weights_file}' are missing; the bundle is incomplete")
    try:
        import torch

        state = torch.load(weights_file, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for corrupt files
        raise BundleError(
            f"model weights '{weights_file}' are unreadable ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}); the bundle is corrupt"
        ) from None
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]  # a training checkpoint
    if not isinstance(state, dict):
        raise BundleError(f"model weights '{weights_file}' are not a state_dict")
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if shapes:
            k = shapes[0]
            parts.append(
                f"{len(shapes)} of the wrong shape "
                f"(e.g. {k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)})"
            )
        raise BundleError(
            f"model weights '{weights_file}' do not fit the bundle's architecture: " + "; ".join(parts)
        )
    model.load_state_dict(state)


def _check_onnx(onnx_file: Path) -> None:
    import onnx

    if not onnx_file.is_file():
        raise BundleError(
            f"ONNX model '{onnx_file}' is missing; run `poppyscan export-onnx {onnx_file.parent}`"
        )
    try:
        proto = onnx.load(str(onnx_file), load_external_data=False)
    except Exception as exc:  # noqa: BLE001
        raise BundleError(
            f"ONNX model '{onnx_file}' is unreadable ({type(exc).__name__}); "
            f"re-export it with `poppyscan export-onnx {onnx_file.parent}`"
        ) from None
    inputs = [i.name for i in proto.graph.input]
    outputs = [o.name for o in proto.graph.output]
    if inputs[:1] != ["image"] or outputs[:1] != ["prob"]:
        raise BundleError(
            f"ONNX model '{onnx_file}' has inputs {inputs} / outputs {outputs}, expected "
            f"['image'] / ['prob']; re-export it with `poppyscan export-onnx {onnx_file.parent}`"
        )


def load_bundle(path: str | Path, *, check_onnx: bool = True, with_torch: bool = True) -> Bundle:
    """Load a bundle directory. Raises :class:`BundleError` naming the file and the problem.

    ``with_torch=False`` skips building the torch network (``bundle.model`` is ``None``): enough for
    CPU prediction, which needs only ``bundle.json`` and ``model.onnx``.
    """
    path = Path(path)
    meta = read_meta(path)
    model = None
    if with_torch:
        from .network import build_model

        model = build_model(meta.arch, num_classes=len(meta.classes), pretrained=False)
        load_state(model, path / meta.torch_weights)
        model.eval()
    if check_onnx or not with_torch:
        _check_onnx(path / meta.onnx_file)
    if meta.plot_scorer:
        from .plot_scorer import load_for

        load_for(meta, path)  # a missing or corrupt scorer fails here, naming the file
    return Bundle(meta=meta, model=model, path=path)


def update_meta(path: str | Path, **changes: Any) -> BundleMeta:
    """Change metadata fields of the bundle at ``path`` (e.g. ``metrics=...``) in ``bundle.json`` and in the
    ONNX file's ``metadata_props``; the weights are untouched."""
    import onnx

    path = Path(path)
    meta = dataclasses.replace(read_meta(path), **changes)
    onnx_file = path / meta.onnx_file
    _check_onnx(onnx_file)
    proto = onnx.load(str(onnx_file))
    for entry in proto.metadata_props:
        if entry.key == "poppyscan_bundle":
            entry.value = json.dumps(meta.to_dict(), ensure_ascii=False)
        elif entry.key in ("name", "version", "gsd_m", "threshold"):
            entry.value = str(getattr(meta, entry.key))
    tmp_onnx = onnx_file.with_name(f".{onnx_file.name}.part")
    tmp_json = path / ".bundle.json.part"
    onnx.save(proto, str(tmp_onnx))
    tmp_json.write_text(json.dumps(meta.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp_onnx, onnx_file)
    os.replace(tmp_json, path / "bundle.json")
    return meta


def reexport_onnx(path: str | Path) -> Path:
    """Re-create ``model.onnx`` of the bundle at ``path`` from its torch weights."""
    bundle = load_bundle(path, check_onnx=False)
    assert bundle.path is not None
    final = bundle.path / bundle.meta.onnx_file
    tmp = final.with_name(f".{final.name}.part")
    try:
        export_onnx(bundle.model, bundle.meta, tmp)
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    return final


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


def __getattr__(name: str):  # noqa: ANN202 - lazy, torch-backed names kept importable from here
    if name == "ExportModule":
        from .network import ExportModule

        return ExportModule
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
