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
_COMMAND_MODULES = ("arith", "models", "unit", "explain", "featvis", "train", "vision", "tour", "serve")


def _register_all() -> None:
    import importlib

    for name in _COMMAND_MODULES:
        module = importlib.import_module(f"convlens.cli.{name}")
        module.register(app)


@app.callback()
def _global_options(
    threads: int | None = typer.Option(
        None,
        "--threads",
        help="torch CPU threads for this run (also CONVLENS_THREADS; may follow the command name). "
        "Default: OMP_NUM_THREADS if set, else the free cores (usable cores minus the 1-minute load "
        "average, 1..8), so a busy machine is not oversubscribed.",
    ),
    max_pixels: int | None = typer.Option(
        None,
        "--max-pixels",
        help="largest image (in pixels) any command reads; larger files are refused before decoding "
        "(default 64,000,000; 0 = no limit; also CONVLENS_MAX_PIXELS; may follow the command name).",
    ),
) -> None:
    """Every core idea of convolutional networks, computable and inspectable on real models."""
    import os

    from convlens.runtime import apply_threads, resolve_threads

    apply_threads(resolve_threads(threads))
    if max_pixels is not None:  # read by convlens.io.load_image wherever an image is read
        if max_pixels < 0:
            raise ConvlensError(f"--max-pixels must be >= 0 (0 = no limit), got {max_pixels}.")
        os.environ["CONVLENS_MAX_PIXELS"] = str(max_pixels)


_register_all()

_GLOBAL_OPTIONS = ("--threads", "--max-pixels")  # options of the app that may also be written after the command name


def _command_index(args: list[str]) -> int | None:
    """Index of the command name: the first token that is neither an option nor a global option's value."""
    i = 0
    while i < len(args):
        if args[i] in _GLOBAL_OPTIONS:
            i += 2
            continue
        if not args[i].startswith("-"):
            return i
        i += 1
    return None


def _hoist_global_options(args: list[str], own: frozenset[str] = frozenset()) -> list[str]:
    """Move ``--threads N`` / ``--threads=N`` (and ``--max-pixels``) written after the command name to before
    it, where click reads the app's own options (so ``convlens cam x.png --threads 2`` works like
    ``convlens --threads 2 cam``). Options the command itself defines (``own``) stay where they are."""
    command = _command_index(args)
    if command is None:
        return args
    hoist = tuple(o for o in _GLOBAL_OPTIONS if o not in own)
    if "--" in args:
        stop = args.index("--")
        head, tail = args[:stop], args[stop:]
    else:
        head, tail = args, []
    moved: list[str] = []
    rest: list[str] = head[: command + 1]
    i = command + 1
    while i < len(head):
        a = head[i]
        if a in hoist and i + 1 < len(head):
            moved += [a, head[i + 1]]
            i += 2
            continue
        if a.split("=")[0] in hoist and "=" in a:
            moved.append(a)
        else:
            rest.append(a)
        i += 1
    return moved + rest + tail


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


def _one_line(e: ClickException) -> str:
    """Click's message as one sentence, naming the command whose ``--help`` explains the options."""
    msg = " ".join(e.format_message().split())
    ctx = getattr(e, "ctx", None)
    where = f"`{ctx.command_path} --help`" if ctx is not None and ctx.command_path else "`convlens --help`"
    if not msg.endswith((".", "?", "!")):
        msg += "."
    return f"{msg} See {where}."


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 2 user error, 1 unexpected failure)."""
    with warnings.catch_warnings():  # restores the caller's filters and display on return
        warnings.simplefilter("always", RandomWeightsWarning)  # deduplicated by _loud_random_weights
        warnings.showwarning = _loud_random_weights(set())
        rc = 1
        import os

        saved_limit = os.environ.get("CONVLENS_MAX_PIXELS")  # --max-pixels holds for this run only
        try:
            rc = _main(argv)
        finally:
            if saved_limit is None:
                os.environ.pop("CONVLENS_MAX_PIXELS", None)
            else:
                os.environ["CONVLENS_MAX_PIXELS"] = saved_limit
            from convlens.cli.common import forget_created_dirs, remove_created_empty_dirs

            # a failed command leaves no empty output folder behind
            remove_created_empty_dirs() if rc != 0 else forget_created_dirs()
        return rc


def _main(argv: Sequence[str] | None) -> int:
    command = typer.main.get_command(app)
    args = list(sys.argv[1:] if argv is None else argv)
    k = _command_index(args)
    sub = command.commands.get(args[k]) if k is not None and hasattr(command, "commands") else None
    own = frozenset(o for p in getattr(sub, "params", []) for o in getattr(p, "opts", ()))
    args = _hoist_global_options(args, own)
    try:
        result = command.main(args=args, prog_name="convlens", standalone_mode=False)
    except ConvlensError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except typer.Exit as e:
        return int(getattr(e, "exit_code", 0) or 0)
    except ClickException as e:  # usage errors and typer's range checks: one line, like every other error
        print(f"error: {_one_line(e)}", file=sys.stderr)
        return 2
    except typer.Abort:
        print("aborted.", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("interrupted.", file=sys.stderr)
        return 130
    return int(result) if isinstance(result, int) else 0
