#!/usr/bin/env python
"""Measure a bundle on scenes drawn by the independent renderer ``poppyscan.synth_alt``.

    python scripts/eval_alt.py models/poppyscan-default --threads 1 \
        --report models/poppyscan-default-eval-alt.json

Renders (once; existing scenes are kept) 32 poppy scenes of 1024 px, 8 per GSD band 2-3, 3-4.5, 4.5-6
and 6-8 cm (seeds 904000 + 100 x band + k, ``poppy_alt``), and 16 poppy-free scenes of 2048 px, GSD
2-8 cm (seeds 904900-904915, ``poppy_free_alt``). The scenes are never to be used for training,
threshold choice or hard-negative mining: they stand in for imagery drawn another way.

``--seeds 907000,907900`` renders and scores another seed range (stage 6's second decision used it);
``--update-bundle`` stores the summary in ``bundle.json`` metrics (``heldout_alt_renderer``, or
``heldout_alt_renderer_<first seed>``).

Scoring is ``scripts/eval_default.py``'s, unchanged (imported, not copied): every scene runs through
``poppyscan.detect`` at the bundle's threshold, minimum plot 1 m², matched one-to-one at IoU >= 0.25;
per-band table, recall by stage / setting / size, false plots per hectare on the poppy-free scenes.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
POPPY_SEED, FREE_SEED, PER_BAND, N_FREE = 904000, 904900, 8, 16


def _eval_default_module():
    spec = importlib.util.spec_from_file_location("eval_default", HERE / "eval_default.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def render_alt_set(root: Path, bands: list[tuple[float, float]], poppy_seed: int = POPPY_SEED,
                   free_seed: int = FREE_SEED, n_free: int = N_FREE) -> list[Path]:
    """Render the alternative-renderer test set under ``root`` (skipping complete scenes); its dirs.
    Other first seeds than the default ones go into folders named after them."""
    from poppyscan.synth_alt import render_alt_scene

    tag = "" if (poppy_seed, free_seed) == (POPPY_SEED, FREE_SEED) else f"_{poppy_seed}"
    jobs = [
        (root / f"poppy_alt{tag}", poppy_seed + 100 * i + k, 1024, True, band)
        for i, band in enumerate(bands)
        for k in range(PER_BAND)
    ]
    jobs += [(root / f"poppy_free_alt{tag}", free_seed + k, 2048, False, (0.02, 0.08)) for k in range(n_free)]
    dirs = []
    for parent, seed, size, poppy, band in jobs:
        d = parent / f"scene_{seed}"
        if not all((d / f).is_file() for f in ("mosaic.tif", "truth.gpkg", "alt_meta.json")):
            t0 = time.time()
            render_alt_scene(seed, d, size=size, poppy=poppy, gsd_range=band, overwrite=True)
            meta = json.loads((d / "alt_meta.json").read_text(encoding="utf-8"))
            print(
                f"rendered {d} ({meta['landform']}, {meta['gsd'] * 100:.1f} cm, {meta['crs']}, "
                f"{meta['n_plots']} plots, {time.time() - t0:.0f} s)",
                flush=True,
            )
        dirs.append(d)
    return dirs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle", nargs="?", default="models/poppyscan-default")
    ap.add_argument("--data", type=Path, default=Path("/tmp/poppy_data/test_alt"))
    ap.add_argument("--report", type=Path, help="write the JSON report here")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--update-bundle", action="store_true",
                    help="store the summary in bundle.json metrics (heldout_alt_renderer[_SEED])")
    ap.add_argument("--seeds", default=f"{POPPY_SEED},{FREE_SEED}",
                    help="first seeds of the poppy and the poppy-free scenes (another held-out set, e.g. "
                    "907000,907900 for stage 6's second decision)")
    ap.add_argument("--tta", action="store_true", help="flip test-time augmentation (detect --tta)")
    ap.add_argument("--min-gsd", type=float, metavar="M", help="as detect --min-gsd (default: the bundle's)")
    ap.add_argument("--free-count", type=int, default=N_FREE, metavar="N",
                    help=f"poppy-free scenes (1-99, default {N_FREE})")
    args = ap.parse_args(argv)
    n_free = args.free_count
    if args.tta and args.update_bundle:
        ap.error("--tta and --update-bundle: the bundle's metrics are for detect without TTA (its default); "
                 "write TTA figures with --report")
    if not 1 <= n_free <= 99:
        ap.error(f"--free-count must be in 1-99, not {n_free}")
    try:
        poppy_seed, free_seed = (int(v) for v in args.seeds.split(","))
    except ValueError:
        ap.error(f"--seeds takes two integers 'POPPY,FREE', got {args.seeds!r}")

    if args.min_gsd is not None:  # before rendering, which can take many minutes
        if args.update_bundle:
            ap.error("--min-gsd and --update-bundle: the bundle's metrics are for its own min_gsd_m; write "
                     "the figures with --report")
        from poppyscan.bundle import check_min_gsd
        from poppyscan.errors import PoppyscanError
        from poppyscan.model import read_meta

        try:
            check_min_gsd(read_meta(args.bundle), args.min_gsd, "--min-gsd")
        except PoppyscanError as exc:
            ap.error(str(exc))
    ev = _eval_default_module()
    dirs = render_alt_set(args.data, ev.BANDS, poppy_seed, free_seed, n_free)
    ev.render_test_set = lambda root, **kw: dirs  # score these scenes with eval_default's own loop
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "report.json"
        described = (
            f"{PER_BAND * 4} poppy scenes (1024 px, seeds {poppy_seed}-{poppy_seed + 307}) + {n_free} "
            f"poppy-free (2048 px, seeds {free_seed}-{free_seed + n_free - 1}) drawn by "
            "poppyscan.synth_alt, the independently written renderer; GSD 2-8 cm")
        key = "heldout_alt_renderer" + ("" if (poppy_seed, free_seed) == (POPPY_SEED, FREE_SEED)
                                        else f"_{poppy_seed}")
        rc = ev.main(
            [str(args.bundle), "--data", str(args.data), "--threads", str(args.threads), "--report", str(raw)]
            + (["--tta"] if args.tta else [])
            + (["--min-gsd", str(args.min_gsd)] if args.min_gsd is not None else [])
            + (["--update-bundle", "--metrics-key", key, "--metrics-scenes", described]
               if args.update_bundle else [])
        )
        report = json.loads(raw.read_text(encoding="utf-8"))
    seeds = (f"alt renderer: {poppy_seed}-{poppy_seed + 307} (8 per GSD band, 1024 px), "
             f"{free_seed}-{free_seed + n_free - 1} (poppy-free, 2048 px)")
    report["test_seeds"] = seeds + "; training and validation used 10000-10815 of poppyscan.synth"
    report["renderer"] = (
        "poppyscan.synth_alt: an independently written renderer (loess terraces / strip "
        "fields, plant sprites, photo-patchwork camera), used for evaluation only"
    )
    summary = report["summary"]
    f = summary.get("poppy_free", {})
    ha = f.get("valid_area_ha") or 0.0
    print("\nalt renderer, per GSD band (TP/FP/FN, F1):")
    for key in sorted(k for k in summary if k.startswith("gsd_")) + ["poppy"]:
        s = summary.get(key, {})
        f1 = s.get("f1")
        print(
            f"  {key:16s} {s.get('tp')}/{s.get('fp')}/{s.get('fn')}  F1 "
            + (f"{f1:.3f}" if f1 is not None else "-")
        )
    print(
        f"  poppy-free: {f.get('fp')} false plots on {ha:.2f} ha -> "
        f"{f.get('false_plots_per_ha')} false plots/ha"
    )
    if args.report:
        args.report.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        print(f"report written to {args.report}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
