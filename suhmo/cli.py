"""The ``suhmo`` command: train, generate, render, animate, evaluate, data, metrics, best-export.

Subcommands are imported lazily so that ``suhmo --help`` is fast and each command only
pays for what it uses. Commands that live outside ``suhmo/`` (``best-export`` needs
MLflow, which this package must not import) plug in through the ``suhmo.commands``
entry-point group.
"""

from __future__ import annotations

import importlib
import sys
from importlib.metadata import entry_points

import click

# name -> "module:attribute" inside suhmo/
_BUILTIN = {
    "train": "suhmo.commands.train:train",
    "generate": "suhmo.commands.generate:generate",
    "render": "suhmo.commands.render:render",
    "animate": "suhmo.commands.animate:animate",
    "evaluate": "suhmo.commands.evaluate:evaluate",
    "data": "suhmo.commands.data:data",
    "metrics": "suhmo.commands.metrics:metrics",
}


def _plugins() -> dict[str, str]:
    return {ep.name: ep.value for ep in entry_points(group="suhmo.commands")}


class LazyGroup(click.Group):
    def __init__(self, *args, table: dict[str, str] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._table = table

    def _all(self) -> dict[str, str]:
        table = dict(self._table or {})
        if self._table is _BUILTIN:
            table.update(_plugins())
        return table

    def list_commands(self, ctx):
        return sorted(set(super().list_commands(ctx)) | set(self._all()))

    def get_command(self, ctx, name):
        cmd = super().get_command(ctx, name)
        if cmd is not None:
            return cmd
        target = self._all().get(name)
        if target is None:
            return None
        module, attr = target.split(":")
        try:
            return getattr(importlib.import_module(module), attr)
        except ModuleNotFoundError as e:
            reason = f"command {name!r} is unavailable: {e}"
            if e.name == "torch":
                reason += "; " + TORCH_HINT

            def _unavailable() -> None:
                raise click.ClickException(reason)

            return click.Command(name, callback=_unavailable, help=f"(unavailable: {e})")


@click.group(cls=LazyGroup, table=_BUILTIN, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="suhmo")
def cli() -> None:
    """SUHMo head-motion generation: train, generate, render and evaluate models."""


TORCH_HINT = ("this environment has no torch: install it pinned, pip install torch==2.13.0 "
              "(the .venv-video recipe in the README does)")


def run_cli(group: click.Group, argv: list[str] | None = None) -> int:
    """Run a click group turning user-facing errors into one-line messages (exit 2)."""
    from suhmo.config import ConfigError
    from suhmo.utils import DiskFullError, SuhmoError, disk_full_cause

    try:
        group.main(args=argv, standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        return 130
    except click.ClickException as e:
        e.show()
        return e.exit_code
    except click.exceptions.Exit as e:
        return e.exit_code
    except (ConfigError, SuhmoError) as e:
        click.echo(f"Error: {e}", err=True)
        return 2
    except ModuleNotFoundError as e:
        if e.name != "torch":  # e.g. a venv made for videos without the model's dependency
            raise
        click.echo(f"Error: {TORCH_HINT} ({e})", err=True)
        return 2
    except ValueError as e:  # DataError and friends subclass ValueError with a clear message
        if type(e).__module__.startswith(("suhmo", "launch", "tracking")):
            click.echo(f"Error: {e}", err=True)
            return 2
        raise
    except Exception as e:  # a full disk met by a write that does not say it itself
        full = disk_full_cause(e)
        if full is None:
            raise
        click.echo(f"Error: {DiskFullError(full.filename or '.')}", err=True)
        return 2
    return 0


def main(argv: list[str] | None = None) -> None:
    sys.exit(run_cli(cli, argv))
