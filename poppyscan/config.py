"""Typed, validated configuration loaded from YAML.

``configs/default.yaml`` (also shipped inside the package) holds every key with its default. A user file
needs only the keys it changes; unknown keys and out-of-range values raise :class:`ConfigError` naming
the dotted field, e.g. ``detect.overlap``. CLI options override keys with :func:`Config.with_overrides`.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError

DEFAULT_CONFIG_PATH = Path(__file__).with_name("default.yaml")


def _check(cond: bool, name: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"config '{name}' {msg}")


def parse_positive_weights(entries: tuple[str, ...]) -> dict[tuple[str, str], float]:
    """``train.positive_weights`` entries ``"column=value:weight"`` -> ``{(column, value): weight}``.

    Values are compared case-insensitively, as text.

    >>> parse_positive_weights(("stage=Rosette:3", "setting=courtyard:1.5"))
    {('stage', 'rosette'): 3.0, ('setting', 'courtyard'): 1.5}
    """
    out: dict[tuple[str, str], float] = {}
    for entry in entries:
        key, sep, weight = entry.rpartition(":")
        column, eq, value = key.partition("=")
        try:
            w = float(weight) if sep and eq else float("nan")
        except ValueError:
            w = float("nan")
        _check(bool(column.strip()) and bool(value.strip()) and 0 < w <= 100, "train.positive_weights",
               "entries must look like 'stage=rosette:3' (column=value:weight, weight in (0, 100]), "
               f"got {entry!r}")
        key2 = (column.strip(), value.strip().lower())
        _check(key2 not in out, "train.positive_weights", f"names '{key2[0]}={key2[1]}' twice; give it once")
        out[key2] = w
    return out


def scheduler_problem(address: str) -> str | None:
    """What is wrong with a Dask scheduler address (``[tcp://]HOST:PORT``, ``tls://``, ``ws://``, ``wss://``,
    ``ucx://``, or ``inproc://...``), or None when it is well formed. Checked before any connection is
    tried: ``distributed.Client`` given a malformed address fails only after its event loop is up.

    >>> scheduler_problem("tcp://10.0.0.5:8786") is None, scheduler_problem("garbage")
    (True, 'no port: give HOST:PORT')
    """
    if not isinstance(address, str) or not address.strip() or any(c.isspace() for c in address):
        return "empty or with spaces"
    scheme, sep, rest = address.partition("://")
    if not sep:
        scheme, rest = "tcp", address
    if scheme == "inproc":
        return None if rest else "no address after inproc://"
    if scheme not in ("tcp", "tls", "ws", "wss", "ucx"):
        return f"unknown protocol '{scheme}://'; use tcp://"
    host, colon, port = rest.rpartition(":")
    if not colon or not port:
        return "no port: give HOST:PORT"
    if not host or host in ("[]",) or (host.startswith("[") != host.endswith("]")):
        return "no host: give HOST:PORT"
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        return f"port '{port}' is not a number in 1-65535"
    return None


@dataclass(frozen=True)
class DetectConfig:
    """Options for ``poppyscan detect``. ``None`` means "take it from the model bundle"."""

    model: str = "models/poppyscan-default"
    device: str = "auto"
    tile_size: int | None = None
    overlap: float | None = None
    batch_size: int = 8
    threshold: float | None = None
    min_prob_mean: float | None = None
    min_gsd_m: float | None = None
    plot_scorer: bool = True
    min_plot_score: float | None = None
    tta: bool = False
    threads: int = 0
    streams: int = 0
    window_rows: int = 1024
    band_rows: int = 16384
    min_area_m2: float = 1.0
    max_hole_m2: float = 1.0
    morph_radius_px: int = 1
    plants_per_m2: float = 6.0
    criminal_plants: int = 500
    run_tasks: bool = True
    scheduler: str | None = None
    warn_plots_per_ha: float = 2.0

    def __post_init__(self) -> None:
        _check(0 <= self.warn_plots_per_ha <= 10000, "detect.warn_plots_per_ha",
               f"must be in [0, 10000] (0 = never warn), got {self.warn_plots_per_ha}")
        if self.scheduler is not None:
            problem = scheduler_problem(self.scheduler)
            _check(problem is None, "detect.scheduler", "must be a Dask scheduler address such as "
                   f"tcp://10.0.0.5:8786 (or null to run locally), got {self.scheduler!r} ({problem})")
        _check(self.device in ("auto", "cpu", "cuda"), "detect.device",
               f"must be auto, cpu or cuda, got {self.device!r}")
        if self.tile_size is not None:
            _check(64 <= self.tile_size <= 4096 and self.tile_size % 32 == 0, "detect.tile_size",
                   f"must be a multiple of 32 in [64, 4096], got {self.tile_size}")
        if self.overlap is not None:
            _check(0 <= self.overlap < 0.5, "detect.overlap", f"must be in [0, 0.5), got {self.overlap}")
        _check(1 <= self.batch_size <= 256, "detect.batch_size",
               f"must be in [1, 256], got {self.batch_size}")
        if self.threshold is not None:
            _check(0 < self.threshold < 1, "detect.threshold", f"must be in (0, 1), got {self.threshold}")
        if self.min_prob_mean is not None:
            _check(0 <= self.min_prob_mean < 1, "detect.min_prob_mean",
                   f"must be in [0, 1) (or null = the bundle's), got {self.min_prob_mean}")
        _check(isinstance(self.plot_scorer, bool), "detect.plot_scorer",
               f"must be true or false, got {self.plot_scorer!r}")
        if self.min_plot_score is not None:
            _check(0 < self.min_plot_score < 1, "detect.min_plot_score",
                   f"must be in (0, 1) (or null = the bundle's plot_scorer_cut), got {self.min_plot_score}")
        if self.min_gsd_m is not None:
            _check(0.005 <= self.min_gsd_m <= 0.5, "detect.min_gsd_m",
                   f"must be in [0.005, 0.5] m/px (or null = the bundle's), got {self.min_gsd_m}")
        _check(0 <= self.threads <= 256, "detect.threads",
               f"must be in [0, 256] (0 = all cores), got {self.threads}")
        _check(0 <= self.streams <= 64, "detect.streams",
               f"must be in [0, 64] (0 = auto), got {self.streams}")
        _check(256 <= self.window_rows <= 65536, "detect.window_rows",
               f"must be in [256, 65536], got {self.window_rows}")
        _check(self.band_rows == 0 or self.window_rows <= self.band_rows <= 2**20, "detect.band_rows",
               f"must be 0 (whole mosaics) or in [window_rows ({self.window_rows}), 1048576], "
               f"got {self.band_rows}")
        _check(0 <= self.min_area_m2 <= 10000, "detect.min_area_m2",
               f"must be in [0, 10000], got {self.min_area_m2}")
        _check(0 <= self.max_hole_m2 <= 10000, "detect.max_hole_m2",
               f"must be in [0, 10000], got {self.max_hole_m2}")
        _check(0 <= self.morph_radius_px <= 10, "detect.morph_radius_px",
               f"must be in [0, 10], got {self.morph_radius_px}")
        _check(0 < self.plants_per_m2 <= 100, "detect.plants_per_m2",
               f"must be in (0, 100], got {self.plants_per_m2}")
        _check(1 <= self.criminal_plants, "detect.criminal_plants",
               f"must be >= 1, got {self.criminal_plants}")


@dataclass(frozen=True)
class TrainConfig:
    """Options for ``poppyscan train``."""

    arch: str = "unet_mnv3s"
    widen_to: str = ""
    gsd_m: float = 0.04
    tile_size: int = 256
    infer_tile_size: int = 512
    overlap: float = 0.125
    hard_negative_fraction: float = 0.3
    scale_jitter: float = 0.25
    coarse_aug: float = 0.0
    color_aug: float = 1.0
    camera_aug: float = 0.0
    mined_fraction: float = 0.0
    val_tiles: int = 64
    min_area_m2: float = 1.0
    threads: int = 0
    calibrate_threshold: bool = True
    epochs: int = 20
    steps_per_epoch: int = 200
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 1e-4
    positive_fraction: float = 0.6
    positive_weights: tuple[str, ...] = ()
    val_fraction: float = 0.2
    pretrained: bool = False
    seed: int = 0
    workers: int = 0

    def __post_init__(self) -> None:
        _check(bool(self.arch), "train.arch", "must name an architecture")
        if self.widen_to:
            from .archs import canonical_arch

            canonical_arch(self.widen_to)  # ConfigError naming the choices
        _check(0.005 <= self.gsd_m <= 0.5, "train.gsd_m", f"must be in [0.005, 0.5] m/px, got {self.gsd_m}")
        _check(64 <= self.tile_size <= 1024 and self.tile_size % 32 == 0, "train.tile_size",
               f"must be a multiple of 32 in [64, 1024], got {self.tile_size}")
        _check(1 <= self.epochs <= 10000, "train.epochs", f"must be in [1, 10000], got {self.epochs}")
        _check(1 <= self.steps_per_epoch, "train.steps_per_epoch",
               f"must be >= 1, got {self.steps_per_epoch}")
        _check(1 <= self.batch_size <= 512, "train.batch_size", f"must be in [1, 512], got {self.batch_size}")
        _check(0 < self.lr < 1, "train.lr", f"must be in (0, 1), got {self.lr}")
        _check(0 <= self.weight_decay < 1, "train.weight_decay",
               f"must be in [0, 1), got {self.weight_decay}")
        _check(0 <= self.positive_fraction <= 1, "train.positive_fraction",
               f"must be in [0, 1], got {self.positive_fraction}")
        parse_positive_weights(self.positive_weights)
        _check(0 <= self.val_fraction < 1, "train.val_fraction",
               f"must be in [0, 1), got {self.val_fraction}")
        _check(0 <= self.workers <= 64, "train.workers", f"must be in [0, 64], got {self.workers}")
        _check(64 <= self.infer_tile_size <= 4096 and self.infer_tile_size % 32 == 0, "train.infer_tile_size",
               f"must be a multiple of 32 in [64, 4096], got {self.infer_tile_size}")
        _check(0 <= self.overlap < 0.5, "train.overlap", f"must be in [0, 0.5), got {self.overlap}")
        _check(0 <= self.hard_negative_fraction <= 1, "train.hard_negative_fraction",
               f"must be in [0, 1], got {self.hard_negative_fraction}")
        _check(0 <= self.scale_jitter < 1, "train.scale_jitter",
               f"must be in [0, 1), got {self.scale_jitter}")
        _check(0 <= self.coarse_aug <= 1, "train.coarse_aug",
               f"must be in [0, 1] (share of training tiles), got {self.coarse_aug}")
        _check(0.5 <= self.color_aug <= 3, "train.color_aug",
               f"must be in [0.5, 3] (scale of the photometric jitter ranges), got {self.color_aug}")
        _check(0 <= self.camera_aug <= 1, "train.camera_aug",
               f"must be in [0, 1] (share of training tiles), got {self.camera_aug}")
        _check(0 <= self.mined_fraction <= 1, "train.mined_fraction",
               f"must be in [0, 1] (share of non-positive tiles), got {self.mined_fraction}")
        _check(1 <= self.val_tiles <= 100000, "train.val_tiles", f"must be >= 1, got {self.val_tiles}")
        _check(0 <= self.min_area_m2 <= 10000, "train.min_area_m2",
               f"must be in [0, 10000], got {self.min_area_m2}")
        _check(0 <= self.threads <= 256, "train.threads",
               f"must be in [0, 256] (0 = torch default), got {self.threads}")


@dataclass(frozen=True)
class TasksConfig:
    """Options for ``poppyscan tasks`` (field-verification task lists and exports)."""

    chip_size_m: float = 24.0
    chip_px: int = 320
    admin_fields: tuple[str, ...] = ("county", "township", "village")
    formats: tuple[str, ...] = ("gpkg", "csv", "xlsx", "kmz", "gpx", "geojson", "html")
    include_rejected: bool = False

    def __post_init__(self) -> None:
        _check(1 <= self.chip_size_m <= 500, "tasks.chip_size_m",
               f"must be in [1, 500], got {self.chip_size_m}")
        _check(64 <= self.chip_px <= 2048, "tasks.chip_px", f"must be in [64, 2048], got {self.chip_px}")
        allowed = {"gpkg", "csv", "xlsx", "kmz", "gpx", "geojson", "html"}
        bad = sorted(set(self.formats) - allowed)
        _check(not bad, "tasks.formats", f"has unknown format(s) {bad}; choose from {sorted(allowed)}")


@dataclass(frozen=True)
class SurveyConfig:
    """The office's survey register."""

    register: str = "survey_register.gpkg"
    site_link_distance_m: float = 15.0

    def __post_init__(self) -> None:
        _check(0 <= self.site_link_distance_m <= 1000, "survey.site_link_distance_m",
               f"must be in [0, 1000], got {self.site_link_distance_m}")


@dataclass(frozen=True)
class Config:
    """The whole configuration: one frozen dataclass per section."""

    detect: DetectConfig = field(default_factory=DetectConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tasks: TasksConfig = field(default_factory=TasksConfig)
    survey: SurveyConfig = field(default_factory=SurveyConfig)

    def with_overrides(self, overrides: dict[str, Any]) -> Config:
        """Return a copy with dotted keys replaced, e.g. ``{"detect.threshold": 0.6}``;
        ``None`` values are skipped.

        Overrides come from command-line options, so a refused value is named by its option first
        (:func:`option_name`): ``'--band-rows' (config 'detect.band_rows') must be ...``.
        """
        nested: dict[str, dict[str, Any]] = {}
        for key, value in overrides.items():
            if value is None:
                continue
            section, _, name = key.partition(".")
            nested.setdefault(section, {})[name] = value
        try:
            return _build(nested, base=self)
        except ConfigError as exc:
            message = str(exc)
            for key in (k for k, v in overrides.items() if v is not None):
                if f"config '{key}'" in message:
                    raise ConfigError(message.replace(f"config '{key}'",
                                                      f"'{option_name(key)}' (config '{key}')", 1)) from None
            raise

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (for ``run.json``)."""
        return dataclasses.asdict(self)


# config keys whose command-line option is not ``--`` + the key's name with dashes
_OPTION_NAMES = {
    "detect.min_gsd_m": "--min-gsd",
    "detect.min_area_m2": "--min-area",
    "detect.plot_scorer": "--plot-scorer/--no-plot-scorer",
    "train.gsd_m": "--gsd",
    "train.pretrained": "--pretrained/--no-pretrained",
}


def option_name(key: str) -> str:
    """The command-line option that overrides the dotted config ``key``.

    >>> option_name("detect.band_rows"), option_name("detect.min_gsd_m")
    ('--band-rows', '--min-gsd')
    """
    return _OPTION_NAMES.get(key) or "--" + key.partition(".")[2].replace("_", "-")


def _coerce(value: Any, annotation: Any, name: str) -> Any:
    """Check/convert one YAML value to the field's annotated type."""
    if isinstance(annotation, str):
        annotation = eval(annotation, {"tuple": tuple, "str": str, "int": int, "float": float, "bool": bool})  # noqa: S307
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], name)
    if origin is tuple:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config '{name}' must be a list, got {value!r}")
        return tuple(_coerce(v, args[0], name) for v in value)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"config '{name}' must be true or false, got {value!r}")
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config '{name}' must be an integer, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config '{name}' must be a number, got {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"config '{name}' must be a string, got {value!r}")
        return value
    return value


