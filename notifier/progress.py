"""Progress of a long command: a bar on a terminal, plain lines in a log or a pipe."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO

Progress = Callable[[int], None]  # told how many items are done so far
LINE_EVERY_SECONDS = 5.0  # plain lines: at most this often, besides each tenth done


@contextmanager
def progress(total: int, label: str, out: TextIO | None = None) -> Iterator[Progress]:
    """A `Progress` for `total` items: rich's bar when `out` (stdout) is a terminal,
    else a line now and then ("importing: 1,000 of 10,000 (10%)") and one at the end."""
    out = out or sys.stdout
    if out.isatty():
        with _bar(total, label, out) as advance:
            yield advance
        return
    yield _lines(total, label, out)


@contextmanager
def _bar(total: int, label: str, out: TextIO) -> Iterator[Progress]:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        TaskProgressColumn,
        TextColumn,
        TimeRemainingColumn,
    )
    from rich.progress import Progress as Bar

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TimeRemainingColumn(),
    )
    with Bar(*columns, console=Console(file=out)) as bar:
        task = bar.add_task(label, total=total)
        yield lambda done: bar.update(task, completed=done)


def _lines(total: int, label: str, out: TextIO) -> Progress:
    tenth = max(total // 10, 1)
    last = {"step": 0, "at": time.monotonic()}

    def report(done: int) -> None:
        now = time.monotonic()
        step = done // tenth
        if done < total and step == last["step"] and now - last["at"] < LINE_EVERY_SECONDS:
            return
        last["step"], last["at"] = step, now
        share = f" ({done * 100 // total}%)" if total else ""
        print(f"{label}: {done:,} of {total:,}{share}", file=out, flush=True)

    return report
