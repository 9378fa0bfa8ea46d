"""Training labels from field results and desk rejections, for retraining on the office's own flights.

For every registered run with at least one verified or desk-rejected plot, one label file per mosaic is
written (``<run>_<mosaic stem>.gpkg``, layer ``plots``, column ``label``) plus a ``scenes.csv`` list
(``mosaic,labels``) that ``poppyscan train`` reads as it is (see :mod:`poppyscan.traindata`):

- result ``poppy`` -> ``label = poppy``: a positive, the detected polygon;
- result ``not_poppy`` -> ``label = not_poppy``: a **hard negative** (the detector's false positive,
  e.g. corn poppy or a flowerbed), taught as background and over-sampled;
- a plot rejected at the desk review and sent to no field team (``dismissed``) -> ``label =
  not_poppy`` too: a reviewer judged it a false alarm on the imagery (the review page exports the same
  plots as hard negatives); column ``source`` says ``desk`` instead of ``field``, so a stricter
  retraining can drop them;
- every other plot (pending, not reached, already eradicated) -> ``label = unknown``: excluded from
  the loss, because nobody confirmed what the image shows there.

Pixels outside all detected plots count as background for training, as for any labelled mosaic: a
poppy plot the detector missed on that flight would teach the wrong thing, so retrain from flights
whose checks were thorough, together with labelled scenes (``poppyscan train SCENES.csv NEW_SCENES/``).

Each plot is labelled on the mosaic it was detected on: the register's ``mosaic_index`` (its position in
the run's ``mosaic_paths``), so that inputs sharing a file name (every OpenDroneMap output is
``odm_orthophoto.tif``) are kept apart. Plots without it (registered before the register kept it, or
from run folders written before detect recorded it: the register stores no guess) are placed here as
:func:`poppyscan.run_inputs.plot_inputs` places plots of old runs: by file name, among inputs of that
name by the bounds of the mosaic file and, where several hold the plot, by the one with valid pixels
under it; a plot that no mosaic fits is left out and counted.
"""

from __future__ import annotations

import csv
import json
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import geopandas as gpd

from .. import run_inputs
from ..fsutil import check_writable
from ..geo.raster import ordered_bounds
from .gpkg import from_blob
from .schema import connect

log = logging.getLogger(__name__)

LABEL_OF = {"poppy": "poppy", "not_poppy": "not_poppy"}


@dataclass
class LabelExport:
    """What :func:`export_training_labels` wrote."""

    scenes_csv: Path
    scenes: int = 0
    positives: int = 0
    hard_negatives: int = 0
    desk_negatives: int = 0  # of the hard negatives: rejected at the desk review, never checked in the field
    ignored: int = 0
    missing_mosaics: list[str] = field(default_factory=list)
    unplaced: int = 0  # plots no mosaic of their run fits (left out)

    def describe(self) -> str:
        text = (f"wrote {self.scenes_csv}: {self.scenes} scene(s), {self.positives} verified poppy plot(s) "
                f"as positives, {self.hard_negatives} false positive(s) as hard negatives "
                f"({self.desk_negatives} of them rejected at the desk), "
                f"{self.ignored} unverified plot(s) ignored")
        if self.unplaced:
            text += (f"; left out {self.unplaced} plot(s) that no mosaic of their run fits (by index, "
                     "file name and bounds)")
        if self.missing_mosaics:
            text += (f"; skipped {len(self.missing_mosaics)} mosaic(s) no longer at their recorded path: "
                     + ", ".join(self.missing_mosaics))
        return text


