#!/usr/bin/env python
"""Regenerate sample_tiles/: small synthetic scenes (mosaic.tif + truth.gpkg) covering the CRSs and mask
modes the pipeline must handle: alpha band, nodata=0, a JPEG-in-GeoTIFF with an internal mask band,
and black margins without any mask. Deterministic: rerunning rewrites identical pixels.

    .venv/bin/python scripts/make_sample_tiles.py [--out sample_tiles]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from poppyscan.synth import render_scene

# name: (seed, size, gsd, crs, mask_mode, poppy, compress)
SAMPLES = {
    "cgcs2000_gk114_alpha": (21, 1024, 0.04, "EPSG:4547", "alpha", True, "deflate"),
    "utm49n_nodata": (22, 1024, 0.03, "EPSG:32649", "nodata", True, "deflate"),
    "wgs84_mask_jpeg": (23, 1024, 0.05, "EPSG:4326", "alpha", True, "jpeg"),
    "utm49n_nopoppy_nomask": (24, 768, 0.035, "EPSG:32649", "none", False, "jpeg"),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="sample_tiles")
    args = ap.parse_args()
    total = 0
    for name, (seed, size, gsd, crs, mask, poppy, compress) in SAMPLES.items():
        info = render_scene(
            Path(args.out) / name,
            seed=seed,
            size=size,
            gsd=gsd,
            crs=crs,
            mask_mode=mask,
            poppy=poppy,
            overwrite=True,
            compress=compress,
        )
        mb = (info.mosaic.stat().st_size + info.truth.stat().st_size) / 1e6
        total += mb
        print(
            f"{name}: {info.scene_kind}, {info.n_plots} plots ({info.plot_area_m2:.0f} m2), "
            f"{info.n_confusers} confusers, {crs}, {mask}, {compress}, {mb:.2f} MB"
        )
    print(f"total {total:.2f} MB")


if __name__ == "__main__":
    main()
