#!/usr/bin/env python
"""Fine-tune the default model on your own labelled orthomosaics (a thin wrapper over `poppyscan train`).

    python scripts/retrain.py SCENES... --out runs/retrain-2025 [--bundle-out models/poppyscan-local]

SCENES are scene directories (mosaic.tif + truth.gpkg), directories of them, a CSV with columns
``mosaic,labels`` or a YAML list of ``{mosaic: ..., labels: ...}``. Labels are polygons in any CRS:
poppy plots, plus optionally hard negatives -- polygons with ``label: not_poppy`` (e.g. the plots your
desk review or field teams rejected) or a ``confusers`` layer. A mosaic without labels counts as
poppy-free. Alpha/nodata areas are ignored in the loss. Validation is split by scene.

Defaults: start from models/poppyscan-default (``--scratch`` to train from random weights), 10 epochs of
200 steps at a lower learning rate (5e-4). Re-run with ``--resume`` to continue an interrupted run.
Any other option is passed to `poppyscan train` (see `poppyscan train --help`).

From the field (the survey register's verified results), compared and promoted only when better:

    python scripts/retrain.py --from-survey survey_register.gpkg --holdout heldout/ [--scenes more/] \
        --out runs/retrain-2026 --promote-to models/poppyscan-default

runs `poppyscan retrain` with ``--current models/poppyscan-default`` unless ``--current`` is given and the
same training defaults; see docs/SURVEY.md ("Retraining from field results").
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    sys.path.insert(0, str(REPO))
    from poppyscan.cli import main as cli_main

    args = ["train"]
    if "--from-survey" in argv:
        args = ["retrain"]
        if "--current" not in argv:
            args += ["--current", str(REPO / "models" / "poppyscan-default")]
    elif "--scratch" in argv:
        argv.remove("--scratch")
    elif "--init" not in argv:
        args += ["--init", str(REPO / "models" / "poppyscan-default")]
    defaults = {
        "--epochs": "10",
        "--steps-per-epoch": "200",
        "--lr": "0.0005",
        "--name": "poppyscan-retrained",
    }
    if args[0] == "retrain":
        del defaults["--name"]  # the new bundle keeps the current one's name
    for opt, value in defaults.items():
        if opt not in argv:
            args += [opt, value]
    return cli_main(args + argv)


if __name__ == "__main__":
    sys.exit(main())
