"""The ``poppyscan`` command: a click group, one module per user job under ``poppyscan/cli/``.

Each subcommand is a thin wrapper over a library function. Subcommand modules are imported lazily so
``poppyscan --help`` is fast and a heavy import (torch) is paid only by the command that needs it.
Errors derived from :class:`~poppyscan.errors.PoppyscanError` are printed as one line
(``poppyscan: error: ...``) with their exit code, never a traceback.
"""

from __future__ import annotations

import importlib
import logging
import sys

import click

from .. import __version__
from ..errors import IO_EXIT_CODE, PoppyscanError, describe_os_error

# name -> (module under poppyscan.cli, attribute, one-line help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "synth": ("synth", "synth", "Render a synthetic survey scene (mosaic.tif + truth.gpkg)."),
    "detect": ("detect", "detect", "Detect poppy plots in orthomosaics (the main job)."),
    "train": ("train", "train", "Train or fine-tune a model bundle on labelled mosaics."),
    "evaluate": ("evaluate", "evaluate", "Score detections against truth polygons."),
    "retrain": ("retrain", "retrain", "Retrain from field results; promote only a better bundle."),
    "export-onnx": ("train", "export_onnx", "Export a bundle's torch weights to ONNX."),
    "tasks": ("tasks", "tasks", "Turn a detect run into field-verification task lists."),
    "review": ("review", "review", "Desk-review a run's plots in the browser."),
    "results": ("results", "results", "Import field results into the survey register."),
    "stats": ("stats", "stats", "Statistics from the survey register."),
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name in COMMANDS if self._available(name)]

    @staticmethod
    def _available(name: str) -> bool:
        module = COMMANDS[name][0]
        return importlib.util.find_spec(f"poppyscan.cli.{module}") is not None

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS or not self._available(name):
            return None
        module, attr, _ = COMMANDS[name]
        return getattr(importlib.import_module(f"poppyscan.cli.{module}"), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][2]) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="poppyscan")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors; no progress bars.")
@click.pass_context
def cli(ctx: click.Context, verbose: int, quiet: bool) -> None:
    """poppyscan: find opium-poppy plots in drone orthomosaics and turn them into field work."""
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    # other libraries (pyogrio, distributed, ...) log at INFO too: only their warnings unless -v
    others = logging.WARNING if quiet or not verbose else level
    logging.basicConfig(
        level=others, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    logging.getLogger("poppyscan").setLevel(level)
    ctx.ensure_object(dict)
    ctx.obj["quiet"] = quiet


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point: run the CLI, turning poppyscan errors into one-line messages."""
    try:
        cli.main(args=argv, prog_name="poppyscan", standalone_mode=False)
    except PoppyscanError as exc:
        click.echo(f"poppyscan: error: {exc}", err=True)
        return exc.exit_code
    except click.exceptions.Abort:
        click.echo("poppyscan: aborted", err=True)
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except KeyboardInterrupt:
        click.echo("poppyscan: interrupted", err=True)
        return 130
    except OSError as exc:  # a path the checks did not foresee (permissions, a file in the way, full disk)
        logging.getLogger("poppyscan").debug("operating-system error", exc_info=True)
        click.echo(f"poppyscan: error: {describe_os_error(exc)}", err=True)
        return IO_EXIT_CODE
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


def run() -> None:
    """Entry point for the ``poppyscan`` console script."""
    sys.exit(main())
