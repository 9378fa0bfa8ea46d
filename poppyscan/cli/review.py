"""``poppyscan review RUN_DIR``: desk-review a run's plots in the browser (local web server)."""

from __future__ import annotations

import threading
import webbrowser
from pathlib import Path

import click

from ..review import store
from ..review.server import CHIP_PX, CHIP_SIZE_M, DEFAULT_PORT, make_server


@click.command("review")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=None,
    help=f"Port to listen on [default: {DEFAULT_PORT}, or any free port when it is taken; 0 = any].",
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on. Keep the loopback default: anyone who can reach it can change decisions.",
)
@click.option("--reviewer", default=None, help="Name saved with each decision [default: your login name].")
@click.option("--no-browser", is_flag=True, help="Only print the URL; do not open a browser.")
@click.option(
    "--chip-size-m",
    type=click.FloatRange(2, 500),
    default=CHIP_SIZE_M,
    show_default=True,
    help="Least ground width of a plot chip in metres (grows to fit large plots).",
)
@click.option(
    "--chip-px",
    type=click.IntRange(64, 2048),
    default=CHIP_PX,
    show_default=True,
    help="Chip width and height in pixels.",
)
@click.option(
    "--export-hard-negatives",
    "hard_negatives",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the rejected plots to this GeoPackage (layer hard_negatives) and exit; an existing file "
    "is refused unless --overwrite.",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing --export-hard-negatives file.")
def review(
    run_dir: Path,
    port: int | None,
    host: str,
    reviewer: str | None,
    no_browser: bool,
    chip_size_m: float,
    chip_px: int,
    hard_negatives: Path | None,
    overwrite: bool,
) -> None:
    """Desk-review RUN_DIR: mark each plot confirmed / rejected / unsure before field work.

    Every decision is saved at once to RUN_DIR/review.json; rejected plots are left out of
    `poppyscan tasks` and written to RUN_DIR/hard_negatives.gpkg for retraining.
    """
    if hard_negatives is not None:
        store.read_plot_ids(run_dir)
        out = store.export_hard_negatives(run_dir, hard_negatives, overwrite=overwrite)
        click.echo(f"wrote {len(store.rejected_plot_ids(run_dir))} rejected plot(s) to {out}")
        return
    server = make_server(
        run_dir, port=port, host=host, reviewer=reviewer, chip_size_m=chip_size_m, chip_px=chip_px
    )
    total = len(server.run.ids)
    done = len(store.load_decisions(run_dir))
    click.echo(f"Reviewing {total} plot(s) of {run_dir} ({done} already reviewed) at {server.url}")
    click.echo("Decisions are saved as you make them; press Ctrl-C to stop the server.")
    if not no_browser:
        threading.Thread(target=webbrowser.open, args=(server.url,), daemon=True).start()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    click.echo(
        f"Stopped. {len(store.load_decisions(run_dir))} of {total} plot(s) reviewed; "
        f"decisions in {store.review_path(run_dir)}"
    )
