"""Progress bars for the slow loops (weight headers, emulator iterations, mapping retries).

`progress(iterable, total, description)` yields the items of `iterable` unchanged. It draws a rich progress
bar on stderr only when a person is watching: stderr is a terminal and the environment does not say CI
(`CI` set to anything but "", "0" or "false"). Anywhere else (pipes, log files, pytest, notebooks, CI) it
prints nothing, so output stays byte-identical whether or not the loop is slow.

Bars are transient (they vanish when the loop ends). A loop inside a loop that already shows a bar adds a
line to that display instead of starting a second one, which rich does not allow.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

_active = None  # the rich Progress shown by the outermost loop, while it runs
_LENGTH = object()  # total not given: len(iterable) when it has one


def enabled() -> bool:
    """Whether a bar would be drawn now: stderr is a terminal and this is not a CI run."""
    if os.environ.get("CI", "").strip().lower() not in ("", "0", "false"):
        return False
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())


def progress(iterable: Iterable[T], total: int | None = _LENGTH, description: str = "") -> Iterator[T]:  # type: ignore[assignment]
    """Yield the items of `iterable`, with a bar of `total` steps if enabled().

    Without `total`, the bar has len(iterable) steps when it has a length; `total=None` draws a bar with no
    end, for loops that usually stop early (retries).
    """
    if total is _LENGTH:
        total = len(iterable) if hasattr(iterable, "__len__") else None  # type: ignore[arg-type]
    if not enabled():
        yield from iterable
        return
    yield from _with_bar(iterable, total, description)


def _with_bar(iterable: Iterable[T], total: int | None, description: str) -> Iterator[T]:
    global _active
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    outer = _active is None
    if outer:
        _active = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                           console=Console(file=sys.stderr), transient=True)
        _active.start()
    bar = _active
    task = bar.add_task(description, total=total)
    try:
        for item in iterable:
            yield item
            bar.advance(task)
    finally:
        bar.remove_task(task)
        if outer:
            bar.stop()
            _active = None
