"""``poppyscan synth OUTDIR``: render a synthetic survey scene (mosaic.tif + truth.gpkg)."""

from __future__ import annotations

import click

from ..errors import ConfigError


@click.command("synth")
@click.argument("outdir", type=click.Path(file_okay=False, dir_okay=True))
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed; same seed, same scene.")
@click.option(
    "--size", type=int, default=1024, show_default=True, help="Width and height in pixels (64..20000)."
)
@click.option(
    "--gsd", type=float, default=0.04, show_default=True, help="Ground pixel size in metres (0.005..0.5)."
)
@click.option(
    "--crs",
    default="EPSG:32649",
    show_default=True,
    help="Output CRS, e.g. EPSG:4547 (CGCS2000 GK 114E), EPSG:32649, EPSG:4326.",
)
@click.option(
    "--alpha", "mask_mode", flag_value="alpha", default=True, help="RGBA with an alpha band (default)."
)
@click.option(
    "--rgb-nodata", "mask_mode", flag_value="nodata", help="RGB with nodata=0 outside the footprint."
)
@click.option("--no-mask", "mask_mode", flag_value="none", help="RGB, black margins, no mask.")
@click.option("--no-poppy", is_flag=True, help="No poppy plots (confusers only), for false-alarm tests.")
@click.option("--wild", is_flag=True,
              help="Wild land (meadow, shrubs, conifers, dead trees) instead of farmland; never any poppy.")
@click.option("--jpeg", is_flag=True, help="JPEG-in-GeoTIFF (smaller; not with --rgb-nodata).")
@click.option("--lon", type=float, default=114.5, show_default=True, help="Scene centre longitude (WGS84).")
@click.option("--lat", type=float, default=36.6, show_default=True, help="Scene centre latitude (WGS84).")
@click.option("--overwrite", is_flag=True, help="Replace an existing mosaic.tif / truth.gpkg.")
def synth(outdir, seed, size, gsd, crs, mask_mode, no_poppy, wild, jpeg, lon, lat, overwrite):
    """Render a synthetic drone orthomosaic with exact poppy plot polygons into OUTDIR."""
    from ..synth import render_scene

    if not (-180 <= lon <= 180 and -85 <= lat <= 85):
        raise ConfigError(
            f"'--lon/--lat' ({lon}, {lat}) out of range: give WGS84 degrees, e.g. --lon 114.5 --lat 36.6"
        )
    info = render_scene(
        outdir,
        seed=seed,
        size=size,
        gsd=gsd,
        crs=crs,
        mask_mode=mask_mode,
        poppy=not no_poppy,
        overwrite=overwrite,
        center_lonlat=(lon, lat),
        compress="jpeg" if jpeg else "deflate",
        landscape="wild" if wild else "farmland",
    )
    click.echo(
        f"wrote {info.mosaic} and {info.truth}: {info.scene_kind} scene, {info.n_plots} poppy plots "
        f"({info.plot_area_m2:.1f} m2), {info.n_confusers} confusers, {info.crs}, gsd {info.gsd} m"
    )
