"""Training labels from verified field results, for retraining the model on the office's own flights.

For every registered run with at least one verified plot, one label file per mosaic is written
(``<run>_<mosaic stem>.gpkg``, layer ``plots``, column ``label``) plus a ``scenes.csv`` list
(``mosaic,labels``) that ``poppyscan train`` reads as it is (see :mod:`poppyscan.traindata`):

- result ``poppy`` -> ``label = poppy``: a positive, the detected polygon;
- result ``not_poppy`` -> ``label = not_poppy``: a **hard negative** (the detector's false positive,
  e.g. corn poppy or a flowerbed), taught as background and over-sampled;
- every other plot (pending, not reached, already eradicated) -> ``label = unknown``: excluded from
  the loss, because nobody confirmed what the image shows there.

Pixels outside all detected plots count as background for training, as for any labelled mosaic: a
poppy plot the detector missed on that flight would teach the wrong thing, so retrain from flights
whose checks were thorough, together with labelled scenes (``poppyscan train SCENES.csv NEW_SCENES/``).
"""

from __future__ import annotations

import csv
import json
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import geopandas as gpd

from ..fsutil import check_writable
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
    ignored: int = 0
    missing_mosaics: list[str] = field(default_factory=list)

    def describe(self) -> str:
        text = (f"wrote {self.scenes_csv}: {self.scenes} scene(s), {self.positives} verified poppy plot(s) "
                f"as positives, {self.hard_negatives} false positive(s) as hard negatives, "
                f"{self.ignored} unverified plot(s) ignored")
        if self.missing_mosaics:
            text += (f"; skipped {len(self.missing_mosaics)} mosaic(s) no longer at their recorded path: "
                     + ", ".join(self.missing_mosaics))
        return text


def export_training_labels(register: str | Path, out_dir: str | Path, *, year: int | None = None,
                           overwrite: bool = False) -> LabelExport:
    """Write label files and ``scenes.csv`` into ``out_dir`` from the register's verified plots."""
    out_dir = Path(out_dir)
    scenes_csv = check_writable(out_dir / "scenes.csv", overwrite)
    conn = connect(register)
    try:
        runs = conn.execute("SELECT fid, mosaic_paths, year FROM runs ORDER BY fid").fetchall()
        report = LabelExport(scenes_csv)
        rows = []
        for run in runs:
            if year is not None and run["year"] != year:
                continue
            plots = conn.execute(
                "SELECT p.plot_id, p.mosaic, p.flight_date, p.geom, t.task_id, t.result FROM plots p "
                "LEFT JOIN tasks t ON t.plot_fid = p.fid WHERE p.run_id = ?", (run["fid"],)).fetchall()
            if not any(p["result"] in LABEL_OF for p in plots):
                continue
            paths = [Path(p) for p in json.loads(run["mosaic_paths"] or "[]")]
            by_mosaic: dict[Path, list] = defaultdict(list)
            for p in plots:
                match = [m for m in paths if m.name == p["mosaic"]] or paths[:1]
                if match:
                    by_mosaic[match[0]].append(p)
            for mosaic, members in by_mosaic.items():
                if not any(p["result"] in LABEL_OF for p in members):
                    continue
                if not mosaic.is_file():
                    report.missing_mosaics.append(str(mosaic))
                    continue
                labels = [LABEL_OF.get(p["result"] or "", "unknown") for p in members]
                gdf = gpd.GeoDataFrame({
                    "label": labels, "plot_id": [p["plot_id"] for p in members],
                    "task_id": [p["task_id"] for p in members], "result": [p["result"] for p in members],
                    "flight_date": [p["flight_date"] for p in members],
                }, geometry=[from_blob(p["geom"]) for p in members], crs=4326)
                name = f"run{run['fid']:04d}_{mosaic.stem}.gpkg"
                out_dir.mkdir(parents=True, exist_ok=True)
                target = check_writable(out_dir / name, overwrite)
                if target.exists():
                    target.unlink()
                gdf.to_file(target, layer="plots", driver="GPKG", engine="pyogrio")
                rows.append({"mosaic": str(mosaic.resolve()), "labels": name})
                report.scenes += 1
                report.positives += labels.count("poppy")
                report.hard_negatives += labels.count("not_poppy")
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