def export_training_labels(register: str | Path, out_dir: str | Path, *, year: int | None = None,
                           overwrite: bool = False) -> LabelExport:
    """Write label files and ``scenes.csv`` into ``out_dir`` from the register's verified plots."""
    out_dir = Path(out_dir)
    scenes_csv = check_writable(out_dir / "scenes.csv", overwrite)
    conn = connect(register, readonly=True)  # never writes: an older register is upgraded in memory
    try:
        runs = conn.execute("SELECT fid, mosaic_paths, year FROM runs ORDER BY fid").fetchall()
        report = LabelExport(scenes_csv)
        rows = []
        for run in runs:
            if year is not None and run["year"] != year:
                continue
            plots = conn.execute(
                "SELECT p.plot_id, p.mosaic, p.mosaic_index, p.flight_date, p.geom, p.dismissed, t.task_id, "
                "t.result FROM plots p LEFT JOIN tasks t ON t.plot_fid = p.fid WHERE p.run_id = ?",
                (run["fid"],)).fetchall()
            if not any(_label(p)[0] != "unknown" for p in plots):
                continue
            paths = [Path(p) for p in json.loads(run["mosaic_paths"] or "[]")]
            by_mosaic: dict[int, list] = defaultdict(list)
            for p, k in zip(plots, plot_mosaics(paths, plots), strict=True):
                if k is None:
                    report.unplaced += 1
                else:
                    by_mosaic[k].append(p)
            stems = [m.stem for m in paths]
            for k, members in sorted(by_mosaic.items()):
                mosaic = paths[k]
                labelled = [_label(p) for p in members]
                if not any(lab != "unknown" for lab, _ in labelled):
                    continue
                if not mosaic.is_file():
                    report.missing_mosaics.append(str(mosaic))
                    continue
                labels = [lab for lab, _ in labelled]
                gdf = gpd.GeoDataFrame({
                    "label": labels, "source": [src for _, src in labelled],
                    "plot_id": [p["plot_id"] for p in members],
                    "task_id": [p["task_id"] for p in members], "result": [p["result"] for p in members],
                    "flight_date": [p["flight_date"] for p in members],
                }, geometry=[from_blob(p["geom"]) for p in members], crs=4326)
                repeated = f"_{k + 1}" if stems.count(mosaic.stem) > 1 else ""  # odm_orthophoto, twice
                name = f"run{run['fid']:04d}_{mosaic.stem}{repeated}.gpkg"
                out_dir.mkdir(parents=True, exist_ok=True)
                target = check_writable(out_dir / name, overwrite)
                if target.exists():
                    target.unlink()
                gdf.to_file(target, layer="plots", driver="GPKG", engine="pyogrio")
                rows.append({"mosaic": str(mosaic.resolve()), "labels": name})
                report.scenes += 1
                report.positives += labels.count("poppy")
                report.hard_negatives += labels.count("not_poppy")
                report.desk_negatives += sum(src == "desk" for _, src in labelled)
                report.ignored += labels.count("unknown")
    finally:
        conn.close()
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(scenes_csv, "w", encoding="utf-8", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["mosaic", "labels"])
        w.writeheader()
        w.writerows(rows)
    log.info(report.describe())
    return report


def _label(p) -> tuple[str, str]:  # noqa: ANN001
    """``(label, source)`` of a register plot row: the field verdict first, else a desk rejection."""
    if p["result"] in LABEL_OF:
        return LABEL_OF[p["result"]], "field"
    if not p["result"] and p["dismissed"]:
        return "not_poppy", "desk"
    return "unknown", ""


def plot_mosaics(paths: list[Path], plots: list) -> list[int | None]:
    """For each register row of ``plots`` (``mosaic``, ``mosaic_index``, ``geom``), the position in the
    run's mosaic ``paths`` of the mosaic it was detected on; None where none fits.

    ``mosaic_index`` decides when it points at a path of the plot's file name; otherwise (not recorded)
    :func:`poppyscan.run_inputs.plot_inputs` places the plot by file name and, among several paths of
    that name, by the bounds of the mosaic files that exist and the valid pixels under the plot.
    """
    out: list[int | None] = []
    rest: list[int] = []
    for i, p in enumerate(plots):
        k = p["mosaic_index"]
        if k is not None and 0 <= k < len(paths) and (not p["mosaic"] or paths[k].name == p["mosaic"]):
            out.append(int(k))
        else:
            out.append(None)
            rest.append(i)
    if rest and paths:
        inputs = [_input_of(k, path) for k, path in enumerate(paths)]
        sub = gpd.GeoDataFrame({"mosaic": [plots[i]["mosaic"] for i in rest]},
                               geometry=[from_blob(plots[i]["geom"]) for i in rest], crs=4326)
        for i, item in zip(rest, run_inputs.plot_inputs(inputs, sub), strict=True):
            out[i] = None if item is None else item.index
    return out


def _input_of(index: int, path: Path) -> run_inputs.RunInput:
    """A mosaic path as a :class:`~poppyscan.run_inputs.RunInput`, its CRS and bounds read from the file
    (None when it is missing or unreadable)."""
    crs = bounds = None
    if path.is_file():
        import rasterio

        try:
            with rasterio.open(path) as src:
                if src.crs is not None:
                    crs = src.crs.to_wkt()
                    bounds = ordered_bounds(*src.bounds)
        except (rasterio.errors.RasterioIOError, OSError):
            pass
    return run_inputs.RunInput(index=index, path=path, name=path.name, crs=crs, bounds=bounds,
                               exists=path.is_file())
