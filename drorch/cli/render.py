"""The one place that writes user output and turns errors into exit codes.

Tables for people, `--json` for scripts; progress only on a terminal.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from contextlib import contextmanager
from typing import Any, Iterable, Iterator

import click

from drorch.engine.progress import Progress
from drorch.errors import EXIT_FAILED, EXIT_USAGE, DrorchError, PolicyError
from drorch.units import human_bytes  # noqa: F401 - the CLI modules take it from here

log = logging.getLogger("drorch")


def emit_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, sort_keys=False, default=str))


def say(message: str = "") -> None:
    click.echo(message)


def warn(message: str) -> None:
    click.echo(click.style("warning: ", fg="yellow") + message, err=True)


def table(headers: list[str], rows: Iterable[list[Any]]) -> None:
    rows = [["" if v is None else str(v) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    click.echo("  ".join(click.style(h.ljust(w), bold=True) for h, w in zip(headers, widths)).rstrip())
    for row in rows:
        click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())




def fail(error: DrorchError) -> int:
    """Print an operator error (no traceback) and return its exit code."""
    if isinstance(error, PolicyError):
        for line in error.problems:
            click.echo(line, err=True)
        click.echo(f"{len(error.problems)} problem(s) in the policy", err=True)
    else:
        click.echo(click.style("error: ", fg="red", bold=True) + error.message, err=True)
    if error.hint:
        click.echo(click.style("hint: ", fg="cyan") + error.hint, err=True)
    return error.exit_code


def run_main(command: click.Command, args: list[str] | None = None) -> int:
    try:
        command.main(args=args, standalone_mode=False, prog_name="drorch")
        return 0
    except DrorchError as error:
        return fail(error)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except SystemExit as exc:  # a verb's own exit status (e.g. check: 1 when an item failed)
        return exc.code if isinstance(exc.code, int) else EXIT_FAILED
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code if exc.exit_code else EXIT_USAGE
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        return 130
    except BrokenPipeError:
        return EXIT_FAILED
    except Exception as exc:  # noqa: BLE001 - a bug: say so briefly, traceback when asked
        if os.environ.get("DRORCH_DEBUG"):
            raise
        log.debug("internal error", exc_info=True)
        click.echo(f"internal error: {type(exc).__name__}: {exc}\n"
                   "(set DRORCH_DEBUG=1 for the traceback, and please report it)", err=True)
        return EXIT_FAILED


@contextmanager
def progress_shown(progress: Progress, title: str) -> Iterator[None]:
    """A progress bar on stderr while the body runs, only when stderr is a terminal."""
    if not sys.stderr.isatty() or os.environ.get("DRORCH_NO_PROGRESS"):
        yield
        return
    from rich.progress import (BarColumn, DownloadColumn, Progress as Bar, TextColumn,
                               TimeElapsedColumn, TransferSpeedColumn)

    stop = threading.Event()
    with Bar(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
             TextColumn("{task.fields[files]}"), TimeElapsedColumn(), transient=True,
             console=None) as bar:
        task = bar.add_task(title, total=None, files="")

        def update() -> None:
            while not stop.wait(0.2):
                bar.update(task, completed=progress.bytes_done, total=progress.bytes_total or None,
                           description=f"{title} [{progress.phase}]",
                           files=f"{progress.files_done}/{progress.files_total} files")

        thread = threading.Thread(target=update, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()


def setup_logging(verbose: int) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    fmt = "%(levelname)s %(name)s: %(message)s" if verbose else "%(levelname)s: %(message)s"
    handler.setFormatter(_LowerLevel(fmt))
    root = logging.getLogger("drorch")
    root.handlers[:] = [handler]
    root.setLevel(level)


def elapsed(start: float) -> str:
    return f"{time.monotonic() - start:.1f}s"


class _LowerLevel(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        record.levelname = record.levelname.lower()
        return super().format(record)
