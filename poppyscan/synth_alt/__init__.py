"""A second, independently written scene renderer, written to evaluate the model on scenes drawn
another way. Its held-out seeds (904000-904915, ``scripts/eval_alt.py``) are never trained on, used for
a threshold or mined; stage 6 of the default model (``scripts/train_default_stage6.yaml``) trains on
other seeds of it (905000-905239, validation 905500-905515) beside the first renderer's scenes, so for
a model trained that way the held-out set measures another seed range, not unseen imagery.

It draws drone-orthomosaic-like scenes a different way from :mod:`poppyscan.synth`: loess terraces and
strip fields planned as a parcel label map, plants as individual sprites splatted at plant positions,
a photo-patchwork camera (per-photo exposure and vignetting, seamline jumps, haze, chromatic
aberration, sharpening halos, JPEG). It shares only the georeferencing/file writers of
:mod:`poppyscan.synth.georef`, so its scenes are read exactly like the training renderer's.

- :func:`render_alt_scene` — render and write ``mosaic.tif`` + ``truth.gpkg`` (+ ``alt_meta.json``);
- :func:`render_alt_arrays` — render in memory (:class:`AltScene`).

Modules: ``prims`` (noise, splatting, rasterising), ``flora`` (poppy and other plants), ``land``
(planning landforms, hamlets, greenhouses), ``paint`` (painting parcels and buildings), ``optics``
(footprint and camera), ``scene`` (composition and output).
"""

from __future__ import annotations

from .scene import AltScene, render_alt_arrays, render_alt_scene, scene_params

__all__ = ["AltScene", "render_alt_arrays", "render_alt_scene", "scene_params"]
