#!/usr/bin/env python
"""False alarms on real aerial imagery without poppy: every plot detect reports here is a false plot.

No public labelled poppy drone imagery exists, but real aerial RGB without poppy does. This script takes
the five NEON airborne RGB crops (10 cm/px; US forest, meadow and sagebrush sites, 7.45 ha in all) that
ship as test data inside the ``deepforest`` wheel on PyPI (MIT licence; NEON data are public domain),
downloads the wheel once with pip (``--wheel`` takes a copy you already have), georeferences the PNG crops
(UTM zone of their NEON site, 0.1 m/px, origin at the NEON tile corner in the file name: only the pixel
size matters for a rate per hectare) and runs ``poppyscan detect`` on them:

    .venv/bin/python scripts/eval_real_negatives.py models/poppyscan-default \
        --report models/poppyscan-default-eval-real.json

Caveats, printed with the figures: 10 cm/px is coarser than the 1.8-5.5 cm surveys the product is for
(detect resamples it to the model's 4 cm, as it would any coarse mosaic), and these are US landscapes,
not the farmland of a Chinese survey. It is a first check on real imagery, not a field validation.

``--extra`` also runs the further real poppy-free sets in ``EXTRA`` (each reported on its own, in
``--extra-report``; the NEON figures and ``--report`` stay as they were): two drone frames at the
product's GSD and one more NEON crop, all shipped as test data in deepforest wheels on PyPI:

    .venv/bin/python scripts/eval_real_negatives.py models/poppyscan-default --threads 1 --extra \
        --report /tmp/neon.json --extra-report models/poppyscan-default-eval-real-extra.json

- ``drone-australia``: ``australia.tif`` (deepforest 1.5.2), a GeoTIFF drone orthomosaic (EPSG:32753,
  0.018 m/px, written by SimActive Correlator3D) of tropical savanna woodland in northern Australia.
- ``drone-pelicans``: ``AWPE Pigeon Lake 2020 DJI_0005.JPG`` (deepforest 2.1.0, the wheel the NEON set
  comes from), a crop of a DJI Phantom 4 Pro (FC6310) frame of a pelican colony on a lake island in
  Minnesota: bare soil, grass, shrubs, dead wood, ~100 white birds. Not georeferenced; its own XMP gives
  the flight height above take-off (RelativeAltitude 61.1 m), the calibrated focal length (3666.67 px)
  and a gimbal pitch of -88 deg (near nadir), so GSD = 61.1 / 3666.67 = 0.01666 m/px (assumed: the
  height is above the take-off point, so +-15 % if that was not at the island's level). It is placed in
  UTM 15N (EPSG:32615) at the frame's GPS position; only the pixel size matters for a rate per hectare.
- ``neon-sjer``: ``2018_SJER_3_252000_4107000_image_477.tif`` (deepforest 1.5.2), a NEON AOP GeoTIFF
  crop (EPSG:32611, 0.1 m/px) of oak savanna with granite boulders at San Joaquin Experimental Range.

Checked and not used: deepforest's ``test_tiled.tif`` (a 0.25 m/px Dutch aerial photo of a river, a
factory and roads, EPSG:28992) is coarser than the 0.16 m/px ``detect`` accepts for a 4 cm model.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

WHEEL = "deepforest-2.1.0-py3-none-any.whl"
# file in the wheel's deepforest/data -> (EPSG of its NEON site's UTM zone, tile west, tile north)
IMAGES = {
    "2019_YELL_2_528000_4978000_image_crop2.png": (32612, 528000, 4979000),
    "2019_YELL_2_541000_4977000_image_crop.png": (32612, 541000, 4978000),
    "OSBS_029.tif": None,  # already a GeoTIFF (EPSG:32617, 0.1 m)
    "SOAP_031.png": (32611, 290000, 4100000),
    "SOAP_061.png": (32611, 291000, 4100000),
}
GSD_M = 0.1

# Further real poppy-free sets (--extra): set name -> where its images come from and what they show.
# "files": member of the wheel's deepforest/data -> None (a GeoTIFF, kept as it is) or
# (EPSG, west, north, GSD m/px) to georeference it with.
EXTRA_CAVEAT = ("about 0.2 ha in all: a count of false plots on three small real scenes, not a rate to "
                "quote; no farmland; drone-pelicans' GSD is derived from its XMP (+-15 %)")
AWPE_GSD_M = 61.1 / 3666.666504  # XMP RelativeAltitude / CalibratedFocalLength (px) of the DJI frame
EXTRA = {
    "drone-australia": {
        "wheel": "deepforest-1.5.2-py3-none-any.whl", "requirement": "deepforest==1.5.2",
        "files": {"australia.tif": None},
        "source": "drone orthomosaic GeoTIFF (EPSG:32753, 0.018 m/px, SimActive Correlator3D) from "
                  "deepforest-1.5.2-py3-none-any.whl (deepforest/data/australia.tif)",
        "content": "tropical savanna woodland, northern Australia (trees, shrubs, grass, bare soil)",
    },
    "drone-pelicans": {
        "wheel": WHEEL, "requirement": "deepforest==2.1.0",
        "files": {"AWPE Pigeon Lake 2020 DJI_0005.JPG": (32615, 393767, 4988056, AWPE_GSD_M)},
        "source": "crop of a DJI Phantom 4 Pro (FC6310) frame, 61.1 m above take-off, gimbal -88 deg, "
                  f"from {WHEEL} (deepforest/data); GSD {AWPE_GSD_M:.5f} m/px assumed from its XMP "
                  "(RelativeAltitude / CalibratedFocalLength), +-15 %",
        "content": "pelican colony on a lake island, Minnesota (bare soil, grass, shrubs, dead wood, "
                   "~100 white birds)",
    },
    "neon-sjer": {
        "wheel": "deepforest-1.5.2-py3-none-any.whl", "requirement": "deepforest==1.5.2",
        "files": {"2018_SJER_3_252000_4107000_image_477.tif": None},
        "source": "NEON AOP RGB GeoTIFF crop (EPSG:32611, 0.1 m/px) from deepforest-1.5.2-py3-none-any.whl "
                  "(deepforest/data)",
        "content": "oak savanna with granite boulders, San Joaquin Experimental Range, California",
    },
}


class Failure(Exception):
    pass


def fetch_wheel(cache: Path, wheel: Path | None, name: str = WHEEL, requirement: str = "deepforest==2.1.0",
                option: str = "--wheel") -> Path:
    """``wheel`` when given, else ``cache/name``, pip-downloading ``requirement`` there when missing."""
    if wheel is not None:
        if not wheel.is_file():
            raise Failure(f"{option} '{wheel}' does not exist; pass the path of {name}")
        return wheel
    found = cache / name
    if found.is_file():
        return found
    cache.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", requirement, "--no-deps", "-d", str(cache), "-q"]
    run = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if run.returncode != 0 or not found.is_file():
        last = (run.stderr.strip().splitlines() or ["no output"])[-1]
        what = requirement.replace("==", " ")
        raise Failure(f"could not download {what} from PyPI ({last}); download {name} elsewhere "
                      f"and pass {option} PATH")
    return found


def prepare(wheel: Path, out: Path, images: dict | None = None, gsd_m: float = GSD_M,
            version: str = "2.1.0") -> list[Path]:
    """The ``images`` (default: the five NEON crops) from ``wheel`` as GeoTIFFs under ``out`` (written once).

    ``images`` maps a file in the wheel's deepforest/data to None (a GeoTIFF, kept as it is) or
    (EPSG, west, north[, GSD m/px]) to georeference it with (GSD default ``gsd_m``)."""
    import warnings

    import rasterio
    from rasterio.errors import NotGeoreferencedWarning
    from rasterio.transform import from_origin

    warnings.filterwarnings("ignore", category=NotGeoreferencedWarning)  # the PNG crops: georeferenced here
    images = IMAGES if images is None else images
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    try:
        zf = zipfile.ZipFile(wheel)
    except zipfile.BadZipFile:
        raise Failure(f"'{wheel}' is not a wheel (zip) file; download deepforest-{version}-py3-none-any.whl "
                      "again") from None
    with zf, tempfile.TemporaryDirectory() as tmp:
        for name, georef in images.items():
            dst = out / (Path(name).stem.replace(" ", "_") + ".tif")
            paths.append(dst)
            if dst.exists():
                continue
            try:
                src = Path(zf.extract(f"deepforest/data/{name}", tmp))
            except KeyError:
                raise Failure(f"'{wheel}' has no deepforest/data/{name}; "
                              f"pass deepforest {version}'s wheel") from None
            with rasterio.open(src) as ds:
                rgb = ds.read([1, 2, 3])
                gsd = georef[3] if georef is not None and len(georef) > 3 else gsd_m
                crs, transform = (ds.crs, ds.transform) if georef is None else (
                    f"EPSG:{georef[0]}", from_origin(georef[1], georef[2], gsd, gsd))
            part = dst.with_name(f".{dst.name}.part")
            with rasterio.open(part, "w", driver="GTiff", width=rgb.shape[2], height=rgb.shape[1], count=3,
                               dtype="uint8", crs=crs, transform=transform, tiled=True,
                               compress="deflate") as ds:
                ds.write(rgb)
            part.replace(dst)
    return paths


def prepare_extra(cache: Path, out: Path, wheels: dict[str, Path | None] | None = None,
                  sets: dict | None = None) -> dict[str, list[Path]]:
    """Each set of ``EXTRA`` (or ``sets``) -> its images as GeoTIFFs under ``out``; ``wheels`` maps a wheel's
    file name to a local copy (else it is pip-downloaded into ``cache``)."""
    wheels = wheels or {}
    sets = EXTRA if sets is None else sets
    found: dict[str, Path] = {}
    prepared = {}
    for name, spec in sets.items():
        if spec["wheel"] not in found:
            given = wheels.get(spec["wheel"])
            option = "--wheel" if spec["wheel"] == WHEEL else "--extra-wheel"
            found[spec["wheel"]] = fetch_wheel(cache, given, spec["wheel"], spec["requirement"], option)
        prepared[name] = prepare(found[spec["wheel"]], out, spec["files"],
                                 version=spec["requirement"].split("==")[1])
    return prepared


def image_rows(mosaics: list[Path], run: dict, plots) -> list[dict]:
    """One row per mosaic: its area and the plots detect found on it (all false: no poppy there)."""
    rows = []
    for i, (m, info) in enumerate(zip(mosaics, run["inputs"], strict=True)):
        # by input index where the plots carry it: file names need not be unique
        mine = plots[plots.mosaic_index == i] if "mosaic_index" in plots else plots[plots.mosaic == m.name]
        ha = float(info["width"] * info["height"] * info["gsd_m"] ** 2 / 1e4)
        rows.append({"image": m.name, "ha": round(ha, 3), "false_plots": len(mine),
                     "false_plots_per_ha": round(len(mine) / ha, 2),
                     "false_area_m2": round(float(mine.area_m2.sum()), 1)})
    return rows


def summary(rows: list[dict], plots, ndigits: int = 2) -> dict:
    """Totals over ``rows`` (from :func:`image_rows`); ``plots``: those rows' plots."""
    ha = sum(r["ha"] for r in rows)
    n = sum(r["false_plots"] for r in rows)
    areas = plots.area_m2.to_numpy()
    return {"hectares": round(ha, ndigits), "false_plots": n, "false_plots_per_ha": round(n / ha, 2),
            "false_plot_area_m2": {"median": float(np.median(areas)) if n else None,
                                   "max": float(areas.max()) if n else None}}


