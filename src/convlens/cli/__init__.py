"""The ``convlens`` command line: a thin typer app. Each command parses its options, calls one
library function, and renders the returned dataclass as a table (humans) or JSON (``--json``, stdout
only). A :class:`~convlens.errors.ConvlensError` becomes one line on stderr and exit status 2.

Commands live in one module per concern (``convlens.cli.<concern>``), each with ``register(app)``.

Example:
    >>> main(["no-such-command"])  # a usage error: one message on stderr, exit status 2
    2
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Sequence

import typer
import typer.main

try:  # typer >= 0.20 vendors its own click; older typer uses click itself
    from typer._click.exceptions import ClickException
except ImportError:  # pragma: no cover
    from click import ClickException

from convlens.errors import ConvlensError, RandomWeightsWarning

__all__ = ["app", "main"]

app = typer.Typer(
    name="convlens",
    help="Every core idea of convolutional networks, computable and inspectable on real models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

# One module per concern; each adds its commands. Order = order in --help.
_COMMAND_MODULES = ("arith", "models", "explain", "featvis", "train", "vision", "tour")


def _register_all() -> None:
    import importlib

    for name in _COMMAND_MODULES:
        module = importlib.import_module(f"convlens.cli.{name}")
        module.register(app)


_register_all()


def _loud_random_weights(shown: set[str]):  # -> a warnings.showwarning replacement
    """Print each :class:`RandomWeightsWarning` ONCE per run as a loud ``WARNING:`` line on stderr (however many
    times the model is loaded); every other warning goes to Python's usual display."""
    previous = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001, ANN202
        if isinstance(category, type) and issubclass(category, RandomWeightsWarning):
            text = str(message)
            if text not in shown:
                shown.add(text)
                print(f"WARNING: {text}", file=sys.stderr, flush=True)
            return
        previous(message, category, filename, lineno, file, line)

    return show


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 2 user error, 1 unexpected failure)."""
    with warnings.catch_warnings():  # restores the caller's filters and display on return
        warnings.simplefilter("always", RandomWeightsWarning)  # deduplicated by _loud_random_weights
        warnings.showwarning = _loud_random_weights(set())
        return _main(argv)


def _main(argv: Sequence[str] | None) -> int:
    command = typer.main.get_command(app)
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        result = command.main(args=args, prog_name="convlens", standalone_mode=False)
    except ConvlensError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except typer.Exit as e:
        return int(getattr(e, "exit_code", 0) or 0)
    except ClickException as e:
        e.show(file=sys.stderr)
        return int(e.exit_code if e.exit_code is not None else 2)
    except typer.Abort:
        print("aborted.", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("interrupted.", file=sys.stderr)
        return 130
    return int(result) if isinstance(result, int) else 0
