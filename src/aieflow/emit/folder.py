"""The project folder: aieflow replaces only what it wrote there, keeps everything else, refuses other folders.

A project folder is one whose design.json is an aieflow design (its format and version) and whose manifest
(MANIFEST, written with every project) lists the files aieflow wrote with their sha256. A recompile into it:

- refuses if a file the new project needs is there but not aieflow's (the user's), or if a file aieflow wrote
  has been edited since (its hash differs): nothing of the user's is overwritten unasked;
- writes the new files into a staging folder beside the project, then, with SIGINT/SIGTERM held back, moves
  the old project's files into a backup folder and the new ones into place; any failure moves them back;
- keeps every other file in the folder (notes, reports, simulator output, the Vitis build).

A run killed outright (SIGKILL, power) leaves its staging or backup folder beside the project; the next write
to that project rolls an unfinished swap back from its journal and removes the rest (files.stale_temporaries).
A folder with a design.json of ours but no manifest (written before manifests) owns exactly the files the new
project writes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from pathlib import Path

from ..errors import DesignError
from ..files import TMP_SUFFIX, deferred_signals, signals_as_errors, stale_temporaries

MANIFEST = "aieflow-manifest.json"
MANIFEST_FORMAT = "aieflow-manifest"
_JOURNAL = "journal.json"
_BACKUP_FILES = "files"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def manifest_text(files: dict[str, bytes]) -> bytes:
    body = {"format": MANIFEST_FORMAT, "version": 1, "files": {rel: sha256(files[rel]) for rel in sorted(files)}}
    return (json.dumps(body, indent=1, sort_keys=True) + "\n").encode()


def _is_our_design(path: Path) -> bool:
    from ..design import FORMAT, VERSION

    try:
        data = json.loads((path / "design.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(data, dict) and data.get("format") == FORMAT and data.get("version") == VERSION \
        and isinstance(data.get("device"), str)


def owned_files(path: Path, new_files: dict[str, bytes]) -> dict[str, str | None] | None:
    """The files aieflow wrote in `path`, {relative path: sha256, or None when unknown}; None for a new or
    empty folder. Raises DesignError for anything that is not an aieflow project."""
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise DesignError(f"{path} exists and is not a folder", hint="choose a new folder for the project")
    if not path.exists() or not any(path.iterdir()):
        return None
    if not _is_our_design(path):
        raise DesignError(f"{path} is a folder that is not an aieflow project (no aieflow design.json in it)",
                          hint="choose an empty or new folder; aieflow replaces only its own projects")
    manifest = path / MANIFEST
    if not manifest.exists():
        return {rel: None for rel in new_files if (path / rel).is_file()}
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
        files = data["files"]
        if data.get("format") != MANIFEST_FORMAT or not isinstance(files, dict) or \
                not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
            raise ValueError("not a manifest")
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        raise DesignError(f"{manifest} is not an aieflow manifest",
                          hint="restore it, or compile into a new folder") from None
    for rel in files:
        if Path(rel).is_absolute() or ".." in Path(rel).parts:
            raise DesignError(f"{manifest} names '{rel}', outside the project", hint="compile into a new folder")
    return {**files, MANIFEST: None}


def _refuse_overwrites(path: Path, files: dict[str, bytes], owned: dict[str, str | None]) -> None:
    for rel in sorted(files):
        target = path / rel
        if rel not in owned and (target.exists() or target.is_symlink()):
            raise DesignError(f"{target} is not a file aieflow wrote, and the new project would overwrite it",
                              hint="move it out of the project folder, or compile into a new folder")
    for rel, digest in sorted(owned.items()):
        target = path / rel
        if digest is None or not target.is_file():
            continue
        if sha256(target.read_bytes()) != digest:
            raise DesignError(f"{target} was changed since aieflow wrote it",
                              hint="move your edited copy out of the project folder (or restore it), then compile again")


def _clean_stale(path: Path) -> None:
    """Leftovers of earlier killed writes to this project: roll back an unfinished swap, remove the rest."""
    for stale in stale_temporaries(path.parent, path.name):
        if stale.name.startswith(f".{path.name}.old-") and (stale / _JOURNAL).is_file():
            _roll_back(path, stale)
        shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)


def _roll_back(path: Path, backup: Path) -> None:
    journal = json.loads((backup / _JOURNAL).read_text())
    old = set(journal["old"])
    for rel in journal["new"]:
        if rel not in old:
            with contextlib.suppress(FileNotFoundError):
                (path / rel).unlink()
    for rel in journal["old"]:
        src = backup / _BACKUP_FILES / rel
        if src.exists():
            (path / rel).parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, path / rel)


def _move(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.replace(src, dst)


def _remove_empty_parents(path: Path, rels) -> None:
    for rel in rels:
        d = (path / rel).parent
        while d != path:
            try:
                d.rmdir()
            except OSError:
                break
            d = d.parent


def write_tree(given: Path, files: dict[str, bytes], unowned: dict[str, bytes] | None = None) -> None:
    """Write `files` ({relative path: bytes}, without the manifest) as the project at `given`.

    `unowned` files are the caller's, not the project's (the demo's model and inputs): written where absent,
    left alone where the same bytes are there, refused where other bytes are; never in the manifest, so a
    recompile keeps them."""
    path = Path(os.path.abspath(given))
    files = {**files, MANIFEST: manifest_text(files)}
    unowned = dict(unowned or {})
    with signals_as_errors():
        path.parent.mkdir(parents=True, exist_ok=True)
        _clean_stale(path)
        owned = owned_files(path, files)
        for rel, data in sorted(unowned.items()):
            target = path / rel
            if owned is not None and rel in owned:
                raise DesignError(f"{target} is a file of the project; it cannot also be an input")
            if target.exists() or target.is_symlink():
                if not target.is_file() or target.read_bytes() != data:
                    raise DesignError(f"{target} is there with other contents", hint="move it out of the way")
                del unowned[rel]  # already there, byte for byte
        files.update(unowned)
        if owned is not None:
            _refuse_overwrites(path, files, owned)
        stage = path.parent / f".{path.name}.stage-{os.getpid()}{TMP_SUFFIX}"
        try:
            stage.mkdir()
            os.chmod(stage, 0o777 & ~_umask())  # an ordinary folder, as mkdir would make it
            for rel, data in files.items():
                target = stage / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
            if owned is None:
                with deferred_signals():
                    if path.exists():
                        path.rmdir()  # empty: checked by owned_files
                    os.rename(stage, path)
                return
            _swap(path, stage, files, owned)
        finally:
            shutil.rmtree(stage, ignore_errors=True)


def _swap(path: Path, stage: Path, files: dict[str, bytes], owned: dict[str, str | None]) -> None:
    """Replace the owned files of `path` by the staged ones, all or none."""
    backup = path.parent / f".{path.name}.old-{os.getpid()}{TMP_SUFFIX}"
    old = sorted(rel for rel in owned if (path / rel).is_file())
    new = sorted(files)
    backup.mkdir()
    (backup / _JOURNAL).write_text(json.dumps({"old": old, "new": new}))
    moved_old, moved_new = [], []
    with deferred_signals():
        try:
            for rel in old:
                _move(path / rel, backup / _BACKUP_FILES / rel)
                moved_old.append(rel)
            for rel in new:
                _move(stage / rel, path / rel)
                moved_new.append(rel)
        except BaseException:
            for rel in reversed(moved_new):
                _move(path / rel, stage / rel)
            for rel in reversed(moved_old):
                _move(backup / _BACKUP_FILES / rel, path / rel)
            shutil.rmtree(backup, ignore_errors=True)
            raise
        _remove_empty_parents(path, set(old) - set(new))
        done = path.parent / f".{path.name}.done-{os.getpid()}{TMP_SUFFIX}"
        os.rename(backup, done)  # the swap is complete: a leftover of this name is only removed
    shutil.rmtree(done, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
