"""Model bundle metadata: the fields of ``bundle.json`` (:class:`BundleMeta`), their validation, and
:func:`new_meta` for metadata with defaults. The format itself is described in docs/INTERFACES.md.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .archs import STRIDE, canonical_arch
from .errors import BundleError

FORMAT = "poppyscan-bundle"
FORMAT_VERSION = 1
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
    #                                 (every mosaic resampled to gsd_m). See bundle_rules.run_gsd_m.
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


def new_meta(
    *, arch: str = "unet_mnv3s", name: str = "poppyscan-untrained", version: str = "0.0.0", **kwargs: Any
) -> BundleMeta:
    """Metadata with defaults, ``created`` set to now (UTC)."""
    kwargs.setdefault("created", _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"))
    return BundleMeta(name=name, version=version, arch=canonical_arch(arch), **kwargs)
