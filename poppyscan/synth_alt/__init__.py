"""A second, independently written scene renderer, for evaluation only (never training, threshold
choice or hard-negative mining).

It draws drone-orthomosaic-like scenes a different way from :mod:`poppyscan.synth`: loess terraces and
strip fields planned as a parcel label map, plants as individual sprites splatted at plant positions,
a photo-patchwork camera (per-photo exposure and vignetting, seamline jumps, haze, chromatic
aberration, sharpening halos, JPEG). It shares only the georeferencing/file writers of
:mod:`poppyscan.synth.georef`, so its scenes are read exactly like the training renderer's.

- :func:`render_alt_scene` — render and write ``mosaic.tif`` + ``truth.gpkg`` (+ ``alt_meta.json``);
- :func:`render_alt_arrays` — render in memory (:class:`AltScene`).

Modules: ``prims`` (noise, splatting, rasterising), ``flora`` (poppy and other plants), ``land``
(landforms, hamlets, greenhouses, painting), ``optics`` (footprint and camera), ``scene``
(composition and output).
"""

from __future__ import annotations

from .scene import AltScene, render_alt_arrays, render_alt_scene, scene_params

__all__ = ["AltScene", "render_alt_arrays", "render_alt_scene", "scene_params"]