def run_detect(mosaics: list[Path], bundle: str, config) -> tuple[dict, object]:
    import geopandas as gpd

    from poppyscan.detect import detect

    with tempfile.TemporaryDirectory() as tmp:
        detect(mosaics, Path(tmp) / "run", config=config, model=bundle, overwrite=True, progress=False)
        run = json.loads((Path(tmp) / "run" / "run.json").read_text())
        plots = gpd.read_file(Path(tmp) / "run" / "plots.gpkg", layer="plots")
    return run, plots


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bundle", nargs="?", default="models/poppyscan-default")
    ap.add_argument("--data", type=Path, default=Path("/tmp/poppyscan-real"),
                    help="cache for the wheel and the GeoTIFFs (default %(default)s)")
    ap.add_argument("--wheel", type=Path, help=f"a downloaded {WHEEL} (default: pip download it)")
    ap.add_argument("--threshold", type=float, help="decision threshold (default: the bundle's)")
    ap.add_argument("--tta", action="store_true", help="average with the left-right flipped prediction")
    ap.add_argument("--min-gsd", type=float, metavar="M", help="as detect --min-gsd (default: the bundle's)")
    ap.add_argument("--threads", type=int, help="ONNX Runtime threads and streams (default: the config's)")
    ap.add_argument("--report", type=Path, help="write the JSON report here")
    ap.add_argument("--extra", action="store_true",
                    help=f"also run the further real sets ({', '.join(EXTRA)}), each reported on its own")
    ap.add_argument("--extra-wheel", type=Path, action="append", default=[],
                    help="a downloaded wheel the extra sets need (deepforest-1.5.2-py3-none-any.whl; "
                         "default: pip download it)")
    ap.add_argument("--extra-report", type=Path, help="write the extra sets' JSON report here")
    args = ap.parse_args(argv)
    if args.extra_report and not args.extra:
        ap.error("--extra-report needs --extra")
    from poppyscan.bundle import check_min_gsd
    from poppyscan.config import load_config
    from poppyscan.errors import PoppyscanError
    from poppyscan.model import read_meta

    try:
        check_min_gsd(read_meta(args.bundle), args.min_gsd, "--min-gsd")
    except PoppyscanError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        mosaics = prepare(fetch_wheel(args.data, args.wheel), args.data / "geotiff")
        if args.extra:
            wheels = {w.name: w for w in args.extra_wheel}
            needed = {spec["wheel"] for spec in EXTRA.values()} - {WHEEL}
            for w in args.extra_wheel:
                if w.name not in needed:
                    raise Failure(f"--extra-wheel '{w}' is not one of the wheels the extra sets need "
                                  f"({', '.join(sorted(needed))})")
            if args.wheel is not None:
                wheels[WHEEL] = args.wheel
            extra = prepare_extra(args.data, args.data / "geotiff-extra", wheels)
    except Failure as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    overrides = {"detect.run_tasks": False, "detect.tta": args.tta, "detect.min_gsd_m": args.min_gsd}
    if args.threshold is not None:
        overrides["detect.threshold"] = args.threshold
    if args.threads is not None:
        overrides["detect.threads"] = args.threads
        overrides["detect.streams"] = args.threads
    config = load_config(overrides=overrides)
    t0 = time.time()
    run, plots = run_detect(mosaics, args.bundle, config)
    rows = image_rows(mosaics, run, plots)
    totals = summary(rows, plots)
    n = totals["false_plots"]
    ha = sum(r["ha"] for r in rows)
    report = {
        "bundle": str(args.bundle), "version": run["model"]["version"],
        "threshold": run["params"]["threshold"],
        "min_prob_mean": run["params"].get("min_prob_mean", 0.0),
        "plot_scorer": run["params"].get("plot_scorer"),
        "min_plot_score": run["params"].get("min_plot_score"),
        "tta": args.tta, "min_gsd_m": run["params"].get("min_gsd_m"),
        "source": f"NEON AOP RGB crops at {GSD_M} m/px from {WHEEL} (deepforest/data)",
        **totals,
        "images": rows, "seconds": round(time.time() - t0, 1),
        "caveat": "10 cm/px is coarser than the 1.8-5.5 cm surveys the product targets; US landscapes",
    }
    for r in rows:
        print(f"{r['image']:45s} {r['ha']:6.2f} ha  {r['false_plots']:3d} false plots  "
              f"({r['false_plots_per_ha']:.2f} /ha)")
    print(f"total: {n} false plots on {ha:.2f} ha of real poppy-free imagery = {n / ha:.2f} per ha "
          f"(model {report['version']}, threshold {report['threshold']}{', TTA' if args.tta else ''}); "
          f"caveat: {report['caveat']}")
    if args.report:
        args.report.write_text(json.dumps(report, indent=2) + "\n")
    if args.extra:
        extra_report = evaluate_extra(extra, args, config)
        if args.extra_report:
            args.extra_report.write_text(json.dumps(extra_report, indent=2) + "\n")
    return 0


