"""A detect run opened for desk review: the data model behind the review page.

:class:`ReviewRun` reads a run folder (``plots.gpkg``, ``run.json``, ``review.json``) and holds its plots
in priority order (the field tasks' order), the input mosaics they came from, and what the page shows
of them: the run summary with each plot's saved decision (:meth:`ReviewRun.summary`), a chip per plot
(:meth:`ReviewRun.chip`) and an overview per mosaic (:meth:`ReviewRun.overview`), both cached under
``RUN_DIR/review/``. The HTTP side lives in :mod:`poppyscan.review.server`, which re-exports
:class:`ReviewRun` and the chip defaults :data:`CHIP_SIZE_M` and :data:`CHIP_PX`.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import shapely
from shapely.geometry import box

from .. import run_folder, run_inputs
from ..errors import PlotOffMosaicError
from ..fsutil import write_bytes_atomic
from . import imagery, store

# the logger these messages have always come from (log filters and the CLI's log lines name it)
log = logging.getLogger("poppyscan.review.server")

# Review chips are near the mosaic's own resolution (16 m over 480 px = 3.3 cm/px): telling poppy from
# corn poppy or lettuce needs the detail. Field-task chips (tasks.chip_*) are wider, for orientation.
CHIP_SIZE_M = 16.0
CHIP_PX = 480
_PLOT_FIELDS = ("prob_max", "prob_mean", "area_m2", "area_mu", "est_plants", "lon", "lat")


class ReviewRun:
    """A detect run opened for review: plots in priority order, mosaics, chip and overview cache."""

    def __init__(
        self, run_dir: str | Path, *, chip_size_m: float = CHIP_SIZE_M, chip_px: int = CHIP_PX
    ) -> None:
        from ..plots import priority_order

        self.run_dir = Path(run_dir)
        plots = run_folder.read_plots(self.run_dir)  # one-line InputErrors for a damaged or foreign folder
        store.read_review(self.run_dir)  # fail now, not on the first click, if review.json is corrupt
        self.chip_size_m, self.chip_px = chip_size_m, chip_px
        self.meta = run_folder.read_run_json(self.run_dir)
        self.crs = plots.crs
        self.plots = plots.iloc[priority_order(plots)].reset_index(drop=True)  # the field tasks' order
        self.over_500 = (self.plots["over_500_plants"].fillna(False).astype(bool).tolist()
                         if "over_500_plants" in self.plots else [False] * len(self.plots))
        self.ids = {int(v) for v in self.plots["plot_id"]}
        found = run_inputs.read_inputs(
            self.run_dir, self.meta, self.plots["mosaic"] if "mosaic" in self.plots else ()
        )
        self.inputs = self._inputs(found)
        # each plot's own mosaic, resolved as the field-task chips resolve it (poppyscan.run_inputs)
        self._source = [None if r is None else r.index for r in run_inputs.plot_inputs(found, self.plots)]
        self._by_id = {int(pid): i for i, pid in enumerate(self.plots["plot_id"])}
        self._in_crs: dict[int, Any] = {}
        self._lock = threading.Lock()

    def _inputs(self, found: list[run_inputs.RunInput]) -> list[dict[str, Any]]:
        from pyproj import CRS, Transformer

        out = []
        for item in found:
            run_bounds = list(item.bounds) if item.bounds else None
            if run_bounds and item.crs and self.crs is not None and CRS.from_user_input(item.crs) != self.crs:
                tr = Transformer.from_crs(CRS.from_user_input(item.crs), self.crs, always_xy=True)
                run_bounds = list(tr.transform_bounds(*run_bounds))
            out.append(
                {
                    "index": item.index,
                    "path": item.path,
                    "name": item.path.name,
                    "crs": item.crs,
                    "bounds": run_bounds,
                    "exists": item.exists,
                    "geographic": item.geographic,
                    "value_scale": item.value_scale,
                }
            )
        return out

    # -- JSON for the page -------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        doc = store.read_review(self.run_dir)
        decisions = doc["decisions"]
        centroids = shapely.centroid(self.plots.geometry.values)  # plain shapely: no geographic-CRS warning
        records = []
        rows = zip(self.plots.itertuples(index=False), centroids, self.over_500, strict=False)
        for rank, (row, c, over) in enumerate(rows):
            pid = int(row.plot_id)
            rec: dict[str, Any] = {"plot_id": pid, "rank": rank + 1}
            for f in _PLOT_FIELDS:
                rec[f] = run_inputs.number(getattr(row, f, None))
            rec["over_500_plants"] = over
            rec["mosaic"] = str(getattr(row, "mosaic", "") or "")
            empty = c is None or c.is_empty
            rec["x"], rec["y"] = (None, None) if empty else (run_inputs.number(c.x), run_inputs.number(c.y))
            entry = decisions.get(str(pid))
            rec["decision"] = entry["decision"] if entry else None
            rec["reviewer"] = entry["reviewer"] if entry else None
            rec["time"] = entry["time"] if entry else None
            records.append(rec)
        footprints = [
            {"index": d["index"], "name": d["name"], "bounds": d["bounds"], "image": d["exists"]}
            for d in self.inputs
            if d["bounds"]
        ]
        xs = [r["x"] for r in records if r["x"] is not None]
        ys = [r["y"] for r in records if r["y"] is not None]
        boxes = [f["bounds"] for f in footprints]
        if xs:
            boxes.append([min(xs), min(ys), max(xs), max(ys)])
        extent = (
            [
                min(b[0] for b in boxes),
                min(b[1] for b in boxes),
                max(b[2] for b in boxes),
                max(b[3] for b in boxes),
            ]
            if boxes
            else None
        )
        return {
            "run": self.run_dir.resolve().name,
            "run_dir": str(self.run_dir.resolve()),
            "crs": self.crs.to_string() if self.crs is not None else None,
            "created": self.meta.get("created"),
            "model_version": (self.meta.get("model") or {}).get("version"),
            "total": len(records),
            "plots": records,
            "footprints": footprints,
            "extent": extent,
            "decisions": list(store.DECISIONS),
        }

    # -- pictures ----------------------------------------------------------------------------------
    def _input_for(self, i: int) -> dict[str, Any] | None:
        """The input mosaic of the plot at position ``i`` (None: no input of the run fits it)."""
        index = self._source[i]
        return next((item for item in self.inputs if item["index"] == index), None)

    def _geoms_in(self, item: dict[str, Any]):
        """The plot geometries (and a spatial index) in the CRS of mosaic ``item``."""
        with self._lock:
            if item["index"] not in self._in_crs:
                geoms = self.plots.geometry
                if item["crs"] and self.crs is not None:
                    geoms = geoms.to_crs(item["crs"])
                self._in_crs[item["index"]] = (geoms, geoms.sindex)
            return self._in_crs[item["index"]]

    def chip(self, plot_id: int) -> bytes:
        """JPEG chip of ``plot_id``, from the cache or cut now (and cached).

        The cache name carries the mosaic's input index, so a chip cached from another input (by a version
        that resolved same-named mosaics by name alone) is never served again.
        """
        i = self._by_id[plot_id]
        item = self._input_for(i)
        if item is None:
            log.warning("no chip for plot %s: no input mosaic in run.json fits it", plot_id)
            return imagery.placeholder_chip("no mosaic in run.json fits this plot", self.chip_px)
        name = f"{plot_id}_m{item['index']}_{self.chip_px}px_{self.chip_size_m:g}m.jpg"
        cache = self.run_dir / imagery.CHIP_DIR / name
        if cache.is_file():
            return cache.read_bytes()
        if not item["exists"]:
            return imagery.placeholder_chip(f"mosaic not found: {item['path']}", self.chip_px)
        geoms, sindex = self._geoms_in(item)
        geom = geoms.iloc[i]
        try:
            bounds = imagery.chip_bounds(geom, size_m=self.chip_size_m, geographic=item["geographic"])
            others = [geoms.iloc[j] for j in sindex.query(box(*bounds)) if j != i]
            data = imagery.render_chip(
                item["path"],
                geom,
                size_m=self.chip_size_m,
                px=self.chip_px,
                neighbours=others,
                value_scale=item["value_scale"],
            )
        except PlotOffMosaicError as exc:
            log.warning("no chip for plot %s: %s", plot_id, exc)
            return imagery.placeholder_chip("plot lies outside its mosaic: see the server log", self.chip_px)
        except Exception as exc:  # noqa: BLE001 - a broken chip must not break the review
            log.warning("chip for plot %s failed: %s", plot_id, exc)
            return imagery.placeholder_chip(f"chip failed: {exc}", self.chip_px)
        write_bytes_atomic(cache, data)
        return data

    def overview(self, index: int) -> bytes | None:
        """PNG overview of input mosaic ``index`` (cached), or None when it cannot be had."""
        item = next((d for d in self.inputs if d["index"] == index), None)  # index: position in run.json
        if item is None or not item["exists"]:
            return None
        cache = self.run_dir / imagery.OVERVIEW_DIR / f"{index}.png"
        if cache.is_file():
            return cache.read_bytes()
        data = imagery.render_overview(item["path"], value_scale=item["value_scale"])
        write_bytes_atomic(cache, data)
        return data
