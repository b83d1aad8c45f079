"""Writing the user's files safely: whole or not at all, and never outside the path given.

    write_file(path, data)      one file: written beside its target under a temporary name, then renamed
    save_array(path, array)     a .npy file, the same way
    signals_as_errors()         SIGTERM raises like Ctrl-C does, so cleanup code runs on either
    deferred_signals()          SIGINT/SIGTERM wait until a block of renames is done

Temporary names start with '.' and end with '.aieflow-tmp' and carry the writer's process id, so a later run
can tell its own leftovers from anything of the user's (stale_temporaries).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from pathlib import Path

import numpy as np

TMP_SUFFIX = ".aieflow-tmp"


class Interrupted(KeyboardInterrupt):
    """SIGTERM, raised where the program was, so that `finally` and `except BaseException` cleanups run."""


def temporary_name(target: Path, kind: str = "") -> Path:
    """A name beside `target` for this process's temporary copy of it."""
    return target.parent / f".{target.name}.{kind}{os.getpid()}{TMP_SUFFIX}"


def write_file(path: str | Path, data: bytes | str) -> Path:
    """Write `data` to `path` whole: a temporary file beside it is renamed over it only once complete."""
    path = Path(path)
    tmp = temporary_name(path)
    try:
        if isinstance(data, str):
            tmp.write_text(data, encoding="utf-8", newline="\n")
        else:
            tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(e, OSError) and e.errno is not None:
            raise OSError(e.errno, f"cannot write it: {e.strerror}", str(path)) from None  # the user's name
        raise
    return path


def save_array(path: str | Path, array: np.ndarray) -> Path:
    """np.save, whole or not at all (and no '.npy' appended: the file is the path the user gave)."""
    import io

    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return write_file(path, buf.getvalue())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stale_temporaries(folder: Path, stem: str) -> list[Path]:
    """Temporary files or folders for `stem` in `folder` left by aieflow runs that are no longer alive."""
    out = []
    prefix = f".{stem}."
    try:
        entries = list(folder.iterdir())
    except OSError:
        return []
    for p in entries:
        name = p.name
        if not (name.startswith(prefix) and name.endswith(TMP_SUFFIX)):
            continue
        digits = name[: -len(TMP_SUFFIX)].rsplit(".", 1)[-1].lstrip("abcdefghijklmnopqrstuvwxyz-")
        if digits.isdigit() and not _alive(int(digits)):
            out.append(p)
    return sorted(out)


@contextlib.contextmanager
def signals_as_errors():
    """Within the block, SIGTERM raises Interrupted (a KeyboardInterrupt) like SIGINT does; main thread only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def raise_interrupted(signum, frame):
        raise Interrupted(f"signal {signum}")

    old = signal.signal(signal.SIGTERM, raise_interrupted)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


@contextlib.contextmanager
def deferred_signals():
    """SIGINT and SIGTERM arriving within the block are delivered when it ends (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    wanted = {signal.SIGINT, signal.SIGTERM}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, wanted)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