def evaluate_extra(extra: dict[str, list[Path]], args, config) -> dict:
    """A detect run per extra set (one CRS each, so no plot is measured in a far-away UTM zone); figures per
    set, printed and returned as a report."""
    t0 = time.time()
    sets = []
    print("further real poppy-free sets (every plot is a false plot):")
    for name, mosaics in extra.items():
        run, plots = run_detect(mosaics, args.bundle, config)
        rows = image_rows(mosaics, run, plots)
        totals = summary(rows, plots, ndigits=3)
        gsd = sorted({round(info["gsd_m"], 5) for info in run["inputs"]})
        sets.append({"name": name, "source": EXTRA[name]["source"], "content": EXTRA[name]["content"],
                     "gsd_m": gsd[0] if len(gsd) == 1 else gsd, **totals, "images": rows})
        print(f"{name:16s} {totals['hectares']:6.3f} ha  {totals['false_plots']:3d} false plots  "
              f"({totals['false_plots_per_ha']:.2f} /ha)  {EXTRA[name]['content']}")
    ha = sum(r["ha"] for st in sets for r in st["images"])
    n = sum(st["false_plots"] for st in sets)
    print(f"extra total: {n} false plots on {ha:.3f} ha = {n / ha:.2f} per ha "
          f"(model {run['model']['version']}, threshold {run['params']['threshold']}); "
          f"caveat: {EXTRA_CAVEAT}")
    return {
        "bundle": str(args.bundle), "version": run["model"]["version"],
        "threshold": run["params"]["threshold"], "min_prob_mean": run["params"].get("min_prob_mean", 0.0),
        "plot_scorer": run["params"].get("plot_scorer"),
        "min_plot_score": run["params"].get("min_plot_score"),
        "tta": args.tta, "min_gsd_m": run["params"].get("min_gsd_m"), "sets": sets,
        "hectares": round(ha, 3), "false_plots": n,
        "false_plots_per_ha": round(n / ha, 2),
        "not_used": {"deepforest-1.5.2 deepforest/data/test_tiled.tif":
                     "0.25 m/px Dutch aerial photo (EPSG:28992): coarser than the 0.16 m/px detect accepts"},
        "seconds": round(time.time() - t0, 1),
        "caveat": EXTRA_CAVEAT,
    }

if __name__ == "__main__":
    sys.exit(main())
