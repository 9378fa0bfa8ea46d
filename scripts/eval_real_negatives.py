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


class Failure(Exception):
    pass


def fetch_wheel(cache: Path, wheel: Path | None) -> Path:
    if wheel is not None:
        if not wheel.is_file():
            raise Failure(f"--wheel '{wheel}' does not exist; pass the path of {WHEEL}")
        return wheel
    found = cache / WHEEL
    if found.is_file():
        return found
    cache.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "deepforest==2.1.0", "--no-deps", "-d", str(cache), "-q"]
    run = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if run.returncode != 0 or not found.is_file():
        last = (run.stderr.strip().splitlines() or ["no output"])[-1]
        raise Failure(f"could not download deepforest 2.1.0 from PyPI ({last}); download {WHEEL} elsewhere "
                      "and pass --wheel PATH")
    return found


def prepare(wheel: Path, out: Path) -> list[Path]:
    """The five crops as GeoTIFFs under ``out`` (written once)."""
    import warnings

    import rasterio
    from rasterio.errors import NotGeoreferencedWarning
    from rasterio.transform import from_origin

    warnings.filterwarnings("ignore", category=NotGeoreferencedWarning)  # the PNG crops: georeferenced here
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    try:
        zf = zipfile.ZipFile(wheel)
    except zipfile.BadZipFile:
        raise Failure(f"'{wheel}' is not a wheel (zip) file; download {WHEEL} again") from None
    with zf, tempfile.TemporaryDirectory() as tmp:
        for name, georef in IMAGES.items():
            dst = out / (Path(name).stem + ".tif")
            paths.append(dst)
            if dst.exists():
                continue
            try:
                src = Path(zf.extract(f"deepforest/data/{name}", tmp))
            except KeyError:
                raise Failure(f"'{wheel}' has no deepforest/data/{name}; "
                              "pass deepforest 2.1.0's wheel") from None
            with rasterio.open(src) as ds:
                rgb = ds.read([1, 2, 3])
                crs, transform = (ds.crs, ds.transform) if georef is None else (
                    f"EPSG:{georef[0]}", from_origin(georef[1], georef[2], GSD_M, GSD_M))
            part = dst.with_name(f".{dst.name}.part")
            with rasterio.open(part, "w", driver="GTiff", width=rgb.shape[2], height=rgb.shape[1], count=3,
                               dtype="uint8", crs=crs, transform=transform, tiled=True,
                               compress="deflate") as ds:
                ds.write(rgb)
            part.replace(dst)
    return paths


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bundle", nargs="?", default="models/poppyscan-default")
    ap.add_argument("--data", type=Path, default=Path("/tmp/poppyscan-real"),
                    help="cache for the wheel and the GeoTIFFs (default %(default)s)")
    ap.add_argument("--wheel", type=Path, help=f"a downloaded {WHEEL} (default: pip download it)")
    ap.add_argument("--threshold", type=float, help="decision threshold (default: the bundle's)")
    ap.add_argument("--tta", action="store_true", help="average with the left-right flipped prediction")
    ap.add_argument("--report", type=Path, help="write the JSON report here")
    args = ap.parse_args(argv)
    try:
        mosaics = prepare(fetch_wheel(args.data, args.wheel), args.data / "geotiff")
    except Failure as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    import geopandas as gpd

    from poppyscan.config import load_config
    from poppyscan.detect import detect

    overrides = {"detect.run_tasks": False, "detect.tta": args.tta}
    if args.threshold is not None:
        overrides["detect.threshold"] = args.threshold
    config = load_config(overrides=overrides)
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        detect(mosaics, Path(tmp) / "run", config=config, model=args.bundle, overwrite=True, progress=False)
        run = json.loads((Path(tmp) / "run" / "run.json").read_text())
        plots = gpd.read_file(Path(tmp) / "run" / "plots.gpkg", layer="plots")
    rows = []
    for m, info in zip(mosaics, run["inputs"], strict=True):
        mine = plots[plots.mosaic == m.name]
        ha = float(info["width"] * info["height"] * info["gsd_m"] ** 2 / 1e4)
        rows.append({"image": m.name, "ha": round(ha, 3), "false_plots": len(mine),
                     "false_plots_per_ha": round(len(mine) / ha, 2),
                     "false_area_m2": round(float(mine.area_m2.sum()), 1)})
    ha = sum(r["ha"] for r in rows)
    n = sum(r["false_plots"] for r in rows)
    areas = plots.area_m2.to_numpy()
    report = {
        "bundle": str(args.bundle), "version": run["model"]["version"],
        "threshold": run["params"]["threshold"],
        "tta": args.tta, "source": f"NEON AOP RGB crops at {GSD_M} m/px from {WHEEL} (deepforest/data)",
        "hectares": round(ha, 2), "false_plots": n, "false_plots_per_ha": round(n / ha, 2),
        "false_plot_area_m2": {"median": float(np.median(areas)) if n else None,
                               "max": float(areas.max()) if n else None},
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
