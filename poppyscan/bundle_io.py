"""The model bundle on disk: a directory with ``bundle.json``, ``model.pt`` and ``model.onnx``
(docs/INTERFACES.md). Saving it atomically, loading and checking it, updating its metadata, and the
ONNX export (the raw ``uint8 (N, H, W, 3)`` RGB batch in, ``float32 (N, H, W)`` poppy probability out).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .bundle_meta import BundleMeta
from .errors import BundleError, OutputExistsError

if TYPE_CHECKING:
    from torch import nn

ONNX_OPSET = 17


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