def _build(data: dict[str, Any], base: Config | None = None) -> Config:
    base = base or Config()
    if not isinstance(data, dict):
        raise ConfigError("config file must be a mapping of sections (detect:, train:, tasks:, survey:)")
    sections = {f.name: f for f in fields(Config)}
    updated: dict[str, Any] = {}
    for section, values in data.items():
        if section not in sections:
            raise ConfigError(f"config has unknown section '{section}'; known: {', '.join(sections)}")
        current = getattr(base, section)
        if values is None:
            continue
        if not isinstance(values, dict):
            raise ConfigError(f"config section '{section}' must be a mapping, got {values!r}")
        known = {f.name: f for f in fields(current)}
        kwargs = {}
        for key, value in values.items():
            name = f"{section}.{key}"
            if key not in known:
                raise ConfigError(f"config has unknown key '{name}'; known keys: {', '.join(known)}")
            kwargs[key] = _coerce(value, known[key].type, name)
        updated[section] = dataclasses.replace(current, **kwargs)
    return dataclasses.replace(base, **updated)


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Load the packaged defaults, then ``path`` (if given), then dotted ``overrides``."""
    config = _build(_read_yaml(DEFAULT_CONFIG_PATH))
    if path is not None:
        config = _build(_read_yaml(Path(path)), base=config)
    if overrides:
        config = config.with_overrides(overrides)
    return config


def _read_yaml(path: Path) -> dict[str, Any]:
    if path.is_dir():
        raise ConfigError(f"config file '{path}' is a directory; pass a YAML file to --config")
    if not path.is_file():
        raise ConfigError(f"config file '{path}' does not exist; pass an existing YAML file to --config")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"config file '{path}' is not valid YAML ({first}); fix the syntax") from None
    return data or {}
