"""The Typer app: a thin layer over the Python API; each command lives in the module named after it."""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable, Iterator
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.text import Text

from fracturekit import __version__
from fracturekit.core.errors import UserError

app = typer.Typer(
    name="fracturekit",
    help="Bone-fracture X-ray AI: prepare, audit, train, evaluate and predict with YOLOv8.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)
# markup=False: what the commands print holds paths, file and class names ("a[b]/", "fracture[1]"), which Rich
# markup would eat; a styled word is a `tagged` Text, never markup in a string.
console = Console(stderr=True, markup=False)  # notes, progress, warnings and errors
out_console = Console(markup=False)  # results: the tables and summaries a user may pipe or save
F = TypeVar("F", bound=Callable[..., object])


def tagged(tag: str, style: str, text: str = "") -> Text:
    """`tag` in `style`, then `text` as is: a colored "warning:" before a message that may hold any characters."""
    return Text.assemble((tag, style), f" {text}" if text else "")


def user_errors(fn: F) -> F:
    """Turn a UserError into one red line on stderr and exit code 2, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: object, **kwargs: object) -> object:
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            # one line, unwrapped; a message is text, not Rich markup ("pip install 'fracturekit[labels]'")
            console.print(tagged("error:", "bold red", str(exc)), highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


class _ConsoleHandler(logging.Handler):
    """Print library log records on the CLI console (stderr)."""

    def emit(self, record: logging.LogRecord) -> None:
        console.print(Text(record.getMessage(), style="yellow"), highlight=False)  # text, not markup


@contextlib.contextmanager
def library_notes() -> Iterator[None]:
    """Show fracturekit's log notices (imgsz rounded, training from scratch, ...) as yellow lines on stderr."""
    handler = _ConsoleHandler()
    logging.getLogger("fracturekit").addHandler(handler)
    try:
        yield
    finally:
        logging.getLogger("fracturekit").removeHandler(handler)


@contextlib.contextmanager
def progress_bars(transient: bool = False) -> Iterator[Callable[[str, int, int], None]]:
    """A rich progress bar per label on stderr, drawn from the library's (label, done, total) reports.

    The library reports progress through such a callback (`core.progress.Progress`) and draws nothing itself.
    `transient`: the bars vanish once done (evaluate's, which scores several splits). The display starts with the
    first report: a command refused before any work prints its one sentence and nothing else (no blank line).
    """
    from rich.progress import Progress, TaskID

    bars = Progress(console=console, transient=transient)
    tasks: dict[str, TaskID] = {}

    def report(label: str, done: int, total: int) -> None:
        if not tasks:
            bars.start()
        if label not in tasks:
            tasks[label] = bars.add_task(escape(label), total=total)  # the bar's text column reads markup
        bars.update(tasks[label], completed=done, total=total)

    try:
        yield report
    finally:
        if tasks:
            bars.stop()


def _version(value: bool) -> None:
    if value:
        typer.echo(f"fracturekit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Bone-fracture X-ray AI: prepare, audit, train, evaluate and predict with YOLOv8."""


def main() -> None:
    """Console-script entry point."""
    app()


# Each command's module registers it on `app` when imported (keep heavy imports inside the command);
# the order here is the order of `fracturekit --help`, the order of the pipeline.
from fracturekit.cli import prepare, audit, train, evaluate, compare, cv, predict, export, review, demo  # noqa: E402,F401,I001
