"""The synthetic survey renderer: drone-orthomosaic-like scenes of North-China-plain farmland and
villages with exact poppy plot polygons and labelled confusers.

No public labelled poppy drone imagery exists, so models learn from these scenes. The public API:

- :func:`render_arrays` — render in memory (RGB, valid mask, poppy mask, polygons in pixel coordinates);
- :func:`render_scene` — render and write ``mosaic.tif`` + ``truth.gpkg`` in any CRS;
- :class:`SceneArrays`, :class:`SceneInfo` — their results.

Modules: ``noise`` (primitives), ``materials`` (ground textures), ``plants`` (poppy and plant confusers),
``layout`` (fields, roads, hamlets), ``camera`` (footprint and photometric effects), ``scene``
(composition), ``georef`` (CRS, transform, file output).
"""

from __future__ import annotations

from .georef import MASK_MODES, SceneInfo, parse_crs, render_scene, scene_transform
from .scene import SceneArrays, render_arrays

__all__ = [
    "MASK_MODES",
    "SceneArrays",
    "SceneInfo",
    "parse_crs",
    "render_arrays",
    "render_scene",
    "scene_transform",
]
